"""The HoloViews pieces the explorer puts on a map: the selection layer and the mouse streams."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from latentsky.viz import latent as vz

SELECTION_COLOUR = "#e41a1c"


def selection_layer(table, rows: np.ndarray, coords, width: int, height: int):
    """The points ``rows`` of ``table``, rasterized in one colour at ``width`` x ``height`` pixels.

    A fixed set of points per selection: the maps are rebuilt when it changes (a stream on a nested
    DynamicMap would be memoized away by the rasterize operation above it).
    """
    import datashader as ds
    import holoviews as hv
    from holoviews.operation.datashader import dynspread, rasterize

    sel = vz.take_rows(table[list(coords)], rows)
    points = hv.Points(sel[list(coords)], kdims=list(coords))
    layer = dynspread(rasterize(points, aggregator=ds.any(), width=width, height=height), max_px=2, threshold=0.5)
    return layer.opts(cmap=[SELECTION_COLOUR], alpha=0.9, backend="bokeh")


def attach_streams(
    dmap,
    *,
    on_tap: Callable[[float, float], object] | None = None,
    on_box: Callable[[tuple], object] | None = None,
    on_lasso: Callable[[np.ndarray, np.ndarray], object] | None = None,
    on_pointer: Callable[[float, float], object] | None = None,
    on_range: Callable[[tuple, tuple], object] | None = None,
) -> tuple:
    """Attach mouse streams to ``dmap`` and return them (keep them alive with the map).

    Each callback is called only with a whole event: a tap or pointer at ``(x, y)`` (data units), a box's
    ``(left, bottom, right, top)``, a lasso's vertex ``xs, ys`` (3 or more), a view's ``x_range, y_range``.
    """
    import holoviews as hv

    streams = []

    def add(stream, callback):
        stream.add_subscriber(callback)
        streams.append(stream)

    if on_tap is not None:
        add(hv.streams.Tap(source=dmap, x=None, y=None), lambda x=None, y=None, **_: _whole(on_tap, x, y))
    if on_box is not None:
        add(hv.streams.BoundsXY(source=dmap, bounds=None), lambda bounds=None, **_: _whole(on_box, bounds))
    if on_lasso is not None:

        def lasso(geometry=None, **_):
            if geometry is not None and len(geometry) >= 3:
                g = np.asarray(geometry)
                on_lasso(g[:, 0], g[:, 1])

        add(hv.streams.Lasso(source=dmap, geometry=None), lasso)
    if on_range is not None:
        add(hv.streams.RangeXY(source=dmap), lambda x_range=None, y_range=None, **_: _whole(on_range, x_range, y_range))
    if on_pointer is not None:
        add(hv.streams.PointerXY(source=dmap, x=None, y=None), lambda x=None, y=None, **_: _whole(on_pointer, x, y))
    return tuple(streams)


def _whole(callback, *values) -> None:
    if all(v is not None for v in values):
        callback(*values)
