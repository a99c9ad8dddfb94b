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

import pandas as pd

from latentsky.exceptions import AutoencoderError
from latentsky.pipeline_defaults import (
    EMBED_DEFAULTS,
    TRAIN_VISITS,
    train_defaults,
    within_budget,
)
from latentsky.pipeline_encode import (  # noqa: F401
    encode_and_score,
    encode_latent,
    latent_column_names,
    plot_map,
)
from latentsky.progress import ProgressCallback
from latentsky.store.lineage import fingerprint, read_lineage
from latentsky.store.output import output_folder

log = logging.getLogger(__name__)

PIPELINE_KIND = "pipeline"
"""The output kind of a pipeline folder (see :mod:`latentsky.store.output`)."""
STATE_FILE = "pipeline.json"
REJECTED_FILE = "rejected.csv"
#: Spectra trained on at most (a random sample of whole chunks beyond; see the module docstring).
TRAIN_ROWS = 10_000
TRAIN_SAMPLE_DIR = "train-sample"
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


def run_pipeline(
    source,
    out,
    *,
    n_latent: int = 2,
    embed: dict | None = None,
    train: dict | None = None,
    embeddings=None,
    seed: int = 0,
    force: bool = False,
    baselines: bool = True,
    train_rows: int | None = TRAIN_ROWS,
    train_visits: int | None = TRAIN_VISITS,
    chunk_rows: int | None = None,
    client=None,
    scheduler: str | None = None,
    workers: int | None = None,
    cluster: str | None = None,
    progress: ProgressCallback | None = None,
) -> dict:
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
    with (
        output_folder(out, PIPELINE_KIND, inputs=inputs),
        dask_client(client, scheduler=scheduler, workers=workers, cluster=cluster) as dc,
    ):
        return _run(
            source,
            out,
            n_latent=n_latent,
            embed=embed,
            train=train,
            embeddings=embeddings,
            seed=seed,
            force=force,
            baselines=baselines,
            train_rows=train_rows,
            train_visits=train_visits,
            chunk_rows=chunk_rows,
            client=dc,
            progress=progress,
        )


def _run(
    source: Path,
    out: Path,
    *,
    n_latent,
    embed,
    train,
    embeddings,
    seed,
    force,
    baselines,
    train_rows,
    train_visits,
    chunk_rows,
    client,
    progress,
) -> dict:
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
    from latentsky.embed.layout import open_embeddings
    from latentsky.embed.runner import store_fingerprint
    from latentsky.store import SpectrumStore

    store = SpectrumStore(store_path)
    timings["ingest_s"] = time.perf_counter() - t0

    # 2. embed ---------------------------------------------------------------
    t0 = time.perf_counter()
    eparams = {**EMBED_DEFAULTS, **(embed or {})}
    emb_path = out / "embeddings"
    embed_key = fingerprint(
        {"store": store_fingerprint(store), "params": eparams, "seed": seed, "chunk_rows": chunk_rows}
    )
    lineage = read_lineage(emb_path) if emb_path.exists() else None
    if state.get("embed") == embed_key and lineage is not None:
        skipped.append("embed")
    else:
        from latentsky.embed.runner import embed_store

        embed_store(
            store,
            emb_path,
            progress=progress,
            random_state=seed,
            chunk_rows=chunk_rows,
            client=client,
            resume=not force,
            reuse=None if force else embeddings,
            **eparams,
        )
        if state.get("embed") != embed_key:  # other readouts: the model must be trained again
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
            from latentsky.embed.layout import sample_embeddings

            fit_on = sample_embeddings(emb, out / TRAIN_SAMPLE_DIR, train_rows, seed=seed)
        est = LatentAutoencoder(**tparams, checkpoint_dir=out / "checkpoints", progress=progress).fit(fit_on)
        est.save(model_path)
        state["train"] = train_key
        state.pop("encode", None)
        _write_state(out, state)
    timings["train_s"] = time.perf_counter() - t0

    # 4. encode and score ----------------------------------------------------
    t0 = time.perf_counter()
    encode_key = fingerprint(
        {"train": train_key, "baselines": baselines, "chunk_rows": chunk_rows, "layout": LATENT_LAYOUT}
    )
    if state.get("encode") == encode_key and (out / "latent.parquet").exists() and (out / "metrics.json").exists():
        metrics = json.loads((out / "metrics.json").read_text())
        skipped.append("encode")
    else:
        metrics = encode_and_score(
            store,
            emb,
            model_path,
            out,
            baselines=baselines,
            seed=seed,
            chunk_rows=chunk_rows,
            client=client,
            resume=not force,
            key=encode_key,
            progress=progress,
        )
        metrics.update(training_summary(est))
        metrics["n_train"] = int(n_train)
        state["encode"] = encode_key
    timings["encode_s"] = time.perf_counter() - t0
    metrics["timings"] = timings
    metrics["skipped"] = skipped
    metrics["rejected"] = rejected.to_dict("records")
    from latentsky.embed.quality import stage1_report

    metrics["stage1"] = stage1_report(emb, seed=seed)
    metrics["outputs"] = {
        k: str(out / v)
        for k, v in (
            ("latent", "latent.parquet"),
            ("model", "model.keras"),
            ("metrics", "metrics.json"),
            ("map", "map.png"),
            ("embeddings", "embeddings"),
            ("rejected", REJECTED_FILE),
        )
    }
    metrics["outputs"]["store"] = str(store_path)
    tmp = out / ".metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2, default=float))
    os.replace(tmp, out / "metrics.json")
    _write_state(out, state)  # the encode stage counts as done once its metrics are written
    log.info("pipeline done in %.1f s (skipped: %s)", sum(timings.values()), ", ".join(skipped) or "nothing")
    return metrics


def training_summary(est) -> dict:
    """What ``metrics.json`` records of a trained map: its kind and name, how it trained, and the share of
    the encoder's gradient each loss term carried (what laid out the map)."""
    from latentsky.autoencoder.maps import describe

    return {
        "map": est.map,
        "map_name": describe(est.map),
        "optimizer": est.optimizer_,
        "n_epochs": est.n_epochs_,
        "restart_losses": est.restart_losses_,
        "gradient_shares": est.gradient_shares_,
        "fit": est.fit_summary_,
    }


def write_rejected(out: Path, store, emb) -> pd.DataFrame:
    """Write ``OUT/rejected.csv``: the files ingest skipped and the spectra stage 1 could not embed.

    Returns
    -------
    DataFrame
        ``stage`` (``ingest`` or ``embed``), ``id``, ``path``, ``reason``; one row per spectrum left out.
    """
    rows = [
        {"stage": "ingest", "id": "", "path": e.get("path", ""), "reason": e.get("reason", "")}
        for e in rejected_at_ingest(store)
    ]
    skipped = emb.rejected
    if len(skipped):
        paths = store.catalog_columns(["path"])
        paths = paths["path"].astype(str).to_numpy() if "path" in paths else None
        rows += [
            {
                "stage": "embed",
                "id": str(r["id"]),
                "path": "" if paths is None else paths[int(r["row"])],
                "reason": str(r["reason"]),
            }
            for _, r in skipped.iterrows()
        ]
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
    for text in lineage.get("errors", []):  # stores written before the structured record
        path, _, reason = str(text).partition(": ")
        out.append({"path": path, "reason": reason})
    return out
