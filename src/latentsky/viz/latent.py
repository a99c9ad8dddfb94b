"""The latent map and the spectrum view as HoloViews elements (no Panel here).

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

COORDS = ("x", "y")
INDEX_COLUMN = "_index"
"""Column holding each row's position, added to the table the map draws, so that the hover
(:class:`PixelIndex`) and taps can name the row they hit."""

LOD_TIMEOUT_MS = 10
"""How long BokehJS waits after the last wheel or pan event before it tells the server the view changed
(the plot's ``lod_timeout``; HoloViews' default, 500 ms, was most of the zoom-to-paint time).  A zoom
that goes on sends a view per pause of the wheel; views that come in while the server renders are
merged into its next render (see :data:`latentsky.ui.explore.RANGE_DEBOUNCE_MS`)."""

MAX_CATEGORIES = 20
"""Categorical columns with more distinct values than this are coloured by their codes
(one continuous colour map) instead of one colour per category."""

CATEGORY_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                   "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
                   "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5"]


def colour_columns(table: pd.DataFrame, *, coords=COORDS) -> list[str]:
    """Columns a map can be coloured by: numbers, and text/categories with few distinct values.

    Parameters
    ----------
    table : DataFrame
        The latent table.
    coords : pair of str
        The coordinate columns, which are left out.

    Returns
    -------
    list of str
        ``"count"`` (density) first, then the usable columns in table order.
    """
    out = ["count"]
    for col in table.columns:
        if col in coords or col == INDEX_COLUMN or col in ("row",):
            continue
        kind = column_kind(table[col])
        if kind != "other":
            out.append(col)
    return out


def is_dask(table) -> bool:
    """True for a Dask DataFrame or Series (without importing Dask when it is not loaded)."""
    return type(table).__module__.startswith("dask")


def n_rows(table) -> int:
    """Rows of a table; for a Dask frame prepared by :func:`prepare_table`, from its divisions (no pass)."""
    if is_dask(table):
        if INDEX_COLUMN in table.columns and table.known_divisions:
            return int(table.divisions[-1]) + 1 if table.npartitions and table.divisions[0] is not None else 0
        return int(table.shape[0].compute())
    return len(table)


def take_rows(table, positions) -> pd.DataFrame:
    """The rows at positions ``positions`` (ascending for a Dask frame), as a pandas DataFrame.

    A prepared Dask frame is indexed by row position with known divisions, so only the partitions
    holding those rows are read.
    """
    positions = np.asarray(positions, dtype=np.int64)
    if is_dask(table):
        if len(positions) == 0:
            return table._meta.iloc[:0]
        return table.loc[np.sort(positions)].compute()
    return table.iloc[positions]


def column_bounds(table, coords=COORDS) -> list[tuple[float, float]]:
    """``(min, max)`` of each coordinate column, NaN ignored (one parallel pass for a Dask frame)."""
    if is_dask(table):
        import dask

        vals = dask.compute(*[agg for c in coords for agg in (table[c].min(), table[c].max())])
        return [(float(vals[2 * k]), float(vals[2 * k + 1])) for k in range(len(coords))]
    out = []
    for c in coords:
        v = table[c].to_numpy()
        out.append((float(np.nanmin(v)), float(np.nanmax(v))) if len(v) else (np.nan, np.nan))
    return out


def column_kind(series: pd.Series) -> str:
    """``"numeric"``, ``"category"`` (text or categorical with at most :data:`MAX_CATEGORIES` values,
    or more, coloured by codes) or ``"other"`` (unusable, e.g. all-unique file paths)."""
    if pd.api.types.is_bool_dtype(series):
        return "category"
    if pd.api.types.is_numeric_dtype(series):
        return "numeric"
    if is_dask(series):
        # prepare_table made the text columns worth colouring categorical (with known categories)
        known = isinstance(series.dtype, pd.CategoricalDtype) and series.cat.known
        return "category" if known and len(series.cat.categories) > 1 else "other"
    if isinstance(series.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(series) \
            or series.dtype == object:
        n = len(series)
        # a column that names (almost) every row apart (ids, paths, hashes) colours nothing
        sample = series.iloc[: min(n, 100_000)]
        nunique = sample.nunique()
        if nunique <= 1 or nunique > max(MAX_CATEGORIES, 0.95 * len(sample)):
            return "other"
        return "category"
    return "other"


def prepare_table(table: pd.DataFrame, *, coords=COORDS) -> pd.DataFrame:
    """The table the map draws: text columns as categoricals (categories sorted), plus the row position.

    Categoricals make Datashader's per-category counts possible and its
    hover lookups cheap.  The input is not modified.  A Dask DataFrame gives
    a Dask DataFrame indexed by row position (see :func:`_prepare_dask`).

    Raises
    ------
    KeyError
        When a coordinate column is missing (the message names it).
    """
    for c in coords:
        if c not in table.columns:
            raise KeyError(f"latent table: no coordinate column {c!r} (columns: {', '.join(map(str, table.columns))})")
    if is_dask(table):
        return _prepare_dask(table, coords)
    out = table.copy(deep=False)
    for col in out.columns:
        s = out[col]
        if not pd.api.types.is_numeric_dtype(s) and not isinstance(s.dtype, pd.CategoricalDtype) \
                and not pd.api.types.is_bool_dtype(s):
            out[col] = s.astype("category")
        elif pd.api.types.is_bool_dtype(s):
            out[col] = s.astype(str).astype("category")
        elif isinstance(s.dtype, pd.CategoricalDtype) and _sorted_categories(s.cat.categories) is not None:
            out[col] = s.cat.reorder_categories(_sorted_categories(s.cat.categories))
    for c in coords:  # float32 coordinates stay float32 (half the memory at 10^7 rows)
        if not pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].astype("float64")
    out[INDEX_COLUMN] = np.arange(len(out), dtype="i8")
    return out


def _sorted_categories(categories) -> list | None:
    """The categories in sorted order when they are not (None when sorted or not comparable): the same
    colours and category codes whatever the order a table, a Parquet file or a Dask pass found them in."""
    cats = list(categories)
    try:
        order = sorted(cats)
    except TypeError:
        return None
    return None if order == cats else order


def _prepare_dask(table, coords):
    """:func:`prepare_table` for a Dask DataFrame: two passes (categories, partition lengths), nothing kept in
    memory.  Text columns become categoricals when their first partition shows few distinct values (an id
    or path column stays text, as it colours nothing); the frame is re-indexed by row position with known
    divisions, so :func:`take_rows` reads only the partitions it needs.  A prepared frame is returned as is.
    """
    import dask
    import dask.dataframe as dd

    if INDEX_COLUMN in table.columns and table.known_divisions:
        return table
    head = table.partitions[0].compute()
    text = [c for c in table.columns if c not in coords and not pd.api.types.is_numeric_dtype(table[c].dtype)
            and not isinstance(table[c].dtype, pd.CategoricalDtype) and not pd.api.types.is_bool_dtype(table[c].dtype)]
    few = [c for c in text if head[c].nunique() <= max(MAX_CATEGORIES, 0.95 * len(head))]
    # categoricals read from Parquet do not know their categories until a pass has seen them
    unknown = [c for c in table.columns if isinstance(table[c].dtype, pd.CategoricalDtype) and not table[c].cat.known]
    table = table.astype({c: "float64" for c in coords if not pd.api.types.is_float_dtype(table[c].dtype)})
    if few or unknown:
        table = table.categorize(columns=few + unknown)
    for c in few + unknown:
        order = _sorted_categories(table[c].cat.categories)
        if order is not None:
            table[c] = table[c].cat.reorder_categories(order)
    lengths = table.map_partitions(len).compute().to_numpy()
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    def with_index(part: pd.DataFrame, start: int) -> pd.DataFrame:
        idx = np.arange(start, start + len(part), dtype="i8")
        return part.assign(**{INDEX_COLUMN: idx}).set_axis(pd.Index(idx), axis=0)

    keep = [k for k in range(len(lengths)) if lengths[k]]
    parts = table.to_delayed()
    meta = with_index(table._meta, 0)
    if not keep:
        return dd.from_pandas(meta, npartitions=1)
    divisions = tuple(int(starts[k]) for k in keep) + (int(starts[-1]) - 1,)
    return dd.from_delayed([dask.delayed(with_index)(parts[k], int(starts[k])) for k in keep], meta=meta,
                           divisions=divisions, verify_meta=False)


def hover_columns(table: pd.DataFrame, *, coords=COORDS, limit: int = 8) -> list[str]:
    """Columns worth showing in the hover: the catalog metadata a user recognises, in a fixed order."""
    preferred = ["id", "object", "instrument", "spec_class", "cluster", "mjd", "snr", "anomaly", "redshift",
                 "ra", "dec"]
    cols = [c for c in preferred if c in table.columns]
    cols += [c for c in table.columns if c not in cols and c not in coords and c != INDEX_COLUMN
             and c not in ("path", "sha256", "row", "format")]
    return cols[:limit]


def _bokeh():
    """Load HoloViews' Bokeh backend (options below are Bokeh options) without changing the current one."""
    import holoviews as hv
    import holoviews.plotting.bokeh  # noqa: F401 - registers the backend and its options

    if hv.Store.current_backend is None:
        hv.Store.set_current_backend("bokeh")
    return hv


def latent_points(table: pd.DataFrame, *, coords=COORDS, vdims=None):
    """The latent table as :class:`holoviews.Points` (every other column a value dimension)."""
    import holoviews as hv

    if vdims is None:
        vdims = [c for c in table.columns if c not in coords]
    return hv.Points(table, kdims=list(coords), vdims=list(vdims))


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


def latent_map(table: pd.DataFrame, *, color_by: str = "count", coords=COORDS, width: int = 700,
               height: int = 600, hover: bool = True, cmap: str = "viridis", spread: int = 3,
               x_range=None, y_range=None, title: str = "", prepared: bool = False):
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

    hv = _bokeh()
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
        counted = (frame_table[coords[0]].to_numpy(), frame_table[coords[1]].to_numpy(),
                   data[color_by].cat.codes.to_numpy() if is_stack else None,
                   len(data[color_by].cat.categories) if is_stack else 1)
    density = color_by in ("count", None, "")
    opts = dict(width=width, height=height, tools=["tap", "box_select", "lasso_select"] + (["hover"] if hover else []),
                active_tools=["wheel_zoom"], title=title, xlabel=coords[0], ylabel=coords[1], framewise=False,
                lod={"timeout": LOD_TIMEOUT_MS})
    if hover:  # the pixel's colour means nothing to read; the spectrum's metadata come from PixelIndex
        opts.update(hover_tooltips=[(coords[0], "$x"), (coords[1], "$y")])
    if is_stack:
        colours = CATEGORY_COLORS[:len(data[color_by].cat.categories)]
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
            backend="bokeh", clone=False, **opts)

    rng = hv.streams.RangeXY(x_range=None if x_range is None else tuple(x_range),
                             y_range=None if y_range is None else tuple(y_range))
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
        win = idx[max(0, j - radius): j + radius + 1, max(0, i - radius): i + radius + 1]
        hits = np.argwhere(win >= 0)
        if len(hits) == 0:
            return None
        centre = np.array([min(j, radius), min(i, radius)])
        jj, ii = hits[np.argmin(((hits - centre) ** 2).sum(axis=1))]
        return int(win[jj, ii])


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
        df = prepare_table(pd.DataFrame({"x": xy, "y": xy, "v": np.linspace(0, 1, n), "f": xy.astype("f4"),
                                         "i": np.arange(n, dtype="i4"), "c": pd.Categorical(["a", "b"] * (n // 2))}))
        for colour in ("count", "v", "f", "i", "c"):
            latent_map(df, color_by=colour, width=32, height=32, prepared=True)[()]
        PixelIndex(df, 32, 32).lookup(0.5, 0.5, (0, 1), (0, 1))
    return time.perf_counter() - t0


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


def nearest_point(table: pd.DataFrame, x: float, y: float, *, coords=COORDS, x_scale: float = 1.0,
                  y_scale: float = 1.0, max_distance: float | None = None) -> int | None:
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
    if max_distance is not None and d2[i] > max_distance ** 2:
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

def spectrum_plot(wave, flux, *, weight=None, model=None, title: str = "", width: int = 700, height: int = 300,
                  model_label: str = "reconstruction"):
    """One spectrum as a HoloViews overlay, with its reconstruction drawn over it.

    Parameters
    ----------
    wave : array, Angstrom
        Wavelengths.
    flux : array
        Normalised flux.
    weight : array, optional
        Inverse variance; pixels with weight 0 (masked or off coverage) are not drawn.
    model : array, optional
        Reconstruction from the latent point, on the same grid.
    title : str
        Plot title (e.g. the spectrum id).

    Returns
    -------
    holoviews.Overlay
    """
    hv = _bokeh()
    wave = np.asarray(wave, dtype=float)
    flux = np.asarray(flux, dtype=float).copy()
    if weight is not None:
        flux[np.asarray(weight) <= 0] = np.nan
    curves = [hv.Curve((wave, flux), "wavelength", "flux", label="spectrum")
              .opts(color="#1f77b4", line_width=1, backend="bokeh")]
    if model is not None:
        m = np.asarray(model, dtype=float)
        curves.append(hv.Curve((wave, m), "wavelength", "flux", label=model_label)
                      .opts(color="#d62728", line_width=1, alpha=0.8, backend="bokeh"))
    return hv.Overlay(curves).opts(backend="bokeh", width=width, height=height, title=title, xlabel="wavelength (Angstrom)",
                                   ylabel="normalised flux", legend_position="top_right", show_grid=True)


def empty_spectrum_plot(message: str = "Tap a point on the map to see its spectrum", *, width: int = 700,
                        height: int = 300):
    """A placeholder for the spectrum panel before the first tap."""
    hv = _bokeh()
    return hv.Overlay([hv.Curve([], "wavelength", "flux")]).opts(
        backend="bokeh", width=width, height=height, title=message, xlabel="wavelength (Angstrom)", ylabel="normalised flux")


def cutout_plot(cutouts, *, size: int = 150):
    """Image cutouts one above the other, centred on the target, north up and east left (as the surveys' TAN
    images).

    Parameters
    ----------
    cutouts : sequence
        Objects with ``band``, ``image`` (H x W array, row 0 south) and ``pixel_scale`` (arcsec).
    size : int
        Width and height of each panel, screen pixels.

    Returns
    -------
    holoviews.Layout
        One greyscale image per band, its colour range clipped to the 1-99.5 percentiles (a
        bright source does not hide the field).
    """
    hv = _bokeh()
    panels = []
    for c in cutouts:
        # FITS row 0 is the south edge, an hv.Image's row 0 its top; columns already run east (left) to west
        img = np.flipud(np.asarray(c.image, dtype="f8"))
        h, w = img.shape
        half_w, half_h = w * c.pixel_scale / 2, h * c.pixel_scale / 2
        finite = img[np.isfinite(img)]
        lo, hi = np.percentile(finite, [1, 99.5]) if finite.size else (0.0, 1.0)
        panels.append(hv.Image(img, bounds=(-half_w, -half_h, half_w, half_h), kdims=["x (arcsec)", "y (arcsec)"],
                               vdims=[c.band]).opts(
            backend="bokeh", cmap="gray", clim=(float(lo), float(hi) if hi > lo else float(lo) + 1), width=size,
            height=size, title=f"{c.band} ({2 * half_w:.0f}\")", xaxis=None, yaxis=None, toolbar=None))
    return hv.Layout(panels).cols(1).opts(backend="bokeh", shared_axes=False)


def loss_curve(losses: pd.DataFrame, *, width: int = 600, height: int = 260):
    """Training losses per epoch, log scale (the Train step's live curve).

    Parameters
    ----------
    losses : DataFrame
        Column ``epoch`` and one column per Keras log (``loss``, ``val_loss``, ``data_error``...);
        ``loss`` and ``val_loss`` are drawn.  Empty: an empty plot waiting for the first epoch.

    Returns
    -------
    holoviews.NdOverlay
        One curve per drawn log, keyed by ``series`` (so a stream can add ``val_loss`` later).
    """
    hv = _bokeh()
    names = [c for c in ("loss", "val_loss") if c in losses.columns] if not losses.empty else []
    opts = dict(backend="bokeh", width=width, height=height, logy=True, show_grid=True, xlabel="epoch",
                ylabel="loss", legend_position="top_right", framewise=True)
    if not names:
        # one NaN point, no explicit limits: the axes then follow the data of later frames (framewise)
        empty = {"loss": hv.Curve((np.array([np.nan]), np.array([np.nan])), "epoch", "loss")}
        return hv.NdOverlay(empty, kdims="series").opts(title="loss (waiting for the first epoch)", **opts)
    curves = {c: hv.Curve((losses["epoch"].to_numpy(), losses[c].to_numpy()), "epoch", "loss")
              .opts(backend="bokeh", line_width=2, framewise=True) for c in names}
    last = losses.iloc[-1]
    return hv.NdOverlay(curves, kdims="series").opts(title=f"epoch {int(last['epoch'])}: loss {last['loss']:.4g}",
                                                     **opts)
