"""The whole analysis in one call: FITS spectra (or a store) in, a latent map out.

``run_pipeline(SOURCE, DIR)`` runs ingest -> embed -> train -> encode and writes::

    DIR/store/            the spectrum store (unless SOURCE already is one)
    DIR/embeddings/       stage-1 readouts and statistics
    DIR/rejected.csv      the spectra left out, with the reason: files ingest could
                          not read, stored spectra stage 1 could not embed
                          (``stage``, ``id``, ``path``, ``reason``)
    DIR/train-sample/     beyond ``train_rows`` spectra: the readouts trained on
    DIR/model.keras       the trained autoencoder (native Keras format)
    DIR/latent.parquet    one row per spectrum: id, path, object, ra, dec, mjd,
                          instrument, spec_class, x, y (z2, z3... for more
                          latent dimensions), anomaly, recon_error
    DIR/metrics.json      the map's kind, its scores (and a PCA baseline's), how it trained, timings
    DIR/map.png           the map coloured by object (repeats) and class
    DIR/pipeline.json     what each stage was run with (to skip it next time)

Every stage is skipped when its output is already there and was made from the
same input with the same settings (ingest checks its files' sizes and times;
the others compare the fingerprint recorded in ``pipeline.json``), so a
repeated run costs seconds.  Embed and encode also resume inside the stage, at
the first chunk an interrupted run had not finished
(:mod:`latentsky.store.partial`), so an interrupted run resumes at the stage
and the chunk where it stopped.

Out of core: ingest, embed and encode (with the anomaly scores) go through the
stores chunk by chunk, in this process or on a Dask cluster (``client``,
``scheduler``, ``workers`` or ``cluster``; :mod:`latentsky.distributed`), with
identical results.  Training runs here, on all spectra up to ``train_rows``
and beyond that on a random sample of that many (whole stored chunks, copied
to ``DIR/train-sample/``): a 2-D map of 101-D readouts is learned from 10^4
examples, the training data then fit in memory (Keras' fast path), and its
cost stops growing with the number of spectra; the trained encoder then maps
every spectrum in one chunked pass.  The map is the estimator's default kind
(:mod:`latentsky.autoencoder.maps`) unless ``train={"map": ...}`` says
otherwise.  When the training set is too big for full-batch L-BFGS, each Adam
training phase passes at most ``train_visits`` spectra through the model
(spectra x epochs, :data:`~latentsky.pipeline_defaults.TRAIN_VISITS`): fewer,
longer epochs.
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
from latentsky.pipeline_defaults import EMBED_DEFAULTS, TRAIN_VISITS, train_defaults, within_budget
from latentsky.progress import Progress, ProgressCallback
from latentsky.store.lineage import fingerprint, read_lineage
from latentsky.store.output import output_folder

log = logging.getLogger(__name__)

PIPELINE_KIND = "pipeline"
"""The output kind of a pipeline folder (see :mod:`latentsky.store.output`)."""
STATE_FILE = "pipeline.json"
REJECTED_FILE = "rejected.csv"
LATENT_COLUMNS = ["id", "path", "object", "ra", "dec", "mjd", "instrument", "spec_class"]
#: Per-spectrum scores of the encode stage; the first two are columns of ``latent.parquet``.
SCORE_COLUMNS = ("anomaly", "recon_error", "stage1_error")
#: Spectra trained on at most (a random sample of whole chunks beyond; see the module docstring).
TRAIN_ROWS = 10_000
TRAIN_SAMPLE_DIR = "train-sample"
#: Rows per row group of ``latent.parquet`` (big groups: fast scans by pandas, Dask and Datashader).
LATENT_ROW_GROUP = 65_536
LATENT_LAYOUT = 2


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
                 embeddings=None, seed: int = 0, force: bool = False, baselines: bool = True,
                 train_rows: int | None = TRAIN_ROWS,
                 train_visits: int | None = TRAIN_VISITS, chunk_rows: int | None = None, client=None,
                 scheduler: str | None = None, workers: int | None = None, cluster: str | None = None,
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
        Overrides of :func:`~latentsky.pipeline_defaults.train_defaults` (parameters of
        :class:`~latentsky.autoencoder.estimator.LatentAutoencoder`; ``map`` chooses the kind of map).
    embeddings : path-like, optional
        An EMBEDDINGS directory of this store written earlier (``latentsky
        embed``, the app's Embed step): when it was made with the settings
        and seed of this run, it is hard-linked into ``DIR/embeddings``
        instead of embedding again (see :func:`~latentsky.embed.runner.embed_store`).
    seed : int
        Seed of every random choice (the run is reproducible).
    force : bool
        Redo every stage even when its output is up to date.
    baselines : bool
        Also score a PCA map of the readouts (cheap) in ``metrics.json``.
    train_rows : int or None
        Train on at most this many spectra (a random sample of whole chunks
        beyond it; see the module docstring); None: on all of them.
    train_visits : int or None
        Spectra x epochs per Adam training phase, at most: on big training sets
        ``epochs`` and the patiences are cut to it
        (:func:`~latentsky.pipeline_defaults.within_budget`); None: no budget.
    chunk_rows : int, optional
        Spectra per task of embed and encode (default: the store's chunking).
    client : distributed.Client, optional
        Run ingest, embed and encode on this Dask cluster (training stays in
        this process).  Workers read the inputs and the model by path: on a
        real cluster they must see ``source`` and ``out`` at the same paths.
    scheduler : str, optional
        Address of a Dask scheduler to connect to instead.
    workers : int, optional
        Start a local Dask cluster of this many worker processes instead (or,
        with ``cluster``, ask that cluster for this many workers).
    cluster : str, optional
        A cluster kind of :func:`latentsky.distributed.make_cluster`
        (``local``, ``gateway``, ``slurm``, ``pbs``...), configured by Dask's
        configuration.
    progress : callable, optional
        Receives the :class:`~latentsky.progress.ProgressEvent` objects of every stage
        (tasks ``ingest``, ``embed``, ``train``, ``encode``).

    Returns
    -------
    dict
        The metrics written to ``metrics.json`` (with ``"outputs"``, the paths).
    """
    from latentsky.distributed import dask_client

    source, out = Path(source), Path(out)
    if not source.exists():
        raise AutoencoderError(f"parameter source: {source} does not exist")
    if not (isinstance(n_latent, int) and n_latent >= 1):
        raise AutoencoderError(f"parameter n_latent={n_latent!r}: must be a positive integer")
    if train_rows is not None and not (isinstance(train_rows, int) and train_rows >= 2):
        raise AutoencoderError(f"parameter train_rows={train_rows!r}: must be an integer >= 2, or None")
    if train_visits is not None and not (isinstance(train_visits, int) and train_visits >= 1):
        raise AutoencoderError(f"parameter train_visits={train_visits!r}: must be a positive integer, or None")
    if embeddings is not None and read_lineage(Path(embeddings)) is None:
        raise AutoencoderError(f"parameter embeddings: {embeddings} is not an EMBEDDINGS directory (no lineage)")
    inputs = [source] + ([Path(embeddings)] if embeddings is not None else [])
    with output_folder(out, PIPELINE_KIND, inputs=inputs), \
            dask_client(client, scheduler=scheduler, workers=workers, cluster=cluster) as dc:
        return _run(source, out, n_latent=n_latent, embed=embed, train=train, embeddings=embeddings, seed=seed,
                    force=force, baselines=baselines, train_rows=train_rows, train_visits=train_visits,
                    chunk_rows=chunk_rows, client=dc, progress=progress)


def _run(source: Path, out: Path, *, n_latent, embed, train, embeddings, seed, force, baselines, train_rows,
         train_visits, chunk_rows, client, progress) -> dict:
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

        result = ingest([source], out / "store", progress=progress, force=force, client=client)
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
    embed_key = fingerprint({"store": store_fingerprint(store), "params": eparams, "seed": seed,
                             "chunk_rows": chunk_rows})
    lineage = read_lineage(emb_path) if emb_path.exists() else None
    if state.get("embed") == embed_key and lineage is not None:
        skipped.append("embed")
    else:
        from latentsky.embed.runner import embed_store

        embed_store(store, emb_path, progress=progress, random_state=seed, chunk_rows=chunk_rows, client=client,
                    resume=not force, reuse=None if force else embeddings, **eparams)
        if state.get("embed") != embed_key:     # other readouts: the model must be trained again
            state.pop("train", None)
        state["embed"] = embed_key
        _write_state(out, state)
    emb = open_embeddings(emb_path)
    rejected = write_rejected(out, store, emb)
    timings["embed_s"] = time.perf_counter() - t0

    # 3. train ---------------------------------------------------------------
    t0 = time.perf_counter()
    from latentsky.autoencoder.estimator import VALIDATE_FROM, LatentAutoencoder

    tparams = {**train_defaults(), **(train or {}), "n_latent": n_latent, "random_state": seed}
    tparams["hidden"] = tuple(tparams["hidden"])
    sampled = train_rows is not None and len(emb) > train_rows
    n_train = train_rows if sampled else len(emb)
    if tparams["validation_fraction"] is None:
        tparams["validation_fraction"] = 0.1 if n_train >= VALIDATE_FROM else 0.0
    tparams = within_budget(tparams, round(n_train * (1 - tparams["validation_fraction"])), train_visits)
    train_key = fingerprint({"embed": embed_key, "params": tparams, "train_rows": n_train if sampled else None})
    model_path = out / "model.keras"
    if state.get("train") == train_key and model_path.exists():
        est = LatentAutoencoder.load(model_path)
        skipped.append("train")
    else:
        fit_on = emb_path
        if sampled:
            from latentsky.embed.runner import sample_embeddings

            fit_on = sample_embeddings(emb, out / TRAIN_SAMPLE_DIR, train_rows, seed=seed)
        est = LatentAutoencoder(**tparams, checkpoint_dir=out / "checkpoints", progress=progress).fit(fit_on)
        est.save(model_path)
        state["train"] = train_key
        state.pop("encode", None)
        _write_state(out, state)
    timings["train_s"] = time.perf_counter() - t0

    # 4. encode and score ----------------------------------------------------
    t0 = time.perf_counter()
    encode_key = fingerprint({"train": train_key, "baselines": baselines, "chunk_rows": chunk_rows,
                              "layout": LATENT_LAYOUT})
    if state.get("encode") == encode_key and (out / "latent.parquet").exists() and (out / "metrics.json").exists():
        metrics = json.loads((out / "metrics.json").read_text())
        skipped.append("encode")
    else:
        metrics = encode_and_score(store, emb, model_path, out, baselines=baselines, seed=seed,
                                   chunk_rows=chunk_rows, client=client, resume=not force, key=encode_key,
                                   progress=progress)
        metrics.update(training_summary(est))
        metrics["n_train"] = int(n_train)
        state["encode"] = encode_key
    timings["encode_s"] = time.perf_counter() - t0
    metrics["timings"] = timings
    metrics["skipped"] = skipped
    metrics["rejected"] = rejected.to_dict("records")
    from latentsky.embed.quality import stage1_report

    metrics["stage1"] = stage1_report(emb, seed=seed)
    metrics["outputs"] = {k: str(out / v) for k, v in
                          (("latent", "latent.parquet"), ("model", "model.keras"), ("metrics", "metrics.json"),
                           ("map", "map.png"), ("embeddings", "embeddings"), ("rejected", REJECTED_FILE))}
    metrics["outputs"]["store"] = str(store_path)
    tmp = out / ".metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2, default=float))
    os.replace(tmp, out / "metrics.json")
    _write_state(out, state)    # the encode stage counts as done once its metrics are written
    log.info("pipeline done in %.1f s (skipped: %s)", sum(timings.values()), ", ".join(skipped) or "nothing")
    return metrics


def training_summary(est) -> dict:
    """What ``metrics.json`` records of a trained map: its kind and name, how it trained, and the share of
    the encoder's gradient each loss term carried (what laid out the map)."""
    from latentsky.autoencoder.maps import describe

    return {"map": est.map, "map_name": describe(est.map), "optimizer": est.optimizer_, "n_epochs": est.n_epochs_,
            "restart_losses": est.restart_losses_, "gradient_shares": est.gradient_shares_,
            "fit": est.fit_summary_}


def write_rejected(out: Path, store, emb) -> pd.DataFrame:
    """Write ``OUT/rejected.csv``: the files ingest skipped and the spectra stage 1 could not embed.

    Returns
    -------
    DataFrame
        ``stage`` (``ingest`` or ``embed``), ``id``, ``path``, ``reason``; one row per spectrum left out.
    """
    rows = [{"stage": "ingest", "id": "", "path": e.get("path", ""), "reason": e.get("reason", "")}
            for e in rejected_at_ingest(store)]
    skipped = emb.rejected
    if len(skipped):
        paths = store.catalog_columns(["path"])
        paths = paths["path"].astype(str).to_numpy() if "path" in paths else None
        rows += [{"stage": "embed", "id": str(r["id"]), "path": "" if paths is None else paths[int(r["row"])],
                  "reason": str(r["reason"])} for _, r in skipped.iterrows()]
    table = pd.DataFrame(rows, columns=["stage", "id", "path", "reason"])
    tmp = out / f".{REJECTED_FILE}.tmp"
    table.to_csv(tmp, index=False)
    os.replace(tmp, out / REJECTED_FILE)
    for r in rows:
        log.warning("left out at %s: %s %s", r["stage"], r["id"] or r["path"], r["reason"])
    return table


def rejected_at_ingest(store) -> list[dict]:
    """The input files the store's ingest could not read: ``path`` and ``reason`` (from its lineage)."""
    lineage = store.lineage or {}
    if lineage.get("rejected") is not None:
        return list(lineage["rejected"])
    out = []
    for text in lineage.get("errors", []):      # stores written before the structured record
        path, _, reason = str(text).partition(": ")
        out.append({"path": path, "reason": reason})
    return out


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
    from latentsky.embed.runner import open_embeddings

    est = _load_model(model_path)
    emb = open_embeddings(emb_path)
    w = np.asarray(emb.readout[start:stop], dtype="f8")
    z = est.transform(w)
    w_rec = est.inverse_transform(z)
    stats = emb.statistics(slice(start, stop))
    return start, stop, {"z": z.astype("f8"), "recon_error": ev.reconstruction_error(stats, w_rec),
                         "anomaly": ev.anomaly_scores(stats, w_rec, w),
                         "stage1_error": ev.reconstruction_error(stats, w)}


def latent_column_names(n_latent: int) -> list[str]:
    """``x, y`` then ``z2, z3...``."""
    return [("x", "y")[d] if d < 2 else f"z{d}" for d in range(n_latent)]


def encode_latent(store, emb, model_path, out, *, chunk_rows: int | None = None, client=None, resume: bool = True,
                  key: str | None = None, progress: ProgressCallback | None = None) -> tuple[Path, float]:
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
    from latentsky.embed.runner import CATALOG_FILE as EMB_CATALOG

    rows_of = pd.read_parquet(Path(emb.path) / EMB_CATALOG, columns=["row"])["row"].to_numpy()
    if len(rows_of) != n or (n and (rows_of.max() >= len(store) or np.any(np.diff(rows_of) <= 0))):
        raise AutoencoderError(f"{emb.path}: not the embeddings of {store.path} (rows differ)")
    embedded = np.zeros(len(store), bool)       # the stored spectra stage 1 embedded (all but the rejected)
    embedded[rows_of] = True
    rows = int(chunk_rows or emb.readout.chunks[0])
    st = model_path.stat()
    key = key or fingerprint({"model": [str(model_path), st.st_size, st.st_mtime_ns], "rows": rows})
    part = PartialDirectory(out / "encoded", fingerprint({"key": key, "n": n, "rows": rows}), resume=resume,
                            kind="encoded")
    n_latent = _load_model(str(model_path)).n_latent
    names = latent_column_names(n_latent)
    done = part.done()
    if done:        # resumed: the arrays exist (they are made before any chunk is marked)
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
        results = map_ordered(_encode_chunk, [(s, e) for _, s, e in todo], client=client,
                              common={"model_path": str(model_path), "emb_path": str(Path(emb.path).resolve())})
        for (k, _, _), (start, stop, res) in zip(todo, results):
            for name, value in res.items():
                group[name][start:stop] = value
            part.mark(k)
            prog.advance(stop - start)

    # the table, streamed: catalog columns of the store beside the latent ones, big row groups
    cat_file = pq.ParquetFile(store.path / CATALOG_FILE)
    columns = [c for c in LATENT_COLUMNS if c in cat_file.schema_arrow.names]
    tmp = out / ".latent.parquet.tmp"
    writer, pending, at = None, [], 0
    for batch in cat_file.iter_batches(batch_size=LATENT_ROW_GROUP, columns=columns):
        stored = embedded[:batch.num_rows]
        embedded = embedded[batch.num_rows:]
        if not stored.all():
            batch = batch.filter(pa.array(stored))
        k = batch.num_rows
        z = group["z"][at:at + k]
        arrays = list(batch.columns) + [pa.array(z[:, d]) for d in range(n_latent)]
        arrays += [pa.array(group[name][at:at + k]) for name in SCORE_COLUMNS[:2]]
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


def encode_and_score(store, emb, model_path, out: Path, *, baselines: bool = True, seed: int = 0,
                     max_scored: int = 5000, max_plotted: int = 200_000, chunk_rows: int | None = None,
                     client=None, resume: bool = True, key: str | None = None,
                     progress: ProgressCallback | None = None) -> dict:
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

    path, stage1_error = encode_latent(store, emb, model_path, out, chunk_rows=chunk_rows, client=client,
                                       resume=resume, key=key, progress=progress)
    model = _load_model(str(Path(model_path).resolve()))
    names = latent_column_names(model.n_latent)
    present = pq_columns(path)
    table = pd.read_parquet(path, columns=[c for c in ("id", "object", "spec_class") if c in present]
                            + names + ["anomaly", "recon_error"])
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
    scores.update(n=int(n), n_scored=int(len(sub)), recon_error=float(table["recon_error"].mean()),
                  stage1_error=stage1_error, recon_excess=float(table["anomaly"].mean()))
    metrics = {"scores": scores}
    if baselines and len(sub) > 2:
        from latentsky.autoencoder.baselines import ReadoutPCA

        pca = ReadoutPCA(n_components=min(Z.shape[1], readouts.shape[1], len(readouts))).fit(readouts)
        Zp = pca.transform(readouts)
        # the PCA's data-space error needs every scored spectrum's statistics in memory: small sets only
        stats = emb.statistics() if n <= max_scored else None
        metrics["pca_readouts"] = ev.score_map(Zp, scored, stats=stats,
                                               reconstructed=pca.inverse_transform(Zp) if stats else None, **common)
    top = table.nlargest(5, "anomaly")
    metrics["most_anomalous"] = [{"id": str(r["id"]), "object": str(r.get("object")), "anomaly": float(r["anomaly"])}
                                 for _, r in top.iterrows()]
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
