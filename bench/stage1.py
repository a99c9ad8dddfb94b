"""How far stage 1 can be trusted: persistence ratio, cross-prediction contrast, s1d/e2ds agreement.

Settings were chosen on the bundled sample (the *selection set*; see
docs/decisions/stage1-defaults.md); this script reports them on sets they were
not chosen on: ``sdss_more`` (277 real SDSS spectra, 31 objects observed more
than once) and ``harps_more`` (15 HARPS exposures, each as s1d and as e2ds
without its blaze file), both in ../shared/data ($LATENTSKY_SHARED_DATA).
Every set is ingested with the default normalisation (``auto``) and embedded
three ways, side by side from the same run:

* ``before``: the pipeline's stage 1 until now (leak 0.3, one pixel per step,
  no position input);
* ``ours``: the estimator's defaults now (leak 0.5, 16-pixel bins, the
  position along the spectrum as a second input);
* ``tuned``: ``ours`` with its reservoir tuned first (``tune=64``: Nelder-Mead
  on the held-out one-step error of this very reservoir).

Figures (:mod:`latentsky.embed.quality`): ``persistence_ratio`` (median over
spectra of the own readout's one-step error over persistence's, in sample, the
figure metrics.json carries) and ``persistence_win`` (share below 1);
``heldout_ratio`` (the same, the readout fitted on even blocks of steps and
scored on odd ones and back: out of sample); ``contrast`` (median error of a
random other spectrum's readout over the own); ``object_k1`` / ``class_k1``
(leave-one-out 1-NN purity of the standardised readouts, by object over the
objects observed more than once, and by class).  On harps_more: ``twin_nn``
(share of spectra whose nearest neighbour among the 30 is the other format of
the same exposure; Euclidean on standardised readouts, and ``twin_nn_data`` in
the data-space metric, the symmetrised cross-prediction error),
``format_mixing`` (share whose nearest neighbour has the other format: 0 when
the formats form two clusters), ``twin_rank`` (median rank of the twin among
the 29 others), and at the flux level ``flux_twin`` / ``flux_epoch`` (median
relative difference of the twins, and of the same format at two epochs of the
star), also with ``median`` normalisation (``flux_twin_median``), as before.

Each figure is the mean over ``--seeds`` seeds (the seed draws the contrast's
partners, the tuning's spectra and its subsample) with its standard error;
untuned readouts do not depend on the seed (the simple cycle reservoir is
deterministic), so their ``_se`` is the spread of the contrast's draws only.
The last line is one JSON object (``{set}_{config}_{figure}`` and ``_se``).
Run: ``python bench/stage1.py [--seeds 10]`` (about 10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIGS = {
    "before": {"leak_rate": 0.3, "position_scaling": 0.0, "bin_pixels": 1},
    "ours": {},
    "tuned": {"tune": 64},
}


def shared_data() -> Path:
    repo = Path(__file__).resolve().parents[1]
    path = Path(os.environ.get("LATENTSKY_SHARED_DATA", repo.parent / "shared" / "data"))
    if not (path / "sdss_more").is_dir():
        raise SystemExit(f"needs the shared data folder with sdss_more/ and harps_more/ (not at {path})")
    return path


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return "unknown"


def knn_purity(readouts, labels) -> float:
    """Leave-one-out 1-NN purity of standardised readouts over the labels that occur more than once."""
    z = (readouts - readouts.mean(0)) / (readouts.std(0) + 1e-12)
    d = np.linalg.norm(z[:, None] - z[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    labels = np.asarray(labels)
    values, counts = np.unique(labels, return_counts=True)
    repeated = np.isin(labels, values[counts > 1])
    return float(np.mean(labels[d.argmin(1)][repeated] == labels[repeated]))


def pair_figures(dist: np.ndarray, ids) -> dict:
    """Twin figures from a distance matrix over s1d/e2ds pairs (ids ``..._s1d_A`` / ``..._e2ds_A``)."""
    ids = np.asarray(ids)
    exposure = np.array([i.rsplit("_", 2)[0] for i in ids])
    fmt = np.array([i.rsplit("_", 2)[1] for i in ids])
    d = np.array(dist, dtype="f8")
    np.fill_diagonal(d, np.inf)
    n = len(d)
    twin = np.array([np.flatnonzero((exposure == exposure[i]) & (np.arange(n) != i))[0] for i in range(n)])
    nearest = d.argmin(1)
    rank = np.array([(d[i] < d[i, twin[i]]).sum() + 1 for i in range(n)])
    return {
        "twin_nn": float(np.mean(nearest == twin)),
        "format_mixing": float(np.mean(fmt[nearest] != fmt)),
        "twin_rank": float(np.median(rank)),
    }


def flux_figures(flux, weight, ids) -> dict:
    """Median relative flux difference of the twins, and of one format at two epochs (same star)."""
    ids = np.asarray(ids)
    exposure = np.array([i.rsplit("_", 2)[0] for i in ids])
    fmt = np.array([i.rsplit("_", 2)[1] for i in ids])

    def diff(i, j):
        both = (weight[i] > 0) & (weight[j] > 0)
        return float(np.median(np.abs(flux[i][both] / flux[j][both] - 1)))

    twins = [diff(i, j) for i in range(len(ids)) for j in range(i + 1, len(ids)) if exposure[i] == exposure[j]]
    s1d = np.flatnonzero(fmt == "s1d")
    epochs = [diff(i, j) for i in s1d for j in s1d if i < j]
    return {"twin": float(np.median(twins)), "epoch": float(np.median(epochs))}


def evaluate(flux, weight, catalog, params: dict, seed: int, pairs: bool) -> tuple[dict, float]:
    """The figures of one configuration and seed (and the embedding's spectra/s)."""
    from latentsky.embed import ESNReadoutEmbedder
    from latentsky.embed.quality import cross_prediction_ratios, persistence_ratios
    from latentsky.embed.tuning import HeldOutError

    t0 = time.perf_counter()
    emb = ESNReadoutEmbedder(random_state=seed, **params).fit(flux, weight=weight)
    w, st = emb.transform_with_statistics(flux, weight)
    rate = len(flux) / (time.perf_counter() - t0)
    ratio = persistence_ratios(st, w)
    tuned = {k: v for k, v in (emb.tuned_ or {}).items() if k in emb.tune_params}
    heldout = HeldOutError(flux, weight, emb).ratios(**tuned)
    out = {
        "persistence_ratio": float(np.median(ratio)),
        "persistence_win": float(np.mean(ratio < 1)),
        "heldout_ratio": float(np.median(heldout)),
        "contrast": float(np.median(cross_prediction_ratios(st, w, partners=8, seed=seed))),
        "object_k1": knn_purity(w, catalog["object"].astype(str)),
        "class_k1": knn_purity(w, catalog["spec_class"].fillna("").astype(str)),
    }
    if pairs:
        ids = catalog["id"].astype(str).to_numpy()
        z = (w - w.mean(0)) / (w.std(0) + 1e-12)
        out.update(pair_figures(np.linalg.norm(z[:, None] - z[None], axis=-1), ids))
        own = st.sse(w)
        cross = np.array([st.sse(np.repeat(w[j : j + 1], len(w), 0)) / own for j in range(len(w))]).T
        out["twin_nn_data"] = pair_figures(cross + cross.T, ids)["twin_nn"]
    return out, rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10, help="seeds per configuration (default 10)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from latentsky.data import sample_spectra
    from latentsky.ingest import ingest
    from latentsky.store import SpectrumStore

    data = shared_data()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores (timings are of a shared machine: indicative only)")
    result: dict = {"seeds": args.seeds, "cpu": cpu_model()}
    with tempfile.TemporaryDirectory(prefix="latentsky-bench-stage1-") as tmp:
        tmp = Path(tmp)
        harps = tmp / "harps_more"
        harps.mkdir()
        for f in sorted((data / "harps_more").glob("*_A.fits")):  # no blaze files: as e2ds usually travel
            (harps / f.name).symlink_to(f)
        sources = {
            "sample (selection set)": list(sample_spectra()),
            "sdss_more": [data / "sdss_more"],
            "harps_more": [harps],
        }
        for name, src in sources.items():
            key = name.split()[0]
            t0 = time.perf_counter()
            res = ingest(src, tmp / "stores" / key)
            store = SpectrumStore(res.store)
            flux, weight = np.asarray(store.flux[:], dtype="f8"), np.asarray(store.weight[:])
            catalog = store.catalog.reset_index()
            print(
                f"\n== {name}: {len(flux)} spectra ({len(res.errors)} unreadable), ingested in "
                f"{time.perf_counter() - t0:.0f} s"
            )
            pairs = key == "harps_more"
            if pairs:
                ids = catalog["id"].astype(str).to_numpy()
                fl = flux_figures(flux, weight, ids)
                med = ingest(src, tmp / "stores" / "harps_median", normalisation="median")
                ms = SpectrumStore(med.store)
                fm = flux_figures(
                    np.asarray(ms.flux[:], dtype="f8"),
                    np.asarray(ms.weight[:]),
                    ms.catalog.reset_index()["id"].astype(str).to_numpy(),
                )
                print(
                    f"flux: twins differ by {fl['twin']:.4f} (median |ratio - 1|), one format at two epochs by "
                    f"{fl['epoch']:.4f}; with median normalisation {fm['twin']:.4f} and {fm['epoch']:.4f}"
                )
                result.update(
                    {
                        f"{key}_flux_twin": fl["twin"],
                        f"{key}_flux_epoch": fl["epoch"],
                        f"{key}_flux_twin_median": fm["twin"],
                        f"{key}_flux_epoch_median": fm["epoch"],
                    }
                )
            for config, params in CONFIGS.items():
                runs, rates = [], []
                for seed in range(args.seeds):
                    figures, rate = evaluate(flux, weight, catalog, params, seed, pairs)
                    runs.append(figures)
                    rates.append(rate)
                line = []
                for figure in runs[0]:
                    values = np.array([r[figure] for r in runs])
                    mean, se = (
                        float(values.mean()),
                        float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0,
                    )
                    result[f"{key}_{config}_{figure}"] = mean
                    result[f"{key}_{config}_{figure}_se"] = se
                    line.append(f"{figure} {mean:.3f}+-{se:.3f}")
                print(f"{config:>7}: " + ", ".join(line) + f"  ({np.median(rates):.0f} spectra/s incl. fit)")
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
