"""Exports of a selection: CSV, VOTable, and a download table for ``latentsky download``.

Pure functions from a :class:`pandas.DataFrame` to bytes, so the app's
buttons, the tests and scripts share them.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

EXPORT_FORMATS = {"csv": ".csv", "votable": ".vot", "download": ".ecsv"}
"""Export formats and the file suffix of each."""

INTERNAL_COLUMNS = ("_index",)


def _clean(table: pd.DataFrame) -> pd.DataFrame:
    """Drop the app's internal columns; categoricals back to plain text."""
    out = table.drop(columns=[c for c in INTERNAL_COLUMNS if c in table.columns])
    for col in out.columns:
        if isinstance(out[col].dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].astype(object).where(out[col].notna(), "").astype(str)
    return out.reset_index(drop=True)


def to_astropy(table: pd.DataFrame):
    """The selection as an astropy :class:`~astropy.table.Table` with units on ra/dec."""
    from astropy import units as u
    from astropy.table import Table

    t = Table.from_pandas(_clean(table))
    for col in ("ra", "dec"):
        if col in t.colnames:
            t[col].unit = u.deg
    if "mjd" in t.colnames:
        t["mjd"].unit = u.day
    return t


def to_csv(table: pd.DataFrame) -> bytes:
    """CSV with a header line, UTF-8."""
    return _clean(table).to_csv(index=False).encode()


def to_votable(table: pd.DataFrame) -> bytes:
    """A VOTable (TABLEDATA) that TOPCAT and Aladin read, clean for STILTS ``votlint``.

    Text columns are variable-length (``arraysize="*"``) and empty texts are nulls.
    """
    from astropy.io.votable import from_table
    from astropy.table import MaskedColumn

    t = to_astropy(table)
    for name in t.colnames:
        if t[name].dtype.kind in "US":
            t[name] = MaskedColumn(t[name], mask=t[name] == "")
    vot = from_table(t)
    for field in vot.get_first_table().fields:
        if field.datatype in ("char", "unicodeChar"):
            field.arraysize = "*"
    buf = io.BytesIO()
    vot.to_xml(buf)
    return buf.getvalue()


def download_table(table: pd.DataFrame, *, archive: str = "local"):
    """The selection as a table ``latentsky download`` (and the download manager) reads.

    Columns follow :data:`latentsky.archives.PRODUCT_COLUMNS`: ``archive, product_id, object, ra,
    dec, date, instrument, access_url``.  ``access_url`` is the table's own ``access_url`` column
    when it has one, else an ``http(s)`` ``path``, else the local file as a ``file://`` URI.

    Returns
    -------
    astropy.table.Table
    """
    from astropy.table import Table
    from astropy.time import Time

    t = _clean(table)
    n = len(t)
    if "access_url" in t.columns:
        urls = t["access_url"].astype(str).to_numpy()
    elif "path" in t.columns:
        urls = np.array(
            [
                p if p.startswith(("http://", "https://", "file://")) or not p else Path(p).resolve().as_uri()
                for p in t["path"].astype(str)
            ],
            dtype=object,
        )
    else:
        urls = np.full(n, "", dtype=object)
    if "mjd" in t.columns and n:
        mjd = t["mjd"].to_numpy(dtype=float)
        ok = np.isfinite(mjd)
        dates = np.full(n, "", dtype=object)
        if ok.any():
            dates[ok] = Time(mjd[ok], format="mjd").isot
    else:
        dates = np.full(n, "", dtype=object)

    def col(name, default=""):
        return t[name].to_numpy() if name in t.columns else np.full(n, default, dtype=object)

    out = Table(
        {
            "archive": col("archive", archive).astype(str),
            "product_id": col("id").astype(str),
            "object": col("object").astype(str),
            "ra": col("ra", np.nan).astype(float),
            "dec": col("dec", np.nan).astype(float),
            "date": dates.astype(str),
            "instrument": col("instrument").astype(str),
            "access_url": urls.astype(str),
        }
    )
    return out


def to_download_table(table: pd.DataFrame) -> bytes:
    """:func:`download_table` as ECSV (keeps column types; ``latentsky download TABLE`` reads it)."""
    buf = io.StringIO()
    download_table(table).write(buf, format="ascii.ecsv")
    return buf.getvalue().encode()


def export_bytes(table: pd.DataFrame, fmt: str) -> bytes:
    """Export ``table`` in ``fmt`` (one of :data:`EXPORT_FORMATS`)."""
    if fmt == "csv":
        return to_csv(table)
    if fmt == "votable":
        return to_votable(table)
    if fmt == "download":
        return to_download_table(table)
    raise ValueError(f"fmt: unknown export format {fmt!r}; known: {', '.join(EXPORT_FORMATS)}")
