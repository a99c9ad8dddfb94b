"""Embed a whole spectrum store, out of core, optionally on Dask.

Output layout (what stage 2, the autoencoder, reads)::

    EMBEDDINGS/catalog.parquet     one row per embedded spectrum, in array order:
                                   ``id`` (and ``object``, ``instrument`` when the
                                   store has them) and ``row`` (its row in the
                                   input store; the same as its row here unless
                                   spectra were rejected)
    EMBEDDINGS/rejected.csv        the store's spectra that could not be embedded
                                   (too few valid pixels): ``id``, ``row`` (in the
                                   store), ``reason``; header only when none
    EMBEDDINGS/embedding.zarr/     Zarr v3 group, arrays chunked by rows:
        readout   (n, N+1) float64   the embedding: N reservoir weights, then the
                                     bias weight, at ridge ``attrs["ridge"]``
        gram      (n, P)   float64   X^T X packed: its upper triangle, row by row
                                     (``np.triu_indices(N+1)``), P = (N+1)(N+2)/2;
                                     unpack with :func:`unpack_gram`
        xty       (n, N+1) float64   X^T y
        yty       (n,)     float64   y^T y
        n_steps   (n,)     int64     rows of X (steps used in the regression)
        persistence (n,)   float64   the error of persistence on those steps
                                     (absent in embeddings written before it)
        attrs: ``layout`` (version), ``reservoir`` (its full definition,
        :meth:`Reservoir.to_dict`), ``ridge``, ``offset``, ``washout``, ``bin_pixels``,
        ``n_units``, ``params`` (the embedder's parameters), ``tuned`` (the
        tuning's result, or None), ``n_rejected``
    EMBEDDINGS/lineage.json        step "embed": parameters, the input store's
                                   path and fingerprint, code version, and
                                   ``run_key`` (all the settings of the run)

X is the design matrix ``[x_t, 1]`` of the steps used, y their targets (the next
flux value); see :mod:`latentsky.embed.esn`.  With these, the squared error of
any readout ``v`` in data space is ``v' G v - 2 v' xty + yty`` (no spectrum
needed), which is what the model-coupled loss of stage 2 minimises;
:func:`open_embeddings` returns them as :class:`ReadoutStatistics`.

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

from latentsky.embed.esn import ESNReadoutEmbedder, ReadoutStatistics
from latentsky.embed.reservoir import Reservoir
from latentsky.embed.series import embeddable
from latentsky.exceptions import EmbeddingError
from latentsky.progress import Progress
from latentsky.store.lineage import code_version, fingerprint, read_lineage, write_lineage
from latentsky.store.spectra import SpectrumStore

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.parquet"
ARRAYS_DIR = "embedding.zarr"
REJECTED_FILE = "rejected.csv"
LAYOUT_VERSION = 1
CATALOG_COLUMNS = ("id", "object", "instrument")
#: The per-spectrum arrays, and those every EMBEDDINGS directory has (``persistence`` came later).
ARRAY_NAMES = ("readout", "gram", "xty", "yty", "n_steps", "persistence")
REQUIRED_ARRAYS = ARRAY_NAMES[:5]


def pack_gram(gram: np.ndarray) -> np.ndarray:
    """(n, M, M) symmetric -> (n, M(M+1)/2) upper triangles, row by row."""
    i, j = np.triu_indices(gram.shape[-1])
    return gram[..., i, j]


def unpack_gram(packed: np.ndarray, m: int | None = None) -> np.ndarray:
    """Inverse of :func:`pack_gram`; ``m`` is N+1 (inferred when None)."""
    packed = np.asarray(packed)
    if m is None:
        m = int(round((np.sqrt(8 * packed.shape[-1] + 1) - 1) / 2))
    i, j = np.triu_indices(m)
    out = np.empty(packed.shape[:-1] + (m, m), dtype=packed.dtype)
    out[..., i, j] = packed
    out[..., j, i] = packed
    return out


def store_fingerprint(store: SpectrumStore) -> str:
    """Identify the input store: its lineage key when it has one, else a hash of
    its shape, grid settings and spectrum ids."""
    lin = store.lineage
    if lin and lin.get("key"):
        return str(lin["key"])
    ids = store.catalog_columns(["id"])
    ids = ids["id"].astype(str).tolist() if "id" in ids else len(store)
    return fingerprint({"shape": list(store.flux.shape), "attrs": store.attrs, "ids": ids})


def _embed_chunk(start: int, stop: int, ids: list, *, store_path: str, params: dict, reservoir: dict,
                 offset: float, ridge: float) -> tuple[int, int, dict]:
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
    out = {"readout": np.full((n, n1), np.nan), "gram": np.zeros((n, n1 * (n1 + 1) // 2)),
           "xty": np.zeros((n, n1)), "yty": np.zeros(n), "n_steps": np.zeros(n, "i8"),
           "persistence": np.full(n, np.nan)}
    ok = np.flatnonzero([r is None for r in embeddable(flux, weight, washout=emb.washout,
                                                       bin_pixels=emb.bin_pixels)])
    if ok.size:
        stats, readout = emb._run(flux[ok], weight[ok], [ids[i] for i in ok], ridge=ridge)
        for name, value in (("readout", readout), ("gram", pack_gram(stats.gram)), ("xty", stats.xty),
                            ("yty", stats.yty), ("n_steps", stats.n_steps), ("persistence", stats.persistence)):
            out[name][ok] = value
    return start, stop, out


def _fitted_state(emb: ESNReadoutEmbedder) -> dict:
    """What a fitted embedder learned, JSON-serialisable (to resume a run with the very same embedder)."""
    return {"params": _jsonable(emb.get_params()), "reservoir": emb.reservoir_.to_dict(),
            "offset": float(emb.offset_), "ridge": float(emb.ridge_), "n_features_in": int(emb.n_features_in_),
            "tuned": getattr(emb, "tuned_", None)}


def _restore_fitted(emb: ESNReadoutEmbedder, state: dict) -> None:
    emb.reservoir_ = Reservoir.from_dict(state["reservoir"])
    emb.offset_, emb.ridge_, emb.n_features_in_ = state["offset"], state["ridge"], state["n_features_in"]
    emb.tuned_ = state.get("tuned")


def embed_store(store, out, *, embedder: ESNReadoutEmbedder | None = None, fit_rows: int = 2000,
                chunk_rows: int | None = None, client=None,
                scheduler: str | None = None, workers: int | None = None, cluster: str | None = None,
                resume: bool = True, reuse=None, progress=None, random_state=0, **params) -> Path:
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
    key = fingerprint({"store": store_fingerprint(store), "n": n, "params": _jsonable(emb.get_params()),
                       "fitted": given, "fit_rows": fit_rows, "random_state": random_state,
                       "chunk_rows": chunk_rows, "layout": LAYOUT_VERSION, "code": code_version()})
    if reuse is not None and Path(reuse).resolve() != out.resolve() \
            and (read_lineage(Path(reuse)) or {}).get("run_key") == key:
        return _link_embeddings(Path(reuse), out, n, progress)
    earlier = PartialDirectory.stored_state(out, key) if resume else None
    if earlier and "fitted" in earlier:
        _restore_fitted(emb, earlier["fitted"])
    elif given is None:
        _fit_on_sample(emb, store, fit_rows, random_state, progress)
    if emb.n_features_in_ != store.flux.shape[1]:
        raise EmbeddingError(f"{store.path}: spectra have {store.flux.shape[1]} pixels, the embedder was "
                             f"fitted on {emb.n_features_in_}")
    catalog = store.catalog_columns(CATALOG_COLUMNS)
    ids = catalog["id"].astype(str).tolist() if "id" in catalog else list(range(n))
    eparams = emb.get_params()
    reservoir = emb.reservoir_.to_dict()
    n1 = emb.n_units + 1
    bounds = [(s, min(s + chunk_rows, n)) for s in range(0, n, chunk_rows)]

    part = PartialDirectory(out, key, state={"fitted": _fitted_state(emb)}, resume=resume)
    done = part.done()
    if done:        # resumed: the arrays exist (they are made before any chunk is marked)
        group = zarr.open_group(part.path / ARRAYS_DIR, mode="r+")
        arrays = {name: group[name] for name in ARRAY_NAMES}
    else:
        group = zarr.open_group(part.path / ARRAYS_DIR, mode="w")
        arrays = _create_arrays(group, n, n1, chunk_rows)
    todo = [(k, s, e) for k, (s, e) in enumerate(bounds) if k not in done]
    task_params = dict(eparams)
    with dask_client(client, scheduler=scheduler, workers=workers, cluster=cluster) as dc, \
            Progress("embed", total=n, unit="spectra", callback=progress) as prog:
        if done:
            prog.advance(n - sum(e - s for _, s, e in todo), f"resumed: {len(done)} chunks already done")
        if dc is not None:
            # Dask already runs one task per worker thread; more threads per task
            # would only oversubscribe the cores (results do not depend on it).
            task_params["n_threads"] = 1
        common = dict(store_path=str(store.path), params=task_params, reservoir=reservoir, offset=emb.offset_,
                      ridge=emb.ridge_)
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
        group.attrs.update({"layout": LAYOUT_VERSION, "reservoir": reservoir, "ridge": emb.ridge_,
                            "offset": emb.offset_, "washout": emb.washout, "bin_pixels": emb.bin_pixels,
                            "n_units": emb.n_units, "params": _jsonable(eparams),
                            "tuned": getattr(emb, "tuned_", None), "n_rejected": len(rejected)})
        cols = [c for c in CATALOG_COLUMNS if c in catalog]
        cat = catalog[cols].iloc[kept].copy() if cols else pd.DataFrame(index=range(len(kept)))
        cat["row"] = kept.astype("i8")
        cat.reset_index(drop=True).to_parquet(part.path / CATALOG_FILE, index=False)
        rejected.to_csv(part.path / REJECTED_FILE, index=False)
        write_lineage(part.path, step="embed", params=_jsonable({**eparams, "ridge_used": emb.ridge_,
                                                                 "offset_used": emb.offset_}),
                      inputs={"store": str(store.path.resolve()), "store_fingerprint": store_fingerprint(store)},
                      extra={"n_spectra": len(kept), "n_rejected": len(rejected), "code": code_version(),
                             "run_key": key})
        part.commit()
    for _, r in rejected.iterrows():
        log.warning("spectrum %s (store row %d) not embedded: %s", r["id"], r["row"], r["reason"])
    log.info("embedded %d spectra into %s (%d rejected)", len(kept), out, len(rejected))
    return out


def _create_arrays(group, n: int, n1: int, chunk_rows: int) -> dict:
    """The per-spectrum arrays of the layout, empty, ``n`` rows of readouts with ``n1`` weights."""
    shapes = {"readout": (n1, "f8"), "gram": (n1 * (n1 + 1) // 2, "f8"), "xty": (n1, "f8"),
              "yty": (None, "f8"), "n_steps": (None, "i8"), "persistence": (None, "f8")}
    return {name: group.create_array(name, shape=(n,) if width is None else (n, width),
                                     chunks=(chunk_rows,) if width is None else (chunk_rows, width), dtype=dtype)
            for name, (width, dtype) in shapes.items()}


def _rejected_rows(store, n_steps, ids: list, emb: ESNReadoutEmbedder) -> pd.DataFrame:
    """The rows written with ``n_steps`` 0 (not embedded), with the reason, read again from the store."""
    rows = np.flatnonzero(np.asarray(n_steps[:]) == 0)
    reasons = []
    for r in rows:
        why = embeddable(np.asarray(store.flux[r:r + 1], dtype="f8"), np.asarray(store.weight[r:r + 1]),
                         washout=emb.washout, bin_pixels=emb.bin_pixels)[0]
        reasons.append(why or "no usable step")
    return pd.DataFrame({"id": [str(ids[r]) for r in rows], "row": rows.astype("i8"), "reason": reasons})


def _compact(path: Path, group, kept: np.ndarray, n1: int, chunk_rows: int):
    """The arrays of ``group`` (in ``path``) rewritten with only the rows ``kept``, chunk by chunk."""
    import shutil

    import zarr

    tmp = path / (ARRAYS_DIR + ".compact")
    new = zarr.open_group(tmp, mode="w")
    arrays = _create_arrays(new, len(kept), n1, chunk_rows)
    for lo in range(0, len(kept), chunk_rows):
        rows = kept[lo:lo + chunk_rows]
        a, b = int(rows[0]), int(rows[-1]) + 1          # read the span once, keep its rows
        for name, arr in arrays.items():
            arr[lo:lo + len(rows)] = group[name][a:b][rows - a]
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
        raise EmbeddingError(f"{store.path}: none of the {len(rows)} spectra drawn to fit the embedder can be "
                             f"embedded (too few valid pixels)")
    emb.fit(fx[ok], weight=fw[ok], progress=progress)


def sample_embeddings(emb, out, n_rows: int, *, seed: int = 0) -> Path:
    """Copy a random sample of ``n_rows`` spectra of an EMBEDDINGS directory into a new one.

    The sample is made of whole stored chunks drawn with ``seed`` (the last
    one cut to make ``n_rows``): Zarr reads whole chunks, so rows scattered
    over every chunk would read the whole store to copy a small part of it.
    The copy has the same layout and attributes; its catalog's ``row`` is the
    spectrum's row in the original EMBEDDINGS and store.  Written atomically;
    an existing copy made from the same embeddings with the same ``n_rows`` and
    ``seed`` is reused.

    Parameters
    ----------
    emb : Embeddings or path-like
    out : path-like
        The directory to write.
    n_rows : int
        Spectra in the sample (at most ``len(emb)``).
    seed : int
        Seed of the choice of chunks.

    Returns
    -------
    Path
        ``out``.
    """
    import zarr

    from latentsky.store.spectra import atomic_directory

    emb = emb if isinstance(emb, Embeddings) else open_embeddings(emb)
    n = len(emb)
    if not (isinstance(n_rows, (int, np.integer)) and 1 <= n_rows <= n):
        raise EmbeddingError(f"parameter n_rows={n_rows!r}: must be an integer in [1, {n}]")
    source = read_lineage(emb.path) or {}
    inputs = {"embeddings": str(Path(emb.path).resolve()), "embeddings_key": source.get("key"),
              "n_rows": int(n_rows), "seed": seed}
    out = Path(out)
    previous = read_lineage(out) if out.exists() else None
    if previous and previous.get("inputs") == inputs:
        return out
    chunk = emb.readout.chunks[0]
    order = np.random.default_rng(seed).permutation(-(-n // chunk))
    picked, total = [], 0
    for k in order:
        if total >= n_rows:
            break
        s, e = k * chunk, min((k + 1) * chunk, n)
        e = min(e, s + n_rows - total)
        picked.append((s, e))
        total += e - s
    picked.sort()
    names = tuple(name for name in ARRAY_NAMES if getattr(emb, name, None) is not None)
    with atomic_directory(out) as tmp:
        group = zarr.open_group(tmp / ARRAYS_DIR, mode="w")
        arrays = {}
        for name in names:
            src = getattr(emb, name)
            arrays[name] = group.create_array(name, shape=(n_rows,) + src.shape[1:],
                                              chunks=(chunk,) + src.shape[1:], dtype=src.dtype)
        at = 0
        for s, e in picked:
            for name in names:
                arrays[name][at:at + e - s] = getattr(emb, name)[s:e]
            at += e - s
        group.attrs.update(emb.attrs)
        rows = np.concatenate([np.arange(s, e) for s, e in picked])
        cat = emb.catalog.iloc[rows].reset_index(drop=True)
        cat.to_parquet(tmp / CATALOG_FILE, index=False)
        write_lineage(tmp, step="sample", params={"n_rows": int(n_rows), "seed": seed}, inputs=inputs,
                      extra={"chunks": [list(p) for p in picked]})
    return out


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, np.generic):
            v = v.item()
        elif isinstance(v, (np.ndarray, tuple)):
            v = list(np.asarray(v).tolist())
        out[k] = v
    return out


class Embeddings:
    """Read access to an EMBEDDINGS directory (layout in the module docstring).

    Attributes
    ----------
    catalog : DataFrame
    readout, gram, xty, yty, n_steps : zarr.Array
    persistence : zarr.Array or None
        None in embeddings written before it was recorded.
    attrs : dict
    """

    def __init__(self, path):
        import zarr

        self.path = Path(path)
        if not (self.path / ARRAYS_DIR).exists() or not (self.path / CATALOG_FILE).exists():
            raise EmbeddingError(f"{self.path}: not a latentsky embeddings directory")
        self._group = zarr.open_group(self.path / ARRAYS_DIR, mode="r")
        self._catalog: pd.DataFrame | None = None
        for name in ARRAY_NAMES:
            setattr(self, name, self._group[name] if name in self._group else None)
        missing = [name for name in REQUIRED_ARRAYS if getattr(self, name) is None]
        if missing:
            raise EmbeddingError(f"{self.path}: embeddings without the array {missing[0]!r}")
        self.attrs = dict(self._group.attrs)

    @property
    def catalog(self) -> pd.DataFrame:
        """One row per spectrum (``id``... and ``row``), read on first use (a chunk task never needs it)."""
        if self._catalog is None:
            self._catalog = pd.read_parquet(self.path / CATALOG_FILE)
        return self._catalog

    def __len__(self) -> int:
        return self.readout.shape[0]

    @property
    def reservoir(self) -> Reservoir:
        """The frozen reservoir that made the readouts."""
        return Reservoir.from_dict(self.attrs["reservoir"])

    @property
    def rejected(self) -> pd.DataFrame:
        """The store's spectra that were not embedded (``id``, ``row``, ``reason``); empty when none."""
        path = self.path / REJECTED_FILE
        if not path.exists():
            return pd.DataFrame({"id": pd.Series(dtype=str), "row": pd.Series(dtype="i8"),
                                 "reason": pd.Series(dtype=str)})
        return pd.read_csv(path, dtype={"id": str, "reason": str})

    def statistics(self, rows=slice(None)) -> ReadoutStatistics:
        """The sufficient statistics of ``rows`` (a slice, or an array of row numbers), Gram unpacked."""
        def get(arr):
            if arr is None:
                return None
            if isinstance(rows, slice):
                return np.asarray(arr[rows])
            return np.asarray(arr.get_orthogonal_selection((np.asarray(rows),) + (slice(None),) * (arr.ndim - 1)))

        return ReadoutStatistics(unpack_gram(get(self.gram)), get(self.xty), get(self.yty), get(self.n_steps),
                                 get(self.persistence))


def open_embeddings(path) -> Embeddings:
    """Open an EMBEDDINGS directory written by :func:`embed_store`."""
    return Embeddings(path)
