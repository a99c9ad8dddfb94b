"""Which rows the pointer names: the hover's pixel index (:class:`PixelIndex`) and the selection geometry
(rows in a box or a lasso polygon, the nearest row to a tap), for pandas and prepared Dask tables."""

from __future__ import annotations

import numpy as np
import pandas as pd

from latentsky.viz.table import COORDS, INDEX_COLUMN, is_dask, take_rows


class PixelIndex:
    """Which row is drawn under a screen pixel: the metadata lookup behind the hover.

    One Datashader pass (the largest row position per pixel) for the current
    view, computed only when the pointer moves over a new view and cached;
    each lookup is then O(1).

    Parameters
    ----------
    table : DataFrame
        A table prepared by :func:`prepare_table`.
    width, height : int
        Raster size (the plot's).
    """

    def __init__(self, table: pd.DataFrame, width: int, height: int, *, coords=COORDS):
        self.table, self.width, self.height, self.coords = table, int(width), int(height), coords
        self._key = None
        self._index = None

    def _raster(self, x_range, y_range) -> np.ndarray:
        import datashader as ds

        key = (tuple(map(float, x_range)), tuple(map(float, y_range)))
        if key != self._key:
            cvs = ds.Canvas(plot_width=self.width, plot_height=self.height, x_range=key[0], y_range=key[1])
            agg = cvs.points(self.table, self.coords[0], self.coords[1], ds.max(INDEX_COLUMN))
            self._index = np.nan_to_num(agg.values, nan=-1).astype(np.int64)
            self._key = key
        return self._index

    def lookup(self, x: float, y: float, x_range, y_range, *, radius: int = 3) -> int | None:
        """Row position drawn at ``(x, y)`` (data coordinates) in the view ``x_range, y_range``, or None.

        An empty pixel looks ``radius`` pixels around it (what ``dynspread`` may have drawn there).
        """
        if x is None or y is None or x_range is None or y_range is None:
            return None
        idx = self._raster(x_range, y_range)
        (x0, x1), (y0, y1) = x_range, y_range
        if not (x0 <= x <= x1 and y0 <= y <= y1) or x1 <= x0 or y1 <= y0:
            return None
        i = min(self.width - 1, int((x - x0) / (x1 - x0) * self.width))
        j = min(self.height - 1, int((y - y0) / (y1 - y0) * self.height))
        if idx[j, i] >= 0:
            return int(idx[j, i])
        win = idx[max(0, j - radius) : j + radius + 1, max(0, i - radius) : i + radius + 1]
        hits = np.argwhere(win >= 0)
        if len(hits) == 0:
            return None
        centre = np.array([min(j, radius), min(i, radius)])
        jj, ii = hits[np.argmin(((hits - centre) ** 2).sum(axis=1))]
        return int(win[jj, ii])


def points_in_box(table: pd.DataFrame, bounds, *, coords=COORDS) -> np.ndarray:
    """Positions of the rows inside a box.

    Parameters
    ----------
    bounds : (x0, y0, x1, y1)
        The box, in latent coordinates (the order of the corners does not matter).

    Returns
    -------
    ndarray of int
        Row positions (0-based, ``iloc``), ascending.
    """
    x0, y0, x1, y1 = (float(b) for b in bounds)
    x0, x1 = min(x0, x1), max(x0, x1)
    y0, y1 = min(y0, y1), max(y0, y1)
    if is_dask(table):
        x, y = table[coords[0]], table[coords[1]]
        inside = table[(x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)]
        return np.sort(inside[INDEX_COLUMN].compute().to_numpy().astype(np.int64))
    x = table[coords[0]].to_numpy()
    y = table[coords[1]].to_numpy()
    return np.flatnonzero((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1))


def points_in_polygon(table: pd.DataFrame, xs, ys, *, coords=COORDS) -> np.ndarray:
    """Positions of the rows inside a lasso polygon with vertices ``(xs[i], ys[i])``."""
    from matplotlib.path import Path as MplPath

    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if len(xs) < 3:
        return np.empty(0, dtype=np.int64)
    # test the bounding box first: a lasso usually covers a small part of a large map
    cand = points_in_box(table, (xs.min(), ys.min(), xs.max(), ys.max()), coords=coords)
    rows = take_rows(table, cand)
    pts = np.column_stack([rows[coords[0]].to_numpy(), rows[coords[1]].to_numpy()])
    inside = MplPath(np.column_stack([xs, ys])).contains_points(pts)
    return cand[inside]


def nearest_point(
    table: pd.DataFrame,
    x: float,
    y: float,
    *,
    coords=COORDS,
    x_scale: float = 1.0,
    y_scale: float = 1.0,
    max_distance: float | None = None,
) -> int | None:
    """Position of the row nearest to ``(x, y)``, or None.

    Distances are measured in units of ``x_scale``/``y_scale`` (e.g. the size
    of a screen pixel in each axis, so a tap picks what looks nearest).
    ``max_distance`` (same units) returns None for a tap on empty space.
    """
    if is_dask(table):
        return _nearest_dask(table, x, y, coords=coords, x_scale=x_scale, y_scale=y_scale, max_distance=max_distance)
    if len(table) == 0:
        return None
    dx = (table[coords[0]].to_numpy() - x) / x_scale
    dy = (table[coords[1]].to_numpy() - y) / y_scale
    d2 = dx * dx + dy * dy
    i = int(np.nanargmin(d2))
    if max_distance is not None and d2[i] > max_distance**2:
        return None
    return i


def _nearest_dask(table, x, y, *, coords, x_scale, y_scale, max_distance):
    """:func:`nearest_point` on a prepared Dask frame: only the points within ``max_distance`` leave the
    workers (all points when it is None)."""
    part = table[list(coords) + [INDEX_COLUMN]]
    if max_distance is not None:
        rx, ry = max_distance * x_scale, max_distance * y_scale
        cx, cy = part[coords[0]], part[coords[1]]
        part = part[(cx >= x - rx) & (cx <= x + rx) & (cy >= y - ry) & (cy <= y + ry)]
    near = part.compute()
    if len(near) == 0:
        return None
    i = nearest_point(near, x, y, coords=coords, x_scale=x_scale, y_scale=y_scale, max_distance=max_distance)
    return None if i is None else int(near[INDEX_COLUMN].iloc[i])


# ----------------------------------------------------------------------------- spectra
