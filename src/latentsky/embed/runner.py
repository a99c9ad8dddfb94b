"""Embed a whole spectrum store, out of core, optionally on Dask.

Output layout (what stage 2, the autoencoder, reads)::

    EMBEDDINGS/catalog.parquet     one row per spectrum, in array order:
                                   ``id`` (and ``object``, ``instrument`` when the
                                   store has them) and ``row`` (the row in
                                   EMBEDDINGS and in the input store)
    EMBEDDINGS/embedding.zarr/     Zarr v3 group, arrays chunked by rows:
        readout   (n, N+1) float64   the embedding: N reservoir weights, then the
                                     bias weight, at ridge ``attrs["ridge"]``
        gram      (n, P)   float64   X^T X packed: its upper triangle, row by row
                                     (``np.triu_indices(N+1)``), P = (N+1)(N+2)/2;
                                     unpack with :func:`unpack_gram`
        xty       (n, N+1) float64   X^T y
        yty       (n,)     float64   y^T y
        n_steps   (n,)     int64     rows of X (steps used in the regression)
        attrs: ``layout`` (version), ``reservoir`` (its full definition,
        :meth:`Reservoir.to_dict`), ``ridge``, ``offset``, ``washout``, ``n_units``,
        ``params`` (the embedder's parameters)
    EMBEDDINGS/lineage.json        step "embed": parameters, the input store's
                                   path and fingerprint, code version

X is the design matrix ``[x_t, 1]`` of the steps used, y their targets (the next
flux value); see :mod:`latentsky.embed.esn`.  With these, the squared error of
any readout ``v`` in data space is ``v' G v - 2 v' xty + yty`` (no spectrum
needed), which is what the model-coupled loss of stage 2 minimises;
:func:`open_embeddings` returns them as :class:`ReadoutStatistics`.

The whole directory is written under a temporary name and moved into place
when complete, so a crash never leaves a half-written EMBEDDINGS.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from latentsky.embed.esn import ESNReadoutEmbedder, ReadoutStatistics
from latentsky.embed.reservoir import Reservoir
from latentsky.exceptions import EmbeddingError
from latentsky.progress import Progress
from latentsky.store.lineage import code_version, fingerprint, write_lineage
from latentsky.store.spectra import SpectrumStore, atomic_directory

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.parquet"
ARRAYS_DIR = "embedding.zarr"
LAYOUT_VERSION = 1
CATALOG_COLUMNS = ("id", "object", "instrument")


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
    ids = store.catalog["id"].astype(str).tolist() if "id" in store.catalog else len(store)
    return fingerprint({"shape": list(store.flux.shape), "attrs": store.attrs, "ids": ids})


def _embed_chunk(store_path: str, start: int, stop: int, params: dict, reservoir: dict, offset: float,
                 ridge: float, ids: list) -> tuple[int, int, dict]:
    """One chunk of rows -> readouts and statistics (runs in-process or on a Dask worker)."""
    store = SpectrumStore(store_path)
    flux = store.flux[start:stop]
    weight = store.weight[start:stop]
    emb = ESNReadoutEmbedder(**params)
    emb.reservoir_ = Reservoir.from_dict(reservoir)
    emb.offset_, emb.ridge_, emb.n_features_in_ = offset, ridge, flux.shape[1]
    stats, readout = emb._run(np.asarray(flux, dtype="f8"), weight, ids, ridge=ridge)
    return start, stop, {"readout": readout, "gram": pack_gram(stats.gram), "xty": stats.xty,
                         "yty": stats.yty, "n_steps": stats.n_steps}


def embed_store(store, out, *, embedder: ESNReadoutEmbedder | None = None, fit_rows: int = 2000,
                tune: int = 0, tune_iter: int = 60, chunk_rows: int | None = None, client=None, scheduler: str | None = None,
                workers: int | None = None, progress=None, random_state=0, **params) -> Path:
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
        ``fit_rows`` spectra drawn with ``random_state`` (input offset and,
        with ``ridge="gcv"``, the ridge).
    fit_rows : int
        Spectra used to fit an unfitted embedder.
    tune : int
        When > 0, first tune the simple cycle's (r, v, b) with
        :func:`tune_reservoir` on this many of the fitting spectra (progress
        task ``"tune"``); the tuned values replace the embedder's.
    tune_iter : int
        Nelder-Mead iterations of the tuning.
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
        Start a local Dask cluster with this many single-threaded worker processes.
    progress : callable, optional
        Receives :class:`latentsky.progress.ProgressEvent` (task ``"embed"``,
        unit ``"spectra"``).
    random_state : int
        Seed of the fitting subsample (and of a new embedder's random reservoir).
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
    which other spectra share its batch, so single-process and Dask runs give
    identical arrays.
    """
    from sklearn.utils.validation import check_is_fitted
    from sklearn.exceptions import NotFittedError

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
    except NotFittedError:
        rng = np.random.default_rng(random_state)
        rows = np.sort(rng.choice(n, size=min(fit_rows, n), replace=False))
        fx = np.asarray(store.flux.get_orthogonal_selection((rows, slice(None))), dtype="f8")
        fw = store.weight.get_orthogonal_selection((rows, slice(None)))
        if tune:
            from latentsky.embed.esn import tune_reservoir

            if emb.reservoir != "cycle":
                raise EmbeddingError("parameter tune: only the simple cycle reservoir is tuned")
            best = tune_reservoir(fx, fw, n_units=emb.n_units, washout=emb.washout,
                                  ridge=emb.ridge if not isinstance(emb.ridge, str) else 1e-2,
                                  x0=(emb.cycle_weight, emb.input_scaling, emb.bias), n_series=int(tune),
                                  max_iter=tune_iter, input_offset=emb.input_offset, backend=emb.backend,
                                  random_state=random_state, progress=progress)
            log.info("tuned reservoir: r=%.4g v=%.4g b=%.4g (held-out error %.4g, from %.4g)",
                     best["cycle_weight"], best["input_scaling"], best["bias"], best["error"],
                     best["initial_error"])
            emb.set_params(cycle_weight=best["cycle_weight"], input_scaling=best["input_scaling"],
                           bias=best["bias"])
        emb.fit(fx, weight=fw)
    if emb.n_features_in_ != store.flux.shape[1]:
        raise EmbeddingError(f"{store.path}: spectra have {store.flux.shape[1]} pixels, the embedder was "
                             f"fitted on {emb.n_features_in_}")
    chunk_rows = int(chunk_rows or store.chunk_rows)
    catalog = store.catalog
    ids = catalog["id"].tolist() if "id" in catalog else list(range(n))
    eparams = emb.get_params()
    task_params = dict(eparams)
    reservoir = emb.reservoir_.to_dict()
    n1 = emb.n_units + 1
    bounds = [(s, min(s + chunk_rows, n)) for s in range(0, n, chunk_rows)]

    own_client = None
    if client is None and (scheduler or workers):
        from distributed import Client, LocalCluster

        if scheduler:
            client = own_client = Client(scheduler)
        else:
            # One thread per worker process: the NumPy back end's threads then
            # see one core each instead of oversubscribing.
            client = own_client = Client(LocalCluster(n_workers=int(workers), threads_per_worker=1,
                                                      dashboard_address=None))
    if client is not None:
        # Dask already runs one task per worker thread; more threads per task
        # would only oversubscribe the cores (results do not depend on it).
        task_params["n_threads"] = 1

    with atomic_directory(out) as tmp, Progress("embed", total=n, unit="spectra", callback=progress) as prog:
        import zarr

        group = zarr.open_group(tmp / ARRAYS_DIR, mode="w")
        arrays = {
            "readout": group.create_array("readout", shape=(n, n1), chunks=(chunk_rows, n1), dtype="f8"),
            "gram": group.create_array("gram", shape=(n, n1 * (n1 + 1) // 2),
                                       chunks=(chunk_rows, n1 * (n1 + 1) // 2), dtype="f8"),
            "xty": group.create_array("xty", shape=(n, n1), chunks=(chunk_rows, n1), dtype="f8"),
            "yty": group.create_array("yty", shape=(n,), chunks=(chunk_rows,), dtype="f8"),
            "n_steps": group.create_array("n_steps", shape=(n,), chunks=(chunk_rows,), dtype="i8"),
        }

        def write(result):
            start, stop, res = result
            for name, arr in arrays.items():
                arr[start:stop] = res[name]
            prog.advance(stop - start)

        args = (str(store.path),)
        common = dict(params=task_params, reservoir=reservoir, offset=emb.offset_, ridge=emb.ridge_)
        try:
            if client is None:
                for s, e in bounds:
                    write(_embed_chunk(*args, s, e, ids=ids[s:e], **common))
            else:
                from distributed import as_completed

                futures = [client.submit(_embed_chunk, *args, s, e, ids=ids[s:e], pure=False, **common)
                           for s, e in bounds]
                for fut in as_completed(futures):
                    write(fut.result())
        finally:
            if own_client is not None:
                cluster = own_client.cluster
                own_client.close()
                if cluster is not None:
                    cluster.close()
        group.attrs.update({"layout": LAYOUT_VERSION, "reservoir": reservoir, "ridge": emb.ridge_,
                            "offset": emb.offset_, "washout": emb.washout, "n_units": emb.n_units,
                            "params": _jsonable(eparams)})
        cols = [c for c in CATALOG_COLUMNS if c in catalog]
        cat = catalog[cols].copy() if cols else pd.DataFrame(index=range(n))
        cat["row"] = np.arange(n, dtype="i8")
        cat.reset_index(drop=True).to_parquet(tmp / CATALOG_FILE, index=False)
        write_lineage(tmp, step="embed", params=_jsonable({**eparams, "ridge_used": emb.ridge_,
                                                           "offset_used": emb.offset_}),
                      inputs={"store": str(store.path.resolve()), "store_fingerprint": store_fingerprint(store)},
                      extra={"n_spectra": n, "code": code_version()})
    log.info("embedded %d spectra into %s", n, out)
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
    attrs : dict
    """

    def __init__(self, path):
        import zarr

        self.path = Path(path)
        if not (self.path / ARRAYS_DIR).exists() or not (self.path / CATALOG_FILE).exists():
            raise EmbeddingError(f"{self.path}: not a latentsky embeddings directory")
        self._group = zarr.open_group(self.path / ARRAYS_DIR, mode="r")
        self.catalog = pd.read_parquet(self.path / CATALOG_FILE)
        for name in ("readout", "gram", "xty", "yty", "n_steps"):
            setattr(self, name, self._group[name])
        self.attrs = dict(self._group.attrs)

    def __len__(self) -> int:
        return self.readout.shape[0]

    @property
    def reservoir(self) -> Reservoir:
        """The frozen reservoir that made the readouts."""
        return Reservoir.from_dict(self.attrs["reservoir"])

    def statistics(self, rows=slice(None)) -> ReadoutStatistics:
        """The sufficient statistics of ``rows`` (a slice), Gram unpacked."""
        return ReadoutStatistics(unpack_gram(self.gram[rows]), self.xty[rows], self.yty[rows],
                                 self.n_steps[rows])


def open_embeddings(path) -> Embeddings:
    """Open an EMBEDDINGS directory written by :func:`embed_store`."""
    return Embeddings(path)
