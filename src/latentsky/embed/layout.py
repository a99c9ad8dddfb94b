"""The on-disk layout of stage 1's output, an EMBEDDINGS directory, and read access to it.

What stage 2, the autoencoder, reads (written by :func:`latentsky.embed.runner.embed_store`)::

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

"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from latentsky.embed.reservoir import Reservoir
from latentsky.embed.statistics import ReadoutStatistics
from latentsky.exceptions import EmbeddingError
from latentsky.store.lineage import read_lineage, write_lineage

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


def create_arrays(group, n: int, n1: int, chunk_rows: int) -> dict:
    """The per-spectrum arrays of the layout, empty, ``n`` rows of readouts with ``n1`` weights."""
    shapes = {
        "readout": (n1, "f8"),
        "gram": (n1 * (n1 + 1) // 2, "f8"),
        "xty": (n1, "f8"),
        "yty": (None, "f8"),
        "n_steps": (None, "i8"),
        "persistence": (None, "f8"),
    }
    return {
        name: group.create_array(
            name,
            shape=(n,) if width is None else (n, width),
            chunks=(chunk_rows,) if width is None else (chunk_rows, width),
            dtype=dtype,
        )
        for name, (width, dtype) in shapes.items()
    }


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
    inputs = {
        "embeddings": str(Path(emb.path).resolve()),
        "embeddings_key": source.get("key"),
        "n_rows": int(n_rows),
        "seed": seed,
    }
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
            arrays[name] = group.create_array(
                name, shape=(n_rows,) + src.shape[1:], chunks=(chunk,) + src.shape[1:], dtype=src.dtype
            )
        at = 0
        for s, e in picked:
            for name in names:
                arrays[name][at : at + e - s] = getattr(emb, name)[s:e]
            at += e - s
        group.attrs.update(emb.attrs)
        rows = np.concatenate([np.arange(s, e) for s, e in picked])
        cat = emb.catalog.iloc[rows].reset_index(drop=True)
        cat.to_parquet(tmp / CATALOG_FILE, index=False)
        write_lineage(
            tmp,
            step="sample",
            params={"n_rows": int(n_rows), "seed": seed},
            inputs=inputs,
            extra={"chunks": [list(p) for p in picked]},
        )
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
            return pd.DataFrame(
                {"id": pd.Series(dtype=str), "row": pd.Series(dtype="i8"), "reason": pd.Series(dtype=str)}
            )
        return pd.read_csv(path, dtype={"id": str, "reason": str})

    def statistics(self, rows=slice(None)) -> ReadoutStatistics:
        """The sufficient statistics of ``rows`` (a slice, or an array of row numbers), Gram unpacked."""

        def get(arr):
            if arr is None:
                return None
            if isinstance(rows, slice):
                return np.asarray(arr[rows])
            return np.asarray(arr.get_orthogonal_selection((np.asarray(rows),) + (slice(None),) * (arr.ndim - 1)))

        return ReadoutStatistics(
            unpack_gram(get(self.gram)), get(self.xty), get(self.yty), get(self.n_steps), get(self.persistence)
        )


def open_embeddings(path) -> Embeddings:
    """Open an EMBEDDINGS directory written by :func:`embed_store`."""
    return Embeddings(path)
