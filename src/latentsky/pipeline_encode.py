"""The pipeline's encode stage: every spectrum through the trained map into ``DIR/latent.parquet``, the map's
scores for ``metrics.json`` and its picture ``DIR/map.png`` (:func:`latentsky.pipeline.run_pipeline`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from latentsky.exceptions import AutoencoderError
from latentsky.progress import Progress, ProgressCallback
from latentsky.store.lineage import fingerprint

log = logging.getLogger(__name__)

#: Catalog columns copied into ``latent.parquet``.
LATENT_COLUMNS = ["id", "path", "object", "ra", "dec", "mjd", "instrument", "spec_class"]
#: Per-spectrum scores of the encode stage; the first two are columns of ``latent.parquet``.
SCORE_COLUMNS = ("anomaly", "recon_error", "stage1_error")
#: Rows per row group of ``latent.parquet`` (big groups: fast scans by pandas, Dask and Datashader).
LATENT_ROW_GROUP = 65_536


#: Models loaded by the encode tasks of this process, by path: (file size, mtime, estimator).
_MODELS: dict = {}


def _load_model(path: str):
    """The estimator saved at ``path``, loaded once per process (per Dask worker) while the file is unchanged."""
    from latentsky.autoencoder.estimator import LatentAutoencoder

    st = os.stat(path)
    cached = _MODELS.get(path)
    if cached is None or cached[:2] != (st.st_size, st.st_mtime_ns):
        cached = _MODELS[path] = (st.st_size, st.st_mtime_ns, LatentAutoencoder.load(path))
    return cached[2]


def _encode_chunk(start: int, stop: int, *, model_path: str, emb_path: str) -> tuple[int, int, dict]:
    """Latent coordinates, reconstruction errors and anomaly scores of rows ``start:stop`` (in-process or
    on a Dask worker; only one chunk of Gram matrices is unpacked at a time)."""
    from latentsky import evaluate as ev
    from latentsky.embed.layout import open_embeddings

    est = _load_model(model_path)
    emb = open_embeddings(emb_path)
    w = np.asarray(emb.readout[start:stop], dtype="f8")
    z = est.transform(w)
    w_rec = est.inverse_transform(z)
    stats = emb.statistics(slice(start, stop))
    return (
        start,
        stop,
        {
            "z": z.astype("f8"),
            "recon_error": ev.reconstruction_error(stats, w_rec),
            "anomaly": ev.anomaly_scores(stats, w_rec, w),
            "stage1_error": ev.reconstruction_error(stats, w),
        },
    )


def latent_column_names(n_latent: int) -> list[str]:
    """``x, y`` then ``z2, z3...``."""
    return [("x", "y")[d] if d < 2 else f"z{d}" for d in range(n_latent)]


def encode_latent(
    store,
    emb,
    model_path,
    out,
    *,
    chunk_rows: int | None = None,
    client=None,
    resume: bool = True,
    key: str | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[Path, float]:
    """Encode every readout with a trained model and write ``OUT/latent.parquet``, chunk by chunk.

    Each chunk of readouts (with its Gram matrices) is read, encoded,
    decoded and scored by :func:`_encode_chunk`, in this process or on a Dask
    cluster, into the arrays of ``OUT/.encoded.partial-<run>/``; an interrupted run
    with the same ``key`` resumes at the first chunk it had not finished.
    The table is then written in row groups, the catalog columns streamed from
    the store beside the latent ones, and moved into place.

    Parameters
    ----------
    store : SpectrumStore
    emb : Embeddings
        Stage-1 output of ``store`` (one row per stored spectrum, in order).
    model_path : path-like
        The ``.keras`` file of a trained :class:`LatentAutoencoder` (workers load it by path).
    out : path-like
        The pipeline folder.
    chunk_rows : int, optional
        Readouts per task (default: the embeddings' chunking).
    client : distributed.Client, optional
    resume : bool
    key : str, optional
        Identifies the model and settings (default: the model file's size and time).
    progress : callable, optional
        Task ``"encode"``, unit ``"spectra"``.

    Returns
    -------
    path : Path
        ``OUT/latent.parquet``.
    stage1_error : float
        Mean data-space error of the stage-1 readouts themselves (the floor of ``recon_error``).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zarr

    from latentsky.distributed import map_ordered
    from latentsky.store.partial import PartialDirectory
    from latentsky.store.spectra import CATALOG_FILE

    out, model_path = Path(out), Path(model_path).resolve()
    n = len(emb)
    from latentsky.embed.layout import CATALOG_FILE as EMB_CATALOG

    rows_of = pd.read_parquet(Path(emb.path) / EMB_CATALOG, columns=["row"])["row"].to_numpy()
    if len(rows_of) != n or (n and (rows_of.max() >= len(store) or np.any(np.diff(rows_of) <= 0))):
        raise AutoencoderError(f"{emb.path}: not the embeddings of {store.path} (rows differ)")
    embedded = np.zeros(len(store), bool)  # the stored spectra stage 1 embedded (all but the rejected)
    embedded[rows_of] = True
    rows = int(chunk_rows or emb.readout.chunks[0])
    st = model_path.stat()
    key = key or fingerprint({"model": [str(model_path), st.st_size, st.st_mtime_ns], "rows": rows})
    part = PartialDirectory(
        out / "encoded", fingerprint({"key": key, "n": n, "rows": rows}), resume=resume, kind="encoded"
    )
    n_latent = _load_model(str(model_path)).n_latent
    names = latent_column_names(n_latent)
    done = part.done()
    if done:  # resumed: the arrays exist (they are made before any chunk is marked)
        group = zarr.open_group(part.path / "latent.zarr", mode="r+")
    else:
        group = zarr.open_group(part.path / "latent.zarr", mode="w")
        group.create_array("z", shape=(n, n_latent), chunks=(rows, n_latent), dtype="f8")
        for name in SCORE_COLUMNS:
            group.create_array(name, shape=(n,), chunks=(rows,), dtype="f8")
    bounds = [(s, min(s + rows, n)) for s in range(0, n, rows)]
    todo = [(k, s, e) for k, (s, e) in enumerate(bounds) if k not in done]
    with Progress("encode", total=n, unit="spectra", callback=progress) as prog:
        if done:
            prog.advance(n - sum(e - s for _, s, e in todo), f"resumed: {len(done)} chunks already done")
        results = map_ordered(
            _encode_chunk,
            [(s, e) for _, s, e in todo],
            client=client,
            common={"model_path": str(model_path), "emb_path": str(Path(emb.path).resolve())},
        )
        for (k, _, _), (start, stop, res) in zip(todo, results):
            for name, value in res.items():
                group[name][start:stop] = value
            part.mark(k)
            prog.advance(stop - start)

    # the table, streamed: catalog columns of the store beside the latent ones, big row groups
    cat_file = pq.ParquetFile(store.path / CATALOG_FILE)
    columns = [c for c in LATENT_COLUMNS if c in cat_file.schema_arrow.names]
    tmp = out / ".latent.parquet.tmp"
    writer, at = None, 0
    for batch in cat_file.iter_batches(batch_size=LATENT_ROW_GROUP, columns=columns):
        stored = embedded[: batch.num_rows]
        embedded = embedded[batch.num_rows :]
        if not stored.all():
            batch = batch.filter(pa.array(stored))
        k = batch.num_rows
        z = group["z"][at : at + k]
        arrays = list(batch.columns) + [pa.array(z[:, d]) for d in range(n_latent)]
        arrays += [pa.array(group[name][at : at + k]) for name in SCORE_COLUMNS[:2]]
        table = pa.Table.from_arrays(arrays, names=columns + names + list(SCORE_COLUMNS[:2]))
        if writer is None:
            writer = pq.ParquetWriter(tmp, table.schema)
        writer.write_table(table, row_group_size=LATENT_ROW_GROUP)
        at += k
    writer.close()
    stage1_error = float(np.mean(group["stage1_error"][:]))
    os.replace(tmp, out / "latent.parquet")
    part.discard()  # the table now holds everything the partial arrays did
    return out / "latent.parquet", stage1_error


def pq_columns(path: Path) -> list[str]:
    """Column names of a Parquet file (read from its footer)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).schema_arrow.names


def encode_and_score(
    store,
    emb,
    model_path,
    out: Path,
    *,
    baselines: bool = True,
    seed: int = 0,
    max_scored: int = 5000,
    max_plotted: int = 200_000,
    chunk_rows: int | None = None,
    client=None,
    resume: bool = True,
    key: str | None = None,
    progress: ProgressCallback | None = None,
) -> dict:
    """Write ``latent.parquet`` (:func:`encode_latent`) and ``map.png``; return the scores of the map.

    The neighbourhood scores, which cost O(n^2), use a random subset of at
    most ``max_scored`` spectra (``trust_data`` at most 2,000 of them) and
    the map at most ``max_plotted`` points (all drawn with ``seed``); the
    error means use every spectrum.  ``scores`` are the map's
    (:func:`latentsky.evaluate.score_map`: purity by object and class,
    neighbour resemblance and trustworthiness judged on the spectra, kNN
    regression of the redshift, data-space reconstruction error).
    """
    from latentsky import evaluate as ev

    path, stage1_error = encode_latent(
        store, emb, model_path, out, chunk_rows=chunk_rows, client=client, resume=resume, key=key, progress=progress
    )
    model = _load_model(str(Path(model_path).resolve()))
    names = latent_column_names(model.n_latent)
    present = pq_columns(path)
    table = pd.read_parquet(
        path, columns=[c for c in ("id", "object", "spec_class") if c in present] + names + ["anomaly", "recon_error"]
    )
    Z = table[names].to_numpy(dtype="f8")
    n = len(table)
    rng = np.random.default_rng(seed)
    sub = np.sort(rng.choice(n, size=max_scored, replace=False)) if n > max_scored else np.arange(n)
    readouts = np.asarray(emb.readout.get_orthogonal_selection((sub, slice(None))), dtype="f8")
    labels = [c for c in ("object", "spec_class") if c in table]
    scored = table.iloc[sub].reset_index(drop=True)
    redshift = store.catalog_columns(["redshift"])
    if "redshift" in redshift:
        scored["redshift"] = redshift["redshift"].to_numpy()[sub]
    flux, weight = store.flux.oindex[sub, :], store.weight.oindex[sub, :]
    common = dict(labels=labels, numeric=("redshift",), readouts=readouts, flux=flux, weight=weight, seed=seed)
    scores = ev.score_map(Z[sub], scored, **common)
    scores.update(
        n=int(n),
        n_scored=len(sub),
        recon_error=float(table["recon_error"].mean()),
        stage1_error=stage1_error,
        recon_excess=float(table["anomaly"].mean()),
    )
    metrics = {"scores": scores}
    if baselines and len(sub) > 2:
        from latentsky.autoencoder.baselines import ReadoutPCA

        pca = ReadoutPCA(n_components=min(Z.shape[1], readouts.shape[1], len(readouts))).fit(readouts)
        Zp = pca.transform(readouts)
        # the PCA's data-space error needs every scored spectrum's statistics in memory: small sets only
        stats = emb.statistics() if n <= max_scored else None
        metrics["pca_readouts"] = ev.score_map(
            Zp, scored, stats=stats, reconstructed=pca.inverse_transform(Zp) if stats else None, **common
        )
    top = table.nlargest(5, "anomaly")
    metrics["most_anomalous"] = [
        {"id": str(r["id"]), "object": str(r.get("object")), "anomaly": float(r["anomaly"])} for _, r in top.iterrows()
    ]
    metrics["n_latent"] = int(Z.shape[1])
    shown = table if n <= max_plotted else table.iloc[np.sort(rng.choice(n, max_plotted, replace=False))]
    plot_map(shown.reset_index(drop=True), out / "map.png", n_total=n, kind=model.map)
    return metrics


def plot_map(table: pd.DataFrame, path: Path, *, n_total: int | None = None, kind: str | None = None) -> Path:
    """Two panels of the latent map: repeated objects coloured (others grey), and spectral classes.

    Parameters
    ----------
    table : DataFrame
        ``latent.parquet``'s table (``x``, ``y``, and ``object``/``spec_class`` when present).
    path : Path
        PNG to write.
    n_total : int, optional
        Spectra in the whole map when ``table`` is a sample of it (said in the title).
    kind : str, optional
        The map's kind (:mod:`latentsky.autoencoder.maps`), named in the title.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    # a Figure of its own, not pyplot: the caller's backend (a notebook's inline plots) stays as it is
    fig = Figure(figsize=(12, 5.5))
    axes = fig.subplots(1, 2)
    tab10 = colormaps["tab10"]
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
            ax.scatter(x[sel], y[sel], s=22, color=tab10(i % 10), label=f"{obj} ({sel.sum()})")
        ax.legend(fontsize=7, loc="best")
        ax.set_title("objects observed more than once")
    else:
        ax.scatter(x, y, s=10)
    ax = axes[1]
    if "spec_class" in table:
        for i, (cls, sel) in enumerate(table.groupby(table["spec_class"].fillna("unknown")).groups.items()):
            ax.scatter(x[sel], y[sel], s=12, color=tab10(i % 10), label=f"{cls} ({len(sel)})")
        ax.legend(fontsize=8)
        ax.set_title("spectral class")
    elif "anomaly" in table:
        sc = ax.scatter(x, y, s=12, c=table["anomaly"], cmap="viridis")
        fig.colorbar(sc, ax=ax, label="anomaly")
    for ax in axes:
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    shown = "" if n_total in (None, len(table)) else f" ({len(table):,} shown)"
    from latentsky.autoencoder.maps import describe

    what = f"{describe(kind)}: " if kind else ""
    fig.suptitle(f"{what}latent map of {n_total or len(table):,} spectra{shown}")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=90)
    os.replace(tmp, path)
    return path
