"""Points counted per pixel, and per category, on every core: the aggregation behind each zoom of the map.

Why not Datashader's ``Canvas.points`` here: on a pandas frame it aggregates
on one thread, and its count per category (``by(column, count())``, the map's
default colouring) slices the aggregate once per point, three times the cost
of its plain count (142 against 44 ms at 10^7 points, bench/render.py's
scratch profile), most of the zoom-to-paint budget.  These kernels map each
point to its pixel exactly as Datashader does (tests check the counts are
equal), in one pass over slices of the table, one thread and one raster per
slice, the rasters summed at the end.  Everything else (a column's mean or
maximum, Dask frames, the hover's index pass) stays with Datashader.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

MIN_POINTS_PER_THREAD = 250_000
"""A table is split over threads only in slices of at least this many points (a thread's own raster
costs about as much to clear and add as counting that many points into it)."""

_KERNELS: dict = {}
_POOL: list = []
_POOL_LOCK = threading.Lock()


def _kernels():
    """The numba kernels, compiled on first use (cached on disk)."""
    if not _KERNELS:
        import numba

        jit = numba.njit(nogil=True, cache=True)

        @jit
        def count(xs, ys, codes, k, xmin, xmax, ymin, ymax, sx, tx, sy, ty, width, height):
            # Datashader's Point glyph: points outside [min, max] (or NaN) dropped, the others at
            # int(x * sx + tx), those on the upper edge in the last pixel.  A category code < 0 (a
            # missing value) counts in the last category, as Datashader's by() counts it.
            out = np.zeros((height, width, k), np.uint32)
            for i in range(xs.shape[0]):
                x = xs[i]
                y = ys[i]
                if xmin <= x <= xmax and ymin <= y <= ymax:
                    xx = int(x * sx + tx)
                    yy = int(y * sy + ty)
                    if xx >= width:
                        xx = width - 1
                    if yy >= height:
                        yy = height - 1
                    c = 0
                    if k > 1:
                        c = np.int64(codes[i])
                        if c < 0:
                            c += k
                    out[yy, xx, c] += 1
            return out

        _KERNELS["count"] = count
    return _KERNELS["count"]


def _threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _pool(n: int) -> ThreadPoolExecutor:
    with _POOL_LOCK:
        if not _POOL or _POOL[0]._max_workers < n:
            _POOL[:] = [ThreadPoolExecutor(max_workers=n, thread_name_prefix="latentsky-raster")]
        return _POOL[0]


def scale_and_translate(lo: float, hi: float, n: int) -> tuple[float, float]:
    """Datashader's linear axis: pixel = value * s + t over ``n`` pixels spanning ``[lo, hi]``."""
    s = n / (hi - lo)
    return s, -lo * s


def count_points(
    xs, ys, x_range, y_range, width: int, height: int, codes=None, n_categories: int = 1, *, threads: int | None = None
) -> np.ndarray:
    """Points per pixel, or per pixel and category: what ``Canvas.points(..., count())`` (or
    ``by(column, count())``) gives, rows from the bottom (y_range[0]) up.

    Parameters
    ----------
    xs, ys : ndarray (n,)
        Coordinates (float32 or float64); NaN and points outside the ranges are not counted.
    x_range, y_range : (float, float)
        The view, inclusive on both ends, ``lo < hi``.
    width, height : int
        Raster size, pixels.
    codes : ndarray (n,) of int, optional
        Category code of each point (``Categorical.codes``); with ``n_categories``.
    n_categories : int
        Categories (the last axis of the result).
    threads : int, optional
        Threads to use (default: the CPUs this process may run on).

    Returns
    -------
    ndarray (height, width) of uint32, or (height, width, n_categories) with ``codes``
    """
    xs, ys = np.asarray(xs), np.asarray(ys)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError(f"parameters xs, ys: expected two 1-D arrays of one length, got {xs.shape}, {ys.shape}")
    by_category = codes is not None
    k = int(n_categories) if by_category else 1
    if k < 1:
        raise ValueError(f"parameter n_categories: expected >= 1, got {n_categories}")
    if codes is None:
        codes = np.zeros(1, dtype=np.int8)  # not read (k == 1)
    elif len(codes) != len(xs):
        raise ValueError(f"parameter codes: {len(codes)} codes for {len(xs)} points")
    (x0, x1), (y0, y1) = (tuple(map(float, r)) for r in (x_range, y_range))
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"parameters x_range, y_range: expected lo < hi, got {x_range}, {y_range}")
    sx, tx = scale_and_translate(x0, x1, int(width))
    sy, ty = scale_and_translate(y0, y1, int(height))
    kernel = _kernels()
    n = len(xs)
    parts = max(1, min(threads or _threads(), n // MIN_POINTS_PER_THREAD))

    def run(lo: int, hi: int) -> np.ndarray:
        c = codes[lo:hi] if k > 1 else codes
        return kernel(xs[lo:hi], ys[lo:hi], c, k, x0, x1, y0, y1, sx, tx, sy, ty, int(width), int(height))

    if parts == 1:
        out = run(0, n)
    else:
        bounds = np.linspace(0, n, parts + 1).astype(np.int64)
        rasters = list(_pool(parts).map(run, bounds[:-1], bounds[1:]))
        out = rasters[0]
        for r in rasters[1:]:
            out += r
    return out if by_category else out[..., 0]
