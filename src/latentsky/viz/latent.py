"""The latent map as a HoloViews element, rasterized and coloured on the server (no Panel here).

A latent table is a :class:`pandas.DataFrame` with one row per spectrum and
at least the coordinate columns ``x`` and ``y`` (what ``latentsky pipeline``
writes to ``latent.parquet``); every other column can colour the map and
appears in the hover.  The map is aggregated on the server (densities and
counts per category of a pandas table by :mod:`latentsky.viz.raster` on every
core, the rest by Datashader), coloured there (:mod:`latentsky.viz.shading`)
and spread with ``dynspread``
(what HoloViews' ``rasterize`` + ``shade`` + ``dynspread`` do), so a browser receives
one RGBA image of at most ``width x height`` pixels whatever the number of
points and only draws it; numeric colourings get a colour bar of the view's
range, and the hover names the spectrum under the pointer (:class:`PixelIndex`).

A table may also be a Dask DataFrame (e.g. ``dask.dataframe.read_parquet``):
Datashader then aggregates its partitions in parallel, and taps, selections
and the hover read only the rows they need (the prepared frame is indexed by
row position, with known divisions, see :func:`prepare_table`), so a map of
10^7-10^8 points stays interactive on the server.

Examples
--------
>>> import pandas as pd
>>> table = pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0], "snr": [10.0, 20.0]})
>>> m = latent_map(table, color_by="snr")
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# the map's table helpers, pointer lookups and side plots live in their own modules; they are re-exported here
# so that ``from latentsky.viz import latent as vz`` gives the app everything it draws with
from latentsky.viz.pick import PixelIndex, nearest_point, points_in_box, points_in_polygon  # noqa: F401
from latentsky.viz.plots import bokeh_backend, cutout_plot, empty_spectrum_plot, loss_curve, spectrum_plot  # noqa: F401
from latentsky.viz.table import (  # noqa: F401
    CATEGORY_COLORS,
    COORDS,
    INDEX_COLUMN,
    LOD_TIMEOUT_MS,
    MAX_CATEGORIES,
    colour_columns,
    column_bounds,
    column_kind,
    hover_columns,
    is_dask,
    n_rows,
    prepare_table,
    take_rows,
)


def aggregator_for(table: pd.DataFrame, color_by: str):
    """The Datashader reduction that colours pixels by ``color_by``.

    ``count`` -> point density; a numeric column -> its mean in the pixel;
    a categorical column with few values -> counts per category (an
    ImageStack, one colour per category); a categorical with many values ->
    the largest category code in the pixel.
    """
    import datashader as ds

    if color_by in (None, "", "count"):
        return ds.count()
    if color_by not in table.columns:
        raise KeyError(f"color_by: no column {color_by!r} in the latent table")
    s = table[color_by]
    if isinstance(s.dtype, pd.CategoricalDtype):
        if len(s.cat.categories) <= MAX_CATEGORIES:
            return ds.by(color_by, ds.count())
        # too many categories for distinct colours: colour by category code (see latent_map)
        return ds.max(code_column(color_by))
    return ds.mean(color_by)


def code_column(col: str) -> str:
    """Name of the integer-code column added for a categorical column with many categories."""
    return f"{col} (code)"


def latent_map(
    table: pd.DataFrame,
    *,
    color_by: str = "count",
    coords=COORDS,
    width: int = 700,
    height: int = 600,
    hover: bool = True,
    cmap: str = "viridis",
    spread: int = 3,
    x_range=None,
    y_range=None,
    title: str = "",
    prepared: bool = False,
):
    """A Datashader-aggregated, server-coloured, dynamically spread latent map.

    Parameters
    ----------
    table : DataFrame
        The latent table (``x``, ``y`` and metadata columns).
    color_by : str
        ``"count"`` or a column name (see :func:`colour_columns`).
    coords : pair of str
        Coordinate columns.
    width, height : int
        Plot size in screen pixels (also the raster size, so the image sent has this many pixels).
    hover : bool
        Add Bokeh's hover tool (the pointer's position).  The metadata of the spectrum
        under the cursor comes from :class:`PixelIndex`, which a view asks only when the pointer
        moves, so zooming costs no more than plain Datashader.
    cmap : str
        Colour map for density and numeric columns.
    spread : int
        Largest spreading, in pixels, that ``dynspread`` may apply to isolated points.
    x_range, y_range : pair of float, optional
        Initial view (e.g. read from the URL).
    title : str
        Plot title.
    prepared : bool
        The table already went through :func:`prepare_table` (saves a copy at 10^7 rows).

    Returns
    -------
    holoviews.DynamicMap
        Re-aggregated by Datashader on every zoom or pan.
    """
    import datashader as ds
    import datashader.transfer_functions as tf
    from holoviews.plotting.util import process_cmap

    from latentsky.viz.raster import count_points
    from latentsky.viz.shading import lookup_table, shade_categories, shade_values

    hv = bokeh_backend()
    from latentsky.viz.frames import MapFrame  # registers its Bokeh plot

    data = table if prepared else prepare_table(table, coords=coords)
    agg = aggregator_for(data, color_by)
    cols = []
    if getattr(agg, "column", None) == code_column(color_by):
        data = data.assign(**{code_column(color_by): data[color_by].cat.codes.astype("i4")})
        cols = [code_column(color_by)]
    elif color_by not in ("count", None, ""):
        cols = [color_by]
    frame_table = data[list(coords) + cols]  # only the columns the aggregation reads
    is_stack = isinstance(agg, ds.by)
    # the densities and counts per category of a pandas table: counted by our kernels, on every core
    # (see latentsky.viz.raster); a column's mean or maximum and Dask tables: by Datashader
    counted = None
    if not is_dask(data) and (color_by in ("count", None, "") or is_stack):
        counted = (
            frame_table[coords[0]].to_numpy(),
            frame_table[coords[1]].to_numpy(),
            data[color_by].cat.codes.to_numpy() if is_stack else None,
            len(data[color_by].cat.categories) if is_stack else 1,
        )
    density = color_by in ("count", None, "")
    opts = dict(
        width=width,
        height=height,
        tools=["tap", "box_select", "lasso_select"] + (["hover"] if hover else []),
        active_tools=["wheel_zoom"],
        title=title,
        xlabel=coords[0],
        ylabel=coords[1],
        framewise=False,
        lod={"timeout": LOD_TIMEOUT_MS},
    )
    if hover:  # the pixel's colour means nothing to read; the spectrum's metadata come from PixelIndex
        opts.update(hover_tooltips=[(coords[0], "$x"), (coords[1], "$y")])
    if is_stack:
        colours = CATEGORY_COLORS[: len(data[color_by].cat.categories)]
    else:
        palette = process_cmap(cmap, 256)
        lut = lookup_table(palette, min_alpha=40 if density else 255)
        view = {"span": (float("nan"), float("nan"))}  # the last frame's colour range, for its colour bar
        if not density:
            opts.update(hooks=[_colour_bar_hook(palette, view, color_by)])
    extent = []  # the data's bounds, the view before the browser sends one (computed once, when first needed)

    def frame(x_range=None, y_range=None):
        # The aggregation (Datashader's mapping), our colouring, Datashader's dynspread of the coloured
        # image: what HoloViews' rasterize + dynspread + shade do, without their element copies and checks
        # (~13 ms of the 38 per zoom at 10^6 points, bench/render.py) and without recording a data pipeline.
        if x_range is None or y_range is None:
            if not extent:
                extent.extend(_padded(lo, hi) for lo, hi in column_bounds(frame_table, coords))
            x_range, y_range = x_range or extent[0], y_range or extent[1]
        (x0, x1), (y0, y1) = x_range, y_range
        if counted is not None and x1 > x0 and y1 > y0:
            xs, ys, codes, k = counted
            counts = count_points(xs, ys, x_range, y_range, width, height, codes, k)
        else:
            cvs = ds.Canvas(plot_width=width, plot_height=height, x_range=tuple(x_range), y_range=tuple(y_range))
            counts = cvs.points(frame_table, coords[0], coords[1], agg).values
        if is_stack:
            rgba = shade_categories(counts, colours)
        else:
            rgba, view["span"] = shade_values(counts, lut, how="eq_hist" if density else "linear")
        image = tf.Image(rgba.view(np.uint32)[..., 0], dims=[coords[1], coords[0]])
        rgba = tf.dynspread(image, threshold=0.5, max_px=spread).values.view(np.uint8).reshape(rgba.shape)
        # top row first, as a NumPy-backed RGB expects (HoloViews validates an xarray one's grid again)
        return MapFrame(rgba[::-1], kdims=list(coords), bounds=(x0, y0, x1, y1)).opts(
            backend="bokeh", clone=False, **opts
        )

    rng = hv.streams.RangeXY(
        x_range=None if x_range is None else tuple(x_range), y_range=None if y_range is None else tuple(y_range)
    )
    return hv.DynamicMap(frame, streams=[rng])


def _padded(lo: float, hi: float) -> tuple[float, float]:
    """A range holding ``[lo, hi]`` that Datashader can grid: 0-1 when unknown, widened by 0.5 when empty."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return 0.0, 1.0
    return (lo - 0.5, hi + 0.5) if hi <= lo else (lo, hi)


def _colour_bar_hook(palette, view: dict, label: str):
    """A HoloViews plot hook that keeps a colour bar of ``view["span"]`` (the last frame's range) beside the map.

    The image is coloured on the server, so its colour mapper serves the bar alone: moving its
    ``low``/``high`` at each zoom redraws the bar, not the image.
    """

    def hook(plot, element):
        from bokeh.models import ColorBar, LinearColorMapper

        lo, hi = view["span"]
        if not (np.isfinite(lo) and np.isfinite(hi)):
            lo, hi = 0.0, 1.0
        bars = [r for r in plot.state.right if isinstance(r, ColorBar)]
        if bars:
            bars[0].color_mapper.update(low=lo, high=hi if hi > lo else lo + 1e-12)
        else:
            mapper = LinearColorMapper(palette=list(palette), low=lo, high=hi if hi > lo else lo + 1e-12)
            plot.state.add_layout(ColorBar(color_mapper=mapper, title=label, width=12), "right")

    return hook


def category_legend(table: pd.DataFrame, color_by: str) -> list[tuple[str, str]]:
    """``(category, colour)`` pairs of a map coloured by a categorical column (empty otherwise)."""
    if color_by not in table.columns or not isinstance(table[color_by].dtype, pd.CategoricalDtype):
        return []
    cats = list(table[color_by].cat.categories)
    if len(cats) > MAX_CATEGORIES:
        return []
    return [(str(c), CATEGORY_COLORS[i]) for i, c in enumerate(cats)]


def warm_up() -> float:
    """Compile Datashader's aggregations once (numba), so the first map a user sees does not pause.

    Runs the map's own code path (aggregation, colouring, dynspread) on a tiny
    table for each kind of colouring, and the hover's index pass.  Returns the
    seconds it took (a few seconds in a fresh process, ~0 afterwards).
    """
    import time

    t0 = time.perf_counter()
    n = 64
    for coord in ("f8", "f4"):  # numba compiles per coordinate type; big tables keep float32 ones
        xy = np.linspace(0, 1, n).astype(coord)
        df = prepare_table(
            pd.DataFrame(
                {
                    "x": xy,
                    "y": xy,
                    "v": np.linspace(0, 1, n),
                    "f": xy.astype("f4"),
                    "i": np.arange(n, dtype="i4"),
                    "c": pd.Categorical(["a", "b"] * (n // 2)),
                }
            )
        )
        for colour in ("count", "v", "f", "i", "c"):
            latent_map(df, color_by=colour, width=32, height=32, prepared=True)[()]
        PixelIndex(df, 32, 32).lookup(0.5, 0.5, (0, 1), (0, 1))
    return time.perf_counter() - t0
