"""Latent tables as the map reads them: which columns colour it, row counts and row reads (pandas or Dask),
coordinate bounds, and :func:`prepare_table` (text columns to sorted categoricals, plus the row position)."""

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

CATEGORY_COLORS = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#c7c7c7",
    "#dbdb8d",
    "#9edae5",
]


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
    if isinstance(series.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(series) or series.dtype == object:
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
        if (
            not pd.api.types.is_numeric_dtype(s)
            and not isinstance(s.dtype, pd.CategoricalDtype)
            and not pd.api.types.is_bool_dtype(s)
        ):
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
    text = [
        c
        for c in table.columns
        if c not in coords
        and not pd.api.types.is_numeric_dtype(table[c].dtype)
        and not isinstance(table[c].dtype, pd.CategoricalDtype)
        and not pd.api.types.is_bool_dtype(table[c].dtype)
    ]
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
    return dd.from_delayed(
        [dask.delayed(with_index)(parts[k], int(starts[k])) for k in keep],
        meta=meta,
        divisions=divisions,
        verify_meta=False,
    )


def hover_columns(table: pd.DataFrame, *, coords=COORDS, limit: int = 8) -> list[str]:
    """Columns worth showing in the hover: the catalog metadata a user recognises, in a fixed order."""
    preferred = [
        "id",
        "object",
        "instrument",
        "spec_class",
        "cluster",
        "mjd",
        "snr",
        "anomaly",
        "redshift",
        "ra",
        "dec",
    ]
    cols = [c for c in preferred if c in table.columns]
    cols += [
        c
        for c in table.columns
        if c not in cols and c not in coords and c != INDEX_COLUMN and c not in ("path", "sha256", "row", "format")
    ]
    return cols[:limit]
