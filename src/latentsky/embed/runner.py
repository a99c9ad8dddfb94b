"""Embed a whole spectrum store, out of core, optionally on Dask.

The output, an EMBEDDINGS directory, is described in :mod:`latentsky.embed.layout`.

The whole directory is written under the temporary name ``.EMBEDDINGS.partial``
and moved into place when complete, so a crash never leaves a half-written
EMBEDDINGS; a run interrupted there resumes at the first chunk it had not
finished (:mod:`latentsky.store.partial`).  A spectrum that cannot be embedded
does not stop the run: its row is written with ``n_steps`` 0 and, once every
chunk is done, the arrays are compacted without it and it is listed in
``rejected.csv``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from latentsky.embed.esn import ESNReadoutEmbedder
from latentsky.embed.layout import (
    ARRAY_NAMES,
    ARRAYS_DIR,
    CATALOG_COLUMNS,
    CATALOG_FILE,
    LAYOUT_VERSION,
    REJECTED_FILE,
    create_arrays,
    pack_gram,
)
from latentsky.embed.reservoir import Reservoir
from latentsky.embed.series import embeddable
from latentsky.exceptions import EmbeddingError
from latentsky.progress import Progress
from latentsky.store.lineage import code_version, fingerprint, read_lineage, write_lineage
from latentsky.store.spectra import SpectrumStore

log = logging.getLogger(__name__)


def store_fingerprint(store: SpectrumStore) -> str:
    """Identify the input store: its lineage key when it has one, else a hash of
    its shape, grid settings and spectrum ids."""
    lin = store.lineage
    if lin and lin.get("key"):
        return str(lin["key"])
    ids = store.catalog_columns(["id"])
    ids = ids["id"].astype(str).tolist() if "id" in ids else len(store)
    return fingerprint({"shape": list(store.flux.shape), "attrs": store.attrs, "ids": ids})


def _embed_chunk(
    start: int, stop: int, ids: list, *, store_path: str, params: dict, reservoir: dict, offset: float, ridge: float
) -> tuple[int, int, dict]:
    """One chunk of rows -> readouts and statistics (runs in-process or on a Dask worker).

    A spectrum that cannot be embedded gets a NaN readout, zero sums and ``n_steps`` 0.
    """
    store = SpectrumStore(store_path)
    flux = np.asarray(store.flux[start:stop], dtype="f8")
    weight = np.asarray(store.weight[start:stop])
    emb = ESNReadoutEmbedder(**params)
    emb.reservoir_ = Reservoir.from_dict(reservoir)
    emb.offset_, emb.ridge_, emb.n_features_in_ = offset, ridge, flux.shape[1]
    n, n1 = stop - start, emb.n_units + 1
    out = {
        "readout": np.full((n, n1), np.nan),
        "gram": np.zeros((n, n1 * (n1 + 1) // 2)),
        "xty": np.zeros((n, n1)),
        "yty": np.zeros(n),
        "n_steps": np.zeros(n, "i8"),
        "persistence": np.full(n, np.nan),
    }
    ok = np.flatnonzero([r is None for r in embeddable(flux, weight, washout=emb.washout, bin_pixels=emb.bin_pixels)])
    if ok.size:
        stats, readout = emb._run(flux[ok], weight[ok], [ids[i] for i in ok], ridge=ridge)
        for name, value in (
            ("readout", readout),
            ("gram", pack_gram(stats.gram)),
            ("xty", stats.xty),
            ("yty", stats.yty),
            ("n_steps", stats.n_steps),
            ("persistence", stats.persistence),
        ):
            out[name][ok] = value
    return start, stop, out


def _fitted_state(emb: ESNReadoutEmbedder) -> dict:
    """What a fitted embedder learned, JSON-serialisable (to resume a run with the very same embedder)."""
    return {
        "params": _jsonable(emb.get_params()),
        "reservoir": emb.reservoir_.to_dict(),
        "offset": float(emb.offset_),
        "ridge": float(emb.ridge_),
        "n_features_in": int(emb.n_features_in_),
        "tuned": getattr(emb, "tuned_", None),
    }


def _restore_fitted(emb: ESNReadoutEmbedder, state: dict) -> None:
    emb.reservoir_ = Reservoir.from_dict(state["reservoir"])
    emb.offset_, emb.ridge_, emb.n_features_in_ = state["offset"], state["ridge"], state["n_features_in"]
    emb.tuned_ = state.get("tuned")


def embed_store(
    store,
    out,
    *,
    embedder: ESNReadoutEmbedder | None = None,
    fit_rows: int = 2000,
    chunk_rows: int | None = None,
    client=None,
    scheduler: str | None = None,
    workers: int | None = None,
    cluster: str | None = None,
    resume: bool = True,
    reuse=None,
    progress=None,
    random_state=0,
    **params,
) -> Path:
    """Embed every spectrum of a store; write readouts and statistics (layout above).

    Parameters
    ----------
    store : SpectrumStore or path-like
        The input spectrum store (``latentsky ingest``).
    out : path-like
        The EMBEDDINGS directory to write (replaced atomically when it exists).
    embedder : ESNReadoutEmbedder, optional
        Its parameters are used; when it is already fitted, its reservoir,
        offset and ridge are used as they are.  Otherwise it is fitted on
        ``fit_rows`` embeddable spectra drawn with ``random_state`` (input
        offset, the ridge with ``ridge="gcv"``, the tuned reservoir with
        ``tune > 0``: progress task ``"tune"``).
    fit_rows : int
        Spectra used to fit an unfitted embedder.
    chunk_rows : int, optional
        Spectra per task and per output chunk (default: the store's chunking).
    client : distributed.Client, optional
        Run the chunks on this Dask cluster.
    scheduler : str, optional
        Address of a Dask scheduler to connect to.  Workers open the store by
        its path, so it must be readable at the same path on every worker
        (a shared file system); results come back to this process, which
        alone writes ``out``.
    workers : int, optional
        Start a local Dask cluster with this many single-threaded worker processes
        (or, with ``cluster``, ask that cluster for this many workers).
    cluster : str, optional
        A cluster kind of :func:`latentsky.distributed.make_cluster`, configured by Dask's configuration.
    resume : bool
        Continue an interrupted run with the same settings at the first chunk
        it had not finished (see :mod:`latentsky.store.partial`); False starts afresh.
    reuse : path-like, optional
        An EMBEDDINGS directory written earlier (e.g. by the app's Embed
        step): when this call would write exactly what it holds (the same
        store, settings, seed and chunking, recorded as ``run_key`` in its
        lineage), its files are hard-linked (copied across file systems)
        into ``out`` instead of being computed again.
    progress : callable, optional
        Receives :class:`latentsky.progress.ProgressEvent` (task ``"embed"``,
        unit ``"spectra"``; ``"tune"`` when the embedder tunes).
    random_state : int
        Seed of the fitting subsample (and of a new embedder's random reservoir and tuning subsample).
    **params
        Parameters of a new :class:`ESNReadoutEmbedder` (when ``embedder`` is None).

    Returns
    -------
    Path
        ``out``.

    Notes
    -----
    Every chunk is computed by the same function with the same frozen
    reservoir, offset and ridge, and each spectrum's sums do not depend on
    which other spectra share its batch, so single-process, Dask and resumed
    runs give identical arrays.  A resumed run reuses the embedder fitted
    (and tuned) by the interrupted one, recorded in the partial directory.
    """
    import zarr
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    from latentsky.distributed import dask_client, map_ordered
    from latentsky.store.partial import PartialDirectory

    store = store if isinstance(store, SpectrumStore) else SpectrumStore(store)
    out = Path(out)
    n = len(store)
    if n == 0:
        raise EmbeddingError(f"{store.path}: the store holds no spectra")
    if embedder is None:
        params.setdefault("random_state", random_state)
        emb = ESNReadoutEmbedder(**params)
    else:
        emb = embedder
    try:
        check_is_fitted(emb)
        given = _fitted_state(emb)
    except NotFittedError:
        given = None
    chunk_rows = int(chunk_rows or store.chunk_rows)
    key = fingerprint(
        {
            "store": store_fingerprint(store),
            "n": n,
            "params": _jsonable(emb.get_params()),
            "fitted": given,
            "fit_rows": fit_rows,
            "random_state": random_state,
            "chunk_rows": chunk_rows,
            "layout": LAYOUT_VERSION,
            "code": code_version(),
        }
    )
    if (
        reuse is not None
        and Path(reuse).resolve() != out.resolve()
        and (read_lineage(Path(reuse)) or {}).get("run_key") == key
    ):
        return _link_embeddings(Path(reuse), out, n, progress)
    earlier = PartialDirectory.stored_state(out, key) if resume else None
    if earlier and "fitted" in earlier:
        _restore_fitted(emb, earlier["fitted"])
    elif given is None:
        _fit_on_sample(emb, store, fit_rows, random_state, progress)
    if emb.n_features_in_ != store.flux.shape[1]:
        raise EmbeddingError(
            f"{store.path}: spectra have {store.flux.shape[1]} pixels, the embedder was fitted on {emb.n_features_in_}"
        )
    catalog = store.catalog_columns(CATALOG_COLUMNS)
    ids = catalog["id"].astype(str).tolist() if "id" in catalog else list(range(n))
    eparams = emb.get_params()
    reservoir = emb.reservoir_.to_dict()
    n1 = emb.n_units + 1
    bounds = [(s, min(s + chunk_rows, n)) for s in range(0, n, chunk_rows)]

    part = PartialDirectory(out, key, state={"fitted": _fitted_state(emb)}, resume=resume)
    done = part.done()
    if done:  # resumed: the arrays exist (they are made before any chunk is marked)
        group = zarr.open_group(part.path / ARRAYS_DIR, mode="r+")
        arrays = {name: group[name] for name in ARRAY_NAMES}
    else:
        group = zarr.open_group(part.path / ARRAYS_DIR, mode="w")
        arrays = create_arrays(group, n, n1, chunk_rows)
    todo = [(k, s, e) for k, (s, e) in enumerate(bounds) if k not in done]
    task_params = dict(eparams)
    with (
        dask_client(client, scheduler=scheduler, workers=workers, cluster=cluster) as dc,
        Progress("embed", total=n, unit="spectra", callback=progress) as prog,
    ):
        if done:
            prog.advance(n - sum(e - s for _, s, e in todo), f"resumed: {len(done)} chunks already done")
        if dc is not None:
            # Dask already runs one task per worker thread; more threads per task
            # would only oversubscribe the cores (results do not depend on it).
            task_params["n_threads"] = 1
        common = dict(
            store_path=str(store.path), params=task_params, reservoir=reservoir, offset=emb.offset_, ridge=emb.ridge_
        )
        tasks = [(s, e, ids[s:e]) for _, s, e in todo]
        for (k, _, _), (start, stop, res) in zip(todo, map_ordered(_embed_chunk, tasks, client=dc, common=common)):
            for name, arr in arrays.items():
                arr[start:stop] = res[name]
            part.mark(k)
            prog.advance(stop - start)
        rejected = _rejected_rows(store, arrays["n_steps"], ids, emb)
        kept = np.setdiff1d(np.arange(n), rejected["row"].to_numpy())
        if len(rejected):
            group = _compact(part.path, group, kept, n1, chunk_rows)
        group.attrs.update(
            {
                "layout": LAYOUT_VERSION,
                "reservoir": reservoir,
                "ridge": emb.ridge_,
                "offset": emb.offset_,
                "washout": emb.washout,
                "bin_pixels": emb.bin_pixels,
                "n_units": emb.n_units,
                "params": _jsonable(eparams),
                "tuned": getattr(emb, "tuned_", None),
                "n_rejected": len(rejected),
            }
        )
        cols = [c for c in CATALOG_COLUMNS if c in catalog]
        cat = catalog[cols].iloc[kept].copy() if cols else pd.DataFrame(index=range(len(kept)))
        cat["row"] = kept.astype("i8")
        cat.reset_index(drop=True).to_parquet(part.path / CATALOG_FILE, index=False)
        rejected.to_csv(part.path / REJECTED_FILE, index=False)
        write_lineage(
            part.path,
            step="embed",
            params=_jsonable({**eparams, "ridge_used": emb.ridge_, "offset_used": emb.offset_}),
            inputs={"store": str(store.path.resolve()), "store_fingerprint": store_fingerprint(store)},
            extra={"n_spectra": len(kept), "n_rejected": len(rejected), "code": code_version(), "run_key": key},
        )
        part.commit()
    for _, r in rejected.iterrows():
        log.warning("spectrum %s (store row %d) not embedded: %s", r["id"], r["row"], r["reason"])
    log.info("embedded %d spectra into %s (%d rejected)", len(kept), out, len(rejected))
    return out


def _rejected_rows(store, n_steps, ids: list, emb: ESNReadoutEmbedder) -> pd.DataFrame:
    """The rows written with ``n_steps`` 0 (not embedded), with the reason, read again from the store."""
    rows = np.flatnonzero(np.asarray(n_steps[:]) == 0)
    reasons = []
    for r in rows:
        why = embeddable(
            np.asarray(store.flux[r : r + 1], dtype="f8"),
            np.asarray(store.weight[r : r + 1]),
            washout=emb.washout,
            bin_pixels=emb.bin_pixels,
        )[0]
        reasons.append(why or "no usable step")
    return pd.DataFrame({"id": [str(ids[r]) for r in rows], "row": rows.astype("i8"), "reason": reasons})


def _compact(path: Path, group, kept: np.ndarray, n1: int, chunk_rows: int):
    """The arrays of ``group`` (in ``path``) rewritten with only the rows ``kept``, chunk by chunk."""
    import shutil

    import zarr

    tmp = path / (ARRAYS_DIR + ".compact")
    new = zarr.open_group(tmp, mode="w")
    arrays = create_arrays(new, len(kept), n1, chunk_rows)
    for lo in range(0, len(kept), chunk_rows):
        rows = kept[lo : lo + chunk_rows]
        a, b = int(rows[0]), int(rows[-1]) + 1  # read the span once, keep its rows
        for name, arr in arrays.items():
            arr[lo : lo + len(rows)] = group[name][a:b][rows - a]
    shutil.rmtree(path / ARRAYS_DIR)
    os.replace(tmp, path / ARRAYS_DIR)
    return zarr.open_group(path / ARRAYS_DIR, mode="r+")


def _link_embeddings(source: Path, out: Path, n: int, progress) -> Path:
    """``out`` made a copy of the finished EMBEDDINGS ``source`` of ``n`` spectra, by hard links where possible.

    Hard links cost no space and are safe here: a finished EMBEDDINGS
    directory is never written in place (a new run builds a new directory and
    renames it over the old one).
    """
    import shutil

    from latentsky.store.spectra import atomic_directory

    with Progress("embed", total=n, unit="spectra", callback=progress) as prog:

        def link(src, dst):
            try:
                os.link(src, dst)
            except OSError:  # another file system, or links not allowed
                shutil.copy2(src, dst)

        with atomic_directory(out) as tmp:
            shutil.copytree(source, tmp, copy_function=link, dirs_exist_ok=True)
        prog.advance(n, f"reused {source} (made with the same settings)")
    log.info("reused the embeddings in %s for %s", source, out)
    return out


def _fit_on_sample(emb, store, fit_rows, random_state, progress) -> None:
    """Fit (tuning it, when it tunes) ``emb`` on ``fit_rows`` embeddable spectra of ``store`` drawn with
    ``random_state``."""
    n = len(store)
    rng = np.random.default_rng(random_state)
    rows = np.sort(rng.choice(n, size=min(fit_rows, n), replace=False))
    fx = np.asarray(store.flux.get_orthogonal_selection((rows, slice(None))), dtype="f8")
    fw = np.asarray(store.weight.get_orthogonal_selection((rows, slice(None))))
    ok = np.array([r is None for r in embeddable(fx, fw, washout=emb.washout, bin_pixels=emb.bin_pixels)])
    if not ok.any():
        raise EmbeddingError(
            f"{store.path}: none of the {len(rows)} spectra drawn to fit the embedder can be "
            f"embedded (too few valid pixels)"
        )
    emb.fit(fx[ok], weight=fw[ok], progress=progress)


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, np.generic):
            v = v.item()
        elif isinstance(v, (np.ndarray, tuple)):
            v = list(np.asarray(v).tolist())
        out[k] = v
    return out
