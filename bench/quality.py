"""Map quality: every kind of map beside maps of the flux itself, each trained its own way, over many seeds.

Sets (``--sets``): ``sample``, the bundled 125 spectra, where settings are
chosen; ``sdss_more`` (277 SDSS spectra) and ``harps_more`` (HD10180 at 14
epochs and a sky exposure, each as s1d and as e2ds), in
``../shared/data/`` (or ``$LATENTSKY_SHARED_DATA``), where they are
reported and never tuned.  Each set is
ingested and embedded with the pipeline's settings, then mapped to 2-D by

* ``coupled``, ``hybrid``, ``euclidean``, ``umap``, ``pca``: the kinds of
  :class:`~latentsky.autoencoder.LatentAutoencoder`
  (:mod:`latentsky.autoencoder.maps`), each fitted on its own with its
  defaults (``euclidean`` is the Euclidean autoencoder, trained as its own map);
* ``flux_pca`` and ``flux_umap``: PCA and UMAP of the resampled spectra
  themselves (no stage 1 at all).

Scores (:mod:`latentsky.evaluate`), judged on the spectra rather than on any
method's own coordinates:

* ``resemblance``: median relative residual between a spectrum and its map
  nearest neighbour (best scale, shared valid pixels; lower is better);
* ``purity_k1``, ``purity_k5``: kNN purity of the repeat label (sample and
  sdss_more: the object, sdss_more's matched by position within 2 arcsec as
  its PROVENANCE does; harps_more: the exposure, so k = 1 asks whether an
  exposure's s1d lands next to its own e2ds);
* ``trust_data``: trustworthiness (k = 5) with neighbours in flux space;
* ``recon_error``: the data-space one-step error (per step, normalised flux
  squared) of the readout decoded from the map point: the map's own decoder,
  or for ``umap``, ``pca`` and the flux maps a decoder fitted to the
  model-coupled loss from exactly the map's points (what the map keeps);
* ``knn_r2_redshift`` (sdss_more, sample) and ``class_purity_k5``.

Every map is fitted ``--seeds`` times (seeds 0..N-1; ``flux_pca`` is
deterministic); the JSON holds the mean over seeds (``<map>_<score>``) and
its standard error (``<map>_<score>_se``) per set (``<set>/...``).  Also the
reference no 2-D map reaches: ``flux_nn_resemblance``, the resemblance of
each spectrum's nearest neighbour in full flux space.  With ``--out`` every
run's scores are appended to a JSON-lines file as they come (an interrupted
run loses nothing).  Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def _shared_data() -> Path:
    """The shared data folder: $LATENTSKY_SHARED_DATA, or the first ``shared/data`` beside the repository or a
    folder above it (a git worktree lies a level deeper than the main checkout)."""
    if os.environ.get("LATENTSKY_SHARED_DATA"):
        return Path(os.environ["LATENTSKY_SHARED_DATA"])
    repo = Path(__file__).resolve().parents[1]
    for up in repo.parents:
        if (up / "shared" / "data").is_dir():
            return up / "shared" / "data"
    return repo.parent / "shared" / "data"


SHARED = _shared_data()
READOUT_MAPS = ("coupled", "hybrid", "euclidean", "umap", "pca")
FLUX_MAPS = ("flux_pca", "flux_umap")
SCORES = ("resemblance", "purity_k1", "purity_k5", "trust_data", "recon_error", "knn_r2_redshift", "class_purity_k5")


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def match_positions(ra, dec, radius_arcsec: float = 2.0) -> np.ndarray:
    """Labels grouping positions within ``radius_arcsec`` of each other (friends of friends)."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord, search_around_sky

    c = SkyCoord(np.asarray(ra) * u.deg, np.asarray(dec) * u.deg)
    i, j, _, _ = search_around_sky(c, c, radius_arcsec * u.arcsec)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(len(c), len(c)))
    return connected_components(graph, directed=False)[1]


def prepare(name: str, work: Path) -> dict:
    """Ingest and embed a set with the pipeline's settings; its catalog with the scoring labels."""
    import pandas as pd

    from latentsky.data import sample_path
    from latentsky.embed.layout import open_embeddings
    from latentsky.embed.runner import embed_store
    from latentsky.ingest import ingest
    from latentsky.pipeline_defaults import EMBED_DEFAULTS
    from latentsky.store import SpectrumStore

    source = {"sample": sample_path(), "sdss_more": SHARED / "sdss_more", "harps_more": SHARED / "harps_more"}[name]
    ingest([source], work / f"{name}-all")
    cat = SpectrumStore(work / f"{name}-all").catalog
    # spectra that stage 1 cannot embed (no two consecutive valid pixels) are left out here, with the reason
    usable = cat["n_good_pixels"].to_numpy() > 2 * 20 + 2
    left_out = [f"{r['id']}: {r['n_good_pixels']} valid pixels" for _, r in cat[~usable].iterrows()]
    store_path = work / f"{name}-all"
    if left_out:
        ingest(cat.loc[usable, "path"].tolist(), work / name)
        store_path = work / name
    store = SpectrumStore(store_path)
    embed_store(store, work / f"{name}-emb", random_state=0, **EMBED_DEFAULTS)
    emb = open_embeddings(work / f"{name}-emb")
    cat = store.catalog.iloc[emb.catalog["row"].to_numpy()].reset_index(drop=True)
    if name == "sdss_more":
        labels = pd.read_csv(source / "labels.csv")
        labels.index = labels["file"].str.replace(".fits", "", regex=False)
        own = labels.loc[cat["id"]]
        cat["label"] = match_positions(own["ra"], own["dec"])
        cat["spec_class"] = own["class"].to_numpy()
        cat["redshift"] = own["z"].to_numpy()
    elif name == "harps_more":
        cat["label"] = cat["id"].str.replace(r"_(s1d|e2ds)_A$", "", regex=True)
        cat["spec_class"] = cat["object"]
    else:
        cat["label"] = cat["object"]
    return {
        "store": store,
        "emb": emb,
        "cat": cat,
        "flux": store.flux[:],
        "weight": store.weight[:],
        "left_out": left_out,
        "emb_path": work / f"{name}-emb",
    }


def score(data: dict, Z, reconstructed=None, distances=None) -> dict:
    from latentsky import evaluate as ev

    cat = data["cat"]
    out = {
        "resemblance": ev.neighbour_resemblance(Z, data["flux"], data["weight"]),
        "purity_k1": ev.knn_purity(Z, cat["label"].to_numpy(), 1),
        "purity_k5": ev.knn_purity(Z, cat["label"].to_numpy(), 5),
        "trust_data": ev.trust_data(Z, data["flux"], data["weight"], 5, distances=distances),
        "class_purity_k5": ev.knn_purity(Z, cat["spec_class"].to_numpy(), 5, repeated_only=False),
    }
    if "redshift" in cat and np.isfinite(cat["redshift"].to_numpy(dtype="f8")).sum() > 10:
        out["knn_r2_redshift"] = ev.knn_regression(Z, cat["redshift"].to_numpy(dtype="f8"), 5)
    if reconstructed is not None:
        out["recon_error"] = float(np.mean(ev.reconstruction_error(data["stats"], reconstructed)))
    return out


def run_set(
    name: str, seeds: int, work: Path, sink, fit: dict | None = None, maps: tuple = READOUT_MAPS + FLUX_MAPS
) -> dict:
    from latentsky import evaluate as ev
    from latentsky.autoencoder import LatentAutoencoder, SpectraPCA, SpectraUMAP

    data = prepare(name, work)
    readouts = np.asarray(data["emb"].readout[:], dtype="f8")
    data["stats"] = data["emb"].statistics()
    distances = ev.flux_distances(data["flux"], data["weight"])
    nn = distances.copy()
    np.fill_diagonal(nn, np.inf)
    info = {
        "n_spectra": len(readouts),
        "left_out": data["left_out"],
        "n_repeat_labels": int((data["cat"]["label"].value_counts() > 1).sum()),
        "stage1_error": float(np.mean(ev.reconstruction_error(data["stats"], readouts))),
        "flux_nn_resemblance": float(np.median(nn.min(axis=1))),
    }
    print(
        f"[{name}] {info['n_spectra']} spectra ({len(info['left_out'])} left out: {info['left_out']}), "
        f"{info['n_repeat_labels']} repeated labels; stage-1 error {info['stage1_error']:.5f}; resemblance of "
        f"the nearest neighbour in full flux space {info['flux_nn_resemblance']:.4f}",
        flush=True,
    )
    runs: dict[str, list[dict]] = {}
    seconds: dict[str, float] = {}

    def record(kind, seed, scores, t0, extra=None):
        seconds[kind] = seconds.get(kind, 0.0) + time.perf_counter() - t0
        runs.setdefault(kind, []).append(scores)
        row = {"set": name, "map": kind, "seed": seed, "seconds": time.perf_counter() - t0, **scores, **(extra or {})}
        if sink is not None:
            sink.write(json.dumps(row) + "\n")
            sink.flush()
        print(
            f"[{name}] seed {seed} {kind:<10}"
            + " ".join(f"{k} {v:.4f}" for k, v in scores.items())
            + f"  ({row['seconds']:.0f} s)",
            flush=True,
        )

    if "flux_pca" in maps:
        t0 = time.perf_counter()
        z = SpectraPCA().fit_transform(data["flux"], weight=data["weight"])
        decoded = LatentAutoencoder(map="umap", random_state=0).fit(data["emb_path"], layout=z)
        record("flux_pca", 0, score(data, z, decoded.inverse_transform(decoded.transform(readouts)), distances), t0)
    for seed in range(seeds):
        for kind in (k for k in READOUT_MAPS if k in maps):
            t0 = time.perf_counter()
            est = LatentAutoencoder(map=kind, random_state=seed, **(fit or {})).fit(data["emb_path"])
            z = est.transform(readouts)
            record(
                kind,
                seed,
                score(data, z, est.inverse_transform(z), distances),
                t0,
                {
                    "gradient_shares": est.gradient_shares_,
                    "restart_losses": est.restart_losses_,
                    "optimizer": est.optimizer_,
                },
            )
        if "flux_umap" not in maps:
            continue
        t0 = time.perf_counter()
        z = SpectraUMAP(random_state=seed).fit_transform(data["flux"], weight=data["weight"])
        # a model-coupled decoder from exactly these points: what the flux map keeps of the readouts
        decoded = LatentAutoencoder(map="umap", random_state=seed).fit(data["emb_path"], layout=z)
        record("flux_umap", seed, score(data, z, decoded.inverse_transform(decoded.transform(readouts)), distances), t0)
    summary = dict(info)
    for kind, rows in runs.items():
        for key in SCORES:
            values = [r[key] for r in rows if key in r]
            if values:
                summary[f"{kind}_{key}"] = float(np.mean(values))
                summary[f"{kind}_{key}_se"] = (
                    float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
                )
        summary[f"{kind}_seconds"] = seconds[kind] / len(rows)
        summary[f"{kind}_seeds"] = len(rows)
    return summary


def report(name: str, s: dict) -> None:
    kinds = [k for k in READOUT_MAPS + FLUX_MAPS if f"{k}_resemblance" in s]
    print(
        f"\n[{name}] mean +- standard error over seeds ({s['n_spectra']} spectra; lower resemblance and "
        "recon_error are better)"
    )
    print(f"{'map':<11}" + "".join(f"{k:>20}" for k in SCORES) + f"{'s/fit':>8}")
    for kind in kinds:
        cells = [f"{s[f'{kind}_{k}']:.4f}+-{s[f'{kind}_{k}_se']:.4f}" if f"{kind}_{k}" in s else "-" for k in SCORES]
        print(f"{kind:<11}" + "".join(f"{c:>20}" for c in cells) + f"{s[f'{kind}_seconds']:>8.0f}")
    from latentsky.autoencoder.maps import DEFAULT_KIND

    if not all(f"{k}_resemblance" in s for k in FLUX_MAPS + (DEFAULT_KIND, "coupled", "euclidean")):
        return
    best_flux = min(FLUX_MAPS, key=lambda k: s[f"{k}_resemblance"])
    best = min(kinds, key=lambda k: s[f"{k}_resemblance"])
    d = s[f"{DEFAULT_KIND}_resemblance"] - s[f"{best_flux}_resemblance"]
    se = np.hypot(s[f"{DEFAULT_KIND}_resemblance_se"], s[f"{best_flux}_resemblance_se"])
    print(
        f"best resemblance: {best}; default ({DEFAULT_KIND}) - best flux baseline ({best_flux}) "
        f"{d:+.4f} +- {se:.4f} (target <= 0: {d <= 0}); coupled recon_error {s['coupled_recon_error']:.5f} vs "
        f"Euclidean autoencoder {s['euclidean_recon_error']:.5f} (target below: "
        f"{s['coupled_recon_error'] < s['euclidean_recon_error']}); reference: full-flux nearest neighbour "
        f"{s['flux_nn_resemblance']:.4f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10, help="seeds per map (default 10)")
    ap.add_argument(
        "--sets",
        default="sample,sdss_more,harps_more",
        help="comma-separated sets (default all three: sample,sdss_more,harps_more)",
    )
    ap.add_argument(
        "--maps", default=",".join(READOUT_MAPS + FLUX_MAPS), help="comma-separated maps to fit (default all)"
    )
    ap.add_argument(
        "--restarts",
        type=int,
        default=None,
        help="random starts per end-to-end fit (default: the estimator's; fewer bound the run's time)",
    )
    ap.add_argument("--max-iter", type=int, default=None, help="L-BFGS iterations per fit (default: the estimator's)")
    ap.add_argument("--out", type=Path, default=None, help="append every run's scores to this JSON-lines file")
    args = ap.parse_args()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; seeds {args.seeds}", flush=True)
    fit = {k: v for k, v in (("restarts", args.restarts), ("max_iter", args.max_iter)) if v is not None}
    result = {"cpu": cpu_model(), "seeds": args.seeds, **fit}
    sink = open(args.out, "a") if args.out else None
    try:
        with tempfile.TemporaryDirectory(prefix="latentsky-bench-quality-") as tmp:
            for name in args.sets.split(","):
                summary = run_set(name, args.seeds, Path(tmp), sink, fit, tuple(args.maps.split(",")))
                report(name, summary)
                result.update({f"{name}/{k}": v for k, v in summary.items()})
    finally:
        if sink is not None:
            sink.close()
    print(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in result.items()}))


if __name__ == "__main__":
    main()
