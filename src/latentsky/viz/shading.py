"""Colour a rasterized latent map on the server: RGBA images the browser only has to draw.

Why not leave the colours to the browser (a float image and a Bokeh colour
mapper)?  Measured in headless Chromium on a 700 x 560 map (scratch profile of
bench/render.py's zoom), BokehJS spent 160-230 ms per zoom colour-mapping the
new image (an equalised histogram over 392,000 values, or the per-class mixing
of an ``ImageStack``, done twice: once for the mapper's new range, once for the
data), which alone was most of the 250 ms zoom-to-paint budget; drawing an
RGBA image takes it ~2 ms.

Why not Datashader's ``shade``?  It interpolates each colour channel over the
palette (``np.interp`` per channel and pixel: 48 ms against 5 ms here for an
equalised 700 x 560 map, 57-70 ms against 12 ms for classes); a 256-entry
lookup table does the same in one ``take``.  The equalisation is the one
:func:`datashader.transfer_functions.eq_hist` computes for counts (a test
checks they agree), so maps look as ``shade(how="eq_hist")`` makes them.
"""

from __future__ import annotations

import numpy as np
from datashader.colors import rgb

LEVELS = 256
"""Colours in a palette's lookup table."""


def lookup_table(colours, *, min_alpha: int = 255) -> np.ndarray:
    """RGBA colours (uint8, shape (LEVELS + 1, 4)) spread evenly over ``colours`` (hex or names), then a
    transparent entry.

    Entry ``i < LEVELS`` is level ``i / (LEVELS - 1)`` of the palette, its opacity rising linearly from
    ``min_alpha`` to 255; the last entry (index ``LEVELS``) is what empty pixels get.
    """
    stops = np.array([rgb(c) for c in colours], dtype="f8")
    t = np.linspace(0, 1, LEVELS)
    out = np.zeros((LEVELS + 1, 4), dtype="u1")
    for ch in range(3):
        out[:LEVELS, ch] = np.round(np.interp(t, np.linspace(0, 1, len(stops)), stops[:, ch]))
    out[:LEVELS, 3] = np.round(min_alpha + (255 - min_alpha) * t)
    return out


def _equalised_colours(counts: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """RGBA (h, w, 4) of non-negative integer ``counts`` by their place in the histogram of the non-zero counts.

    Histogram equalisation as ``datashader.transfer_functions.eq_hist`` does it for an integer
    raster, with a ``bincount`` in place of its ``np.unique`` (a sort: 15 ms against ~2 ms on a
    700 x 560 map), and the colour of every count looked up once.
    """
    hist = np.bincount(counts.ravel())
    hist[0] = 0
    cdf = np.cumsum(hist, dtype="f8")
    lo, hi = cdf[np.flatnonzero(hist)[0]], cdf[-1]
    level = (cdf - lo) / (hi - lo) if hi > lo else np.ones_like(cdf)
    index = np.rint(level * (LEVELS - 1)).astype(np.intp)
    index[0] = LEVELS  # zero counts: empty, transparent
    colour_of_count = lut.view("u4").ravel()[index]
    return colour_of_count[counts].view("u1").reshape(counts.shape + (4,))


def shade_values(values: np.ndarray, lut: np.ndarray, *, how: str = "linear"):
    """RGBA (h, w, 4) uint8 of a 2-D raster; NaN pixels (and zeros when ``how="eq_hist"``: counts) transparent.

    Parameters
    ----------
    values : ndarray (h, w)
        Aggregated values: counts (integers) for ``"eq_hist"``, or a column's mean per pixel.
    lut : ndarray (LEVELS + 1, 4)
        From :func:`lookup_table`.
    how : {"linear", "eq_hist"}
        ``"linear"`` spreads the raster's finite range over the palette; ``"eq_hist"`` spreads the
        histogram of the counts (Datashader's equalisation), for densities spanning decades.

    Returns
    -------
    rgba : ndarray (h, w, 4) uint8
    span : (float, float)
        The values at the two ends of the palette (NaN, NaN for an empty raster): what a colour bar shows.
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"parameter values: expected a 2-D raster, got shape {values.shape}")
    if how not in ("linear", "eq_hist"):
        raise ValueError(f"parameter how={how!r}: must be 'linear' or 'eq_hist'")
    if how == "eq_hist":
        if values.dtype.kind not in "iub":
            raise ValueError(f"parameter values: eq_hist shades counts (integers), got {values.dtype}")
        counts = values.astype(np.intp, copy=False)
        if not counts.any():
            return np.zeros(values.shape + (4,), dtype="u1"), (float("nan"), float("nan"))
        return _equalised_colours(counts, lut), (float(counts[counts > 0].min()), float(counts.max()))
    empty = ~np.isfinite(values)
    if empty.all():
        return np.zeros(values.shape + (4,), dtype="u1"), (float("nan"), float("nan"))
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    scale = (LEVELS - 1) / (hi - lo) if hi > lo else 0.0
    index = np.rint(np.nan_to_num((values - lo) * scale, nan=0.0) + (0 if hi > lo else LEVELS - 1)).astype(np.intp)
    index[empty] = LEVELS
    rgba = lut.view("u4").ravel()[index]
    return rgba.view("u1").reshape(values.shape + (4,)), (lo, hi)


def shade_categories(counts: np.ndarray, colours) -> np.ndarray:
    """RGBA (h, w, 4) uint8 of per-class counts (h, w, k): each pixel the count-weighted mix of its classes' colours.

    Empty pixels are transparent, others opaque (as Datashader's ``shade`` of a
    categorical aggregate with ``min_alpha=255``).  One compiled pass over the
    pixels (a matrix product with k = 3 classes and the whole-array passes after
    it took 33 ms of CPU on a 700 x 560 map, this ~2 ms).
    """
    counts = np.asarray(counts)
    if counts.ndim != 3 or counts.shape[2] != len(colours):
        raise ValueError(f"parameter counts: expected shape (h, w, {len(colours)}), got {counts.shape}")
    mix = np.array([rgb(c) for c in colours], dtype="f4").reshape(len(colours), 3)
    if counts.dtype.kind not in "iuf":
        counts = counts.astype("f4")
    out = np.empty(counts.shape[:2] + (4,), dtype="u1")
    _mix_kernel()(np.ascontiguousarray(counts), mix, out)
    return out


_MIX: list = []


def _mix_kernel():
    """The numba kernel of :func:`shade_categories`, compiled on first use (cached on disk)."""
    if not _MIX:
        import numba

        @numba.njit(nogil=True, cache=True)
        def mix_colours(counts, mix, out):
            h, w, k = counts.shape
            for i in range(h):
                for j in range(w):
                    total = np.float32(0)
                    r = np.float32(0)
                    g = np.float32(0)
                    b = np.float32(0)
                    for c in range(k):
                        n = np.float32(counts[i, j, c])
                        if n > 0:  # NaN (a float aggregate's empty class) and zero add nothing
                            total += n
                            r += n * mix[c, 0]
                            g += n * mix[c, 1]
                            b += n * mix[c, 2]
                    if total > 0:
                        inv = np.float32(1) / total
                        out[i, j, 0] = np.uint8(np.rint(r * inv))
                        out[i, j, 1] = np.uint8(np.rint(g * inv))
                        out[i, j, 2] = np.uint8(np.rint(b * inv))
                        out[i, j, 3] = 255
                    else:
                        out[i, j, 0] = 0
                        out[i, j, 1] = 0
                        out[i, j, 2] = 0
                        out[i, j, 3] = 0

        _MIX.append(mix_colours)
    return _MIX[0]
