"""Where a fit's training rows come from: arrays in memory, an EMBEDDINGS directory, or a float32 cache.

:func:`as_source` wraps what ``fit`` was given; every source reads blocks of
rows as the inputs of the coupled loss
(:func:`~latentsky.autoencoder.coupled.coupled_inputs`), so one batching
code path serves all.  :func:`moments` and :func:`mean_metric` accumulate the
standardisation and the mean data-space metric block by block.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from latentsky.exceptions import AutoencoderError

log = logging.getLogger(__name__)


class Source:
    """Rows of readouts and (optionally) statistics, read block by block.

    Wraps either arrays in memory or an EMBEDDINGS directory on disk, so one
    batching code path serves both.
    """

    blocked_gram = False  # read() gives the packed triangle

    def __init__(
        self,
        readout,
        gram=None,
        xty=None,
        yty=None,
        n_steps=None,
        block_rows=256,
        ridge=None,
        path=None,
        stage1_ridge=None,
    ):
        self.readout, self.gram, self.xty, self.yty, self.n_steps = readout, gram, xty, yty, n_steps
        self.block_rows = int(block_rows)
        self.ridge = ridge  # set when the readouts are exactly the ridge solutions (a faster loss preparation)
        self.stage1_ridge = stage1_ridge  # the ridge stage 1 used, when known
        self.path = path

    @property
    def n(self) -> int:
        return self.readout.shape[0]

    @property
    def m(self) -> int:
        return self.readout.shape[1]

    @property
    def has_statistics(self) -> bool:
        return self.gram is not None

    def blocks(self):
        return [(s, min(s + self.block_rows, self.n)) for s in range(0, self.n, self.block_rows)]

    def read(self, start, stop, rows=None, *, normalise=None, statistics=True) -> dict:
        """Training inputs of rows ``start:stop`` (optionally the subset ``rows``, relative to ``start``)."""
        from latentsky.autoencoder.coupled import coupled_inputs

        def take(a):
            x = np.asarray(a[start:stop])
            return x if rows is None else x[rows]

        if statistics and self.has_statistics:
            return coupled_inputs(
                take(self.readout),
                take(self.gram),
                take(self.xty),
                take(self.yty),
                take(self.n_steps),
                normalise,
                ridge=self.ridge,
            )
        return {"readout": take(self.readout).astype("f4")}

    def raw(self, start, stop, rows=None, *, statistics=True) -> dict:
        """The float64 readouts and (``statistics``) stage-1 statistics, Gram packed, of rows ``start:stop``
        (or the subset ``rows``)."""

        def take(a, dtype="f8"):
            x = np.asarray(a[start:stop], dtype=dtype)
            return x if rows is None else x[rows]

        out = {"readout": take(self.readout)}
        if statistics and self.has_statistics:
            out.update(gram=take(self.gram), xty=take(self.xty), yty=take(self.yty), n_steps=take(self.n_steps))
        return out


class CachedSource(Source):
    """The prepared float32 training inputs in raw files, read back block by block.

    Written in one pass over an EMBEDDINGS directory; later epochs then read
    ready float32 rows (about 26 kB per spectrum for N = 100) instead of
    decompressing and converting float64 Zarr chunks, several times faster.
    The Gram matrices are stored as the dense blocks the loss reads
    (:func:`~latentsky.autoencoder.coupled.gram_blocks`, one file each), so a
    read needs no reshuffling of columns.  Read with plain file reads (not
    memory maps), so the process's resident memory stays at a few blocks.
    """

    blocked_gram = True

    def __init__(self, directory: Path, n: int, m: int, block_rows: int):
        from latentsky.autoencoder.coupled import gram_block_index

        self.directory, self._n, self._m = Path(directory), int(n), int(m)
        self.block_rows = int(block_rows)
        self.index = gram_block_index(m)
        self.widths = {"readout": m, "resid": m, "floor": 1}
        self.widths.update({f"gram_{k}": len(ix) for k, ix in enumerate(self.index)})
        self.ridge, self.stage1_ridge, self.path = None, None, self.directory

    n = property(lambda self: self._n)
    m = property(lambda self: self._m)
    has_statistics = property(lambda self: True)

    @classmethod
    def build(cls, source: Source, directory, normalise: str) -> "CachedSource":
        """The cache of ``source`` in ``directory``, written unless an identical one is there."""
        from latentsky.autoencoder.coupled import split_gram
        from latentsky.store.lineage import fingerprint, read_lineage

        directory = Path(directory)
        lineage = read_lineage(source.path) if source.path is not None else None
        key = fingerprint(
            {
                "embeddings": (lineage or {}).get("key") or str(source.path),
                "n": source.n,
                "m": source.m,
                "normalise": normalise,
                "ridge": source.ridge,
                "layout": 2,
            }
        )
        meta = directory / "cache.json"
        cache = cls(directory, source.n, source.m, source.block_rows)
        if meta.exists() and json.loads(meta.read_text()).get("key") == key:
            return cache
        directory.mkdir(parents=True, exist_ok=True)
        meta.unlink(missing_ok=True)  # written last: a cache without it is incomplete
        handles = {f: open(directory / f"{f}.f4", "wb") for f in cache.widths}
        try:
            for s, e in source.blocks():
                part = source.read(s, e, None, normalise=normalise)
                part.update({f"gram_{k}": g for k, g in enumerate(split_gram(part.pop("gram"), cache.index))})
                for f, fh in handles.items():
                    fh.write(np.ascontiguousarray(part[f], dtype="f4").tobytes())
        finally:
            for fh in handles.values():
                fh.close()
        meta.write_text(json.dumps({"key": key, "n": source.n, "m": source.m}))
        return cache

    def read(self, start, stop, rows=None, *, normalise=None, statistics=True) -> dict:
        return self.read_ranges([(start, stop)], None if rows is None else np.asarray(rows), statistics=statistics)

    def read_ranges(self, ranges, take=None, *, statistics=True) -> dict:
        """Rows of several ``(start, stop)`` ranges, read straight into one buffer per field.

        ``take`` (indices into the concatenated ranges) selects and orders the
        rows; the Gram comes as the tuple of its blocks.
        """
        n = sum(e - s for s, e in ranges)
        out = {}
        for f in self.widths if statistics else ("readout",):
            w = self.widths[f]
            buf = np.empty(n * w, dtype="f4")
            at = 0
            with open(self.directory / f"{f}.f4", "rb") as fh:
                for s, e in ranges:
                    fh.seek(s * w * 4)
                    fh.readinto(memoryview(buf)[at * w : (at + e - s) * w])
                    at += e - s
            arr = buf.reshape(n, w) if w > 1 else buf
            out[f] = arr if take is None else arr[take]
        if statistics:
            out["gram"] = tuple(out.pop(f"gram_{k}") for k in range(len(self.index)))
        return out


def as_source(X, stats, chunk_rows) -> Source:
    """An EMBEDDINGS path / object, or readouts (+ ReadoutStatistics) -> Source."""
    from latentsky.embed.layout import Embeddings, open_embeddings, pack_gram

    if isinstance(X, (str, os.PathLike)):
        X = open_embeddings(X)
    if isinstance(X, Embeddings):
        block = int(chunk_rows or X.readout.chunks[0])
        ridge = X.attrs.get("ridge")
        return Source(
            X.readout,
            X.gram,
            X.xty,
            X.yty,
            X.n_steps,
            block_rows=block,
            ridge=exact_ridge(X),
            path=X.path,
            stage1_ridge=None if ridge is None else float(ridge),
        )
    X = np.asarray(X, dtype="f8")
    if X.ndim != 2:
        raise AutoencoderError(f"parameter X: expected readouts of shape (n, N+1), got shape {X.shape}")
    if stats is None:
        return Source(X, block_rows=chunk_rows or 4096)
    if len(stats) != len(X):
        raise AutoencoderError(f"parameter stats: {len(stats)} spectra, but X has {len(X)} readouts")
    if stats.gram.ndim == 3:
        if stats.gram.shape[-1] != X.shape[1]:
            raise AutoencoderError(
                f"parameter stats: Gram matrices are {stats.gram.shape[-1]} wide, readouts {X.shape[1]}"
            )
        gram = pack_gram(stats.gram)
    else:
        gram = stats.gram
    return Source(X, gram, stats.xty, stats.yty, stats.n_steps, block_rows=chunk_rows or 4096)


def exact_ridge(emb, rows: int = 64) -> float | None:
    """The ridge of the stored readouts when they solve ``(G + ridge I) w = h`` (checked on a few rows).

    Then the coupled inputs need no unpacked Gram matrix (see
    :func:`~latentsky.autoencoder.coupled.coupled_inputs`); otherwise None.
    """
    from latentsky.embed.layout import unpack_gram

    ridge = emb.attrs.get("ridge")
    if ridge is None:
        return None
    w = np.asarray(emb.readout[:rows], dtype="f8")
    g = unpack_gram(np.asarray(emb.gram[:rows], dtype="f8"), w.shape[1])
    h = np.asarray(emb.xty[:rows], dtype="f8")
    gap = h - np.einsum("nij,nj->ni", g, w) - float(ridge) * w
    if np.max(np.abs(gap)) <= 1e-8 * max(1.0, float(np.max(np.abs(h)))):
        return float(ridge)
    log.warning(
        "%s: readouts are not the ridge solutions of the stored statistics; using the slower "
        "general form of the coupled loss",
        emb.path,
    )
    return None


def moments(source: Source, rows: np.ndarray):
    """Mean, std and covariance matrix of the readouts of ``rows`` (a boolean mask), accumulated block by
    block in float64 around the first block's mean (a weight whose spread is tiny beside its mean would lose
    its variance to cancellation in ``E[w^2] - E[w]^2``)."""
    s1 = np.zeros(source.m)
    s2 = np.zeros((source.m, source.m))
    k = 0
    shift = None
    for s, e in source.blocks():
        sel = rows[s:e]
        if not sel.any():
            continue
        w = np.asarray(source.readout[s:e], dtype="f8")[sel]
        if shift is None:
            shift = w.mean(0)
        w = w - shift
        s1 += w.sum(0)
        s2 += w.T @ w
        k += len(w)
    centre = s1 / k
    cov = s2 / k - np.outer(centre, centre)
    return shift + centre, np.sqrt(np.clip(np.diag(cov), 0.0, None)), cov


def mean_metric(source: Source, rows: np.ndarray, normalise: str):
    """Mean over ``rows`` of the normalised Gram matrices (the loss's average curvature), in float64;
    the mean of the ridge divided by each spectrum's divisor (the curvature the ridge adds; None
    when the source does not know its ridge); and the mean normalised data-space error of the
    stage-1 readouts themselves (the floor of the coupled loss, normalised flux squared per step
    by default)."""
    from latentsky.autoencoder.coupled import coupled_inputs, divisors
    from latentsky.embed.layout import unpack_gram

    total = np.zeros(source.m * (source.m + 1) // 2)
    inv_div = floor = 0.0
    k = 0
    for s, e in source.blocks():
        sel = np.flatnonzero(rows[s:e])
        if len(sel):
            part = source.read(s, e, sel, normalise=normalise)
            # the prepared "gram" is packed and divided by each spectrum's divisor
            total += part["gram"].astype("f8").sum(0)
            floor += float(np.sum(part["floor"], dtype="f8"))
            if source.stage1_ridge is not None:
                raw = source.raw(s, e, sel)
                # the stage-1 readouts' own sse, which normalise="floor" divides by
                sse = coupled_inputs(
                    raw["readout"],
                    raw["gram"],
                    raw["xty"],
                    raw["yty"],
                    raw["n_steps"],
                    "none",
                    ridge=source.ridge,
                    dtype="f8",
                )["floor"]
                inv_div += np.sum(1.0 / divisors(normalise, raw["n_steps"], raw["yty"], sse))
            k += len(sel)
    ridge = None if source.stage1_ridge is None else float(source.stage1_ridge) * inv_div / k
    return unpack_gram(total / k, source.m), ridge, floor / k


def raw_rows(source: Source, rows: np.ndarray, *, statistics: bool = True) -> dict:
    """The float64 readouts and (``statistics``) stage-1 statistics, Gram packed, of ``rows`` (a boolean mask),
    concatenated (the statistics take ~41 kB per spectrum for N = 100)."""
    parts = [
        source.raw(s, e, np.flatnonzero(rows[s:e]), statistics=statistics)
        for s, e in source.blocks()
        if rows[s:e].any()
    ]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
