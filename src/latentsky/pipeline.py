"""The whole analysis in one call: FITS spectra (or a store) in, a latent map out.

``run_pipeline(SOURCE, DIR)`` runs ingest -> embed -> train -> encode and writes::

    DIR/store/            the spectrum store (unless SOURCE already is one)
    DIR/embeddings/       stage-1 readouts and statistics
    DIR/model.keras       the trained autoencoder (native Keras format)
    DIR/latent.parquet    one row per spectrum: id, path, object, ra, dec, mjd,
                          instrument, spec_class, x, y (z2, z3... for more
                          latent dimensions), anomaly, recon_error
    DIR/metrics.json      scores of the map (and of a PCA baseline), timings
    DIR/map.png           the map coloured by object (repeats) and class
    DIR/pipeline.json     what each stage was run with (to skip it next time)

Every stage is skipped when its output is already there and was made from the
same input with the same settings (ingest checks its files' sizes and times;
the others compare the fingerprint recorded in ``pipeline.json``), so an
interrupted run resumes where it stopped and a repeated one costs seconds.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from latentsky.exceptions import AutoencoderError
from latentsky.pipeline_defaults import EMBED_DEFAULTS, TRAIN_DEFAULTS
from latentsky.progress import ProgressCallback
from latentsky.store.lineage import fingerprint, read_lineage

log = logging.getLogger(__name__)

STATE_FILE = "pipeline.json"
LATENT_COLUMNS = ["id", "path", "object", "ra", "dec", "mjd", "instrument", "spec_class"]


def _is_store(path: Path) -> bool:
    from latentsky.store.spectra import ARRAYS_DIR, CATALOG_FILE

    return path.is_dir() and (path / CATALOG_FILE).exists() and (path / ARRAYS_DIR).exists()


def _read_state(out: Path) -> dict:
    try:
        return json.loads((out / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _write_state(out: Path, state: dict) -> None:
    tmp = out / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True, default=str))
    os.replace(tmp, out / STATE_FILE)


def run_pipeline(source, out, *, n_latent: int = 2, embed: dict | None = None, train: dict | None = None,
                 seed: int = 0, force: bool = False, baselines: bool = True,
                 progress: ProgressCallback | None = None) -> dict:
    """Ingest, embed, train and encode; write the outputs listed in the module docstring.

    Parameters
    ----------
    source : path-like
        A folder of FITS spectra (searched recursively), or a spectrum store
        written by ``latentsky ingest``.
    out : path-like
        The output folder (created).
    n_latent : int
        Latent dimensions: ``x, y`` then ``z2, z3...``.
    embed : dict, optional
        Overrides of :data:`EMBED_DEFAULTS` (parameters of
        :class:`~latentsky.embed.esn.ESNReadoutEmbedder`).
    train : dict, optional
        Overrides of :data:`TRAIN_DEFAULTS` (parameters of
        :class:`~latentsky.autoencoder.estimator.LatentAutoencoder`).
    seed : int
        Seed of every random choice (the run is reproducible).
    force : bool
        Redo every stage even when its output is up to date.
    baselines : bool
        Also score a PCA map of the readouts (cheap) in ``metrics.json``.
    progress : callable, optional
        Receives the :class:`~latentsky.progress.ProgressEvent` objects of every stage
        (tasks ``ingest``, ``embed``, ``train``, ``encode``).

    Returns
    -------
    dict
        The metrics written to ``metrics.json`` (with ``"outputs"``, the paths).
    """
    from latentsky.progress import Progress

    source, out = Path(source), Path(out)
    if not source.exists():
        raise AutoencoderError(f"parameter source: {source} does not exist")
    if not (isinstance(n_latent, int) and n_latent >= 1):
        raise AutoencoderError(f"parameter n_latent={n_latent!r}: must be a positive integer")
    out.mkdir(parents=True, exist_ok=True)
    state = {} if force else _read_state(out)
    timings: dict[str, float] = {}
    skipped: list[str] = []

    # 1. ingest --------------------------------------------------------------
    t0 = time.perf_counter()
    if _is_store(source):
        store_path = source
        skipped.append("ingest")
    else:
        from latentsky.ingest import ingest

        result = ingest([source], out / "store", progress=progress, force=force)
        store_path = result.store
        if result.up_to_date:
            skipped.append("ingest")
    from latentsky.embed.runner import open_embeddings, store_fingerprint
    from latentsky.store import SpectrumStore

    store = SpectrumStore(store_path)
    timings["ingest_s"] = time.perf_counter() - t0

    # 2. embed ---------------------------------------------------------------
    t0 = time.perf_counter()
    eparams = {**EMBED_DEFAULTS, **(embed or {})}
    emb_path = out / "embeddings"
    embed_key = fingerprint({"store": store_fingerprint(store), "params": eparams, "seed": seed})
    lineage = read_lineage(emb_path) if emb_path.exists() else None
    if state.get("embed") == embed_key and lineage is not None:
        skipped.append("embed")
    else:
        from latentsky.embed.runner import embed_store

        embed_store(store, emb_path, progress=progress, random_state=seed, **eparams)
        state["embed"] = embed_key
        state.pop("train", None)
        _write_state(out, state)
    emb = open_embeddings(emb_path)
    timings["embed_s"] = time.perf_counter() - t0

    # 3. train ---------------------------------------------------------------
    t0 = time.perf_counter()
    from latentsky.autoencoder.estimator import LatentAutoencoder

    tparams = {**TRAIN_DEFAULTS, **(train or {}), "n_latent": n_latent, "random_state": seed}
    tparams["hidden"] = tuple(tparams["hidden"])
    if tparams["validation_fraction"] is None:
        tparams["validation_fraction"] = 0.1 if len(emb) >= 1000 else 0.0
    train_key = fingerprint({"embed": embed_key, "params": tparams})
    model_path = out / "model.keras"
    if state.get("train") == train_key and model_path.exists():
        est = LatentAutoencoder.load(model_path)
        skipped.append("train")
    else:
        est = LatentAutoencoder(**tparams, checkpoint_dir=out / "checkpoints", progress=progress).fit(emb_path)
        est.save(model_path)
        state["train"] = train_key
        _write_state(out, state)
    timings["train_s"] = time.perf_counter() - t0

    # 4. encode and score ----------------------------------------------------
    t0 = time.perf_counter()
    with Progress("encode", total=len(emb), unit="spectra", callback=progress) as prog:
        metrics = encode_and_score(store, emb, est, out, baselines=baselines, seed=seed)
        prog.advance(len(emb))
    timings["encode_s"] = time.perf_counter() - t0
    metrics["timings"] = timings
    metrics["skipped"] = skipped
    metrics["n_epochs"] = est.n_epochs_
    metrics["outputs"] = {k: str(out / v) for k, v in
                          (("latent", "latent.parquet"), ("model", "model.keras"), ("metrics", "metrics.json"),
                           ("map", "map.png"), ("embeddings", "embeddings"))}
    metrics["outputs"]["store"] = str(store_path)
    tmp = out / ".metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2, default=float))
    os.replace(tmp, out / "metrics.json")
    log.info("pipeline done in %.1f s (skipped: %s)", sum(timings.values()), ", ".join(skipped) or "nothing")
    return metrics


def latent_table(store_catalog: pd.DataFrame, emb_catalog: pd.DataFrame, Z: np.ndarray) -> pd.DataFrame:
    """The catalog columns of :data:`LATENT_COLUMNS` (those present) beside latent ``x, y, z2...``."""
    rows = emb_catalog["row"].to_numpy()
    cat = store_catalog.iloc[rows].reset_index(drop=True)
    table = pd.DataFrame({c: cat[c] for c in LATENT_COLUMNS if c in cat})
    for d in range(Z.shape[1]):
        table[("x", "y")[d] if d < 2 else f"z{d}"] = Z[:, d].astype("f8")
    return table


def encode_and_score(store, emb, est, out: Path, *, baselines: bool = True, seed: int = 0,
                     max_scored: int = 5000) -> dict:
    """Write ``latent.parquet`` and ``map.png``; return the scores of the map.

    The latent coordinates, reconstruction errors and anomaly scores are
    computed block by block (only one block of Gram matrices is unpacked at a
    time); the neighbourhood scores, which cost O(n^2), use a random subset of
    at most ``max_scored`` spectra (drawn with ``seed``).
    """
    from latentsky import evaluate as ev

    rows = emb.readout.chunks[0]
    Z, recon, anomaly, floor = [], [], [], []
    for s in range(0, len(emb), rows):
        w = np.asarray(emb.readout[s:s + rows], dtype="f8")
        z = est.transform(w)
        w_rec = est.inverse_transform(z)
        stats = emb.statistics(slice(s, s + rows))
        Z.append(z)
        recon.append(ev.reconstruction_error(stats, w_rec))
        anomaly.append(ev.anomaly_scores(stats, w_rec, w))
        floor.append(ev.reconstruction_error(stats, w))
    Z = np.concatenate(Z)
    table = latent_table(store.catalog, emb.catalog, Z)
    table["anomaly"] = np.concatenate(anomaly)
    table["recon_error"] = np.concatenate(recon)
    tmp = out / ".latent.parquet.tmp"
    table.to_parquet(tmp, index=False)
    os.replace(tmp, out / "latent.parquet")

    n = len(table)
    sub = (np.sort(np.random.default_rng(seed).choice(n, size=max_scored, replace=False)) if n > max_scored
           else np.arange(n))
    readouts = np.asarray(emb.readout.get_orthogonal_selection((sub, slice(None))), dtype="f8")
    labels = [c for c in ("object", "spec_class") if c in table]
    scored = table.iloc[sub].reset_index(drop=True)
    ours = ev.score_map(Z[sub], scored, labels=labels, readouts=readouts)
    ours.update(n=int(n), n_scored=int(len(sub)), recon_error=float(table["recon_error"].mean()),
                stage1_error=float(np.concatenate(floor).mean()), recon_excess=float(table["anomaly"].mean()))
    metrics = {"ours": ours}
    if baselines and len(sub) > 2:
        from latentsky.autoencoder.baselines import ReadoutPCA

        pca = ReadoutPCA(n_components=min(Z.shape[1], readouts.shape[1], len(readouts))).fit(readouts)
        Zp = pca.transform(readouts)
        # the PCA's data-space error needs every scored spectrum's statistics in memory: small sets only
        stats = emb.statistics() if n <= max_scored else None
        metrics["pca_readouts"] = ev.score_map(Zp, scored, labels=labels, readouts=readouts, stats=stats,
                                               reconstructed=pca.inverse_transform(Zp) if stats else None)
    top = table.sort_values("anomaly", ascending=False).head(5)
    metrics["most_anomalous"] = [{"id": str(r["id"]), "object": str(r.get("object")), "anomaly": float(r["anomaly"])}
                                 for _, r in top.iterrows()]
    metrics["n_latent"] = int(Z.shape[1])
    plot_map(table, out / "map.png")
    return metrics


def plot_map(table: pd.DataFrame, path: Path) -> Path:
    """Two panels of the latent map: repeated objects coloured (others grey), and spectral classes.

    Parameters
    ----------
    table : DataFrame
        ``latent.parquet``'s table (``x``, ``y``, and ``object``/``spec_class`` when present).
    path : Path
        PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    x = table["x"].to_numpy()
    y = table["y"].to_numpy() if "y" in table else np.zeros(len(table))
    ax = axes[0]
    if "object" in table:
        counts = table["object"].value_counts()
        repeated = counts[counts > 1].index[:10]
        other = ~table["object"].isin(repeated).to_numpy()
        ax.scatter(x[other], y[other], s=10, c="0.75", label="observed once or less often")
        for i, obj in enumerate(repeated):
            sel = (table["object"] == obj).to_numpy()
            ax.scatter(x[sel], y[sel], s=22, color=plt.cm.tab10(i % 10), label=f"{obj} ({sel.sum()})")
        ax.legend(fontsize=7, loc="best")
        ax.set_title("objects observed more than once")
    else:
        ax.scatter(x, y, s=10)
    ax = axes[1]
    if "spec_class" in table:
        for i, (cls, sel) in enumerate(table.groupby(table["spec_class"].fillna("unknown")).groups.items()):
            ax.scatter(x[sel], y[sel], s=12, color=plt.cm.tab10(i % 10), label=f"{cls} ({len(sel)})")
        ax.legend(fontsize=8)
        ax.set_title("spectral class")
    elif "anomaly" in table:
        sc = ax.scatter(x, y, s=12, c=table["anomaly"], cmap="viridis")
        fig.colorbar(sc, ax=ax, label="anomaly")
    for ax in axes:
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    fig.suptitle(f"latent map of {len(table)} spectra")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)
    return path
