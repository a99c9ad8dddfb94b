"""The ADQL the ESO client sends: a query of ESO's ``ivoa.ObsCore`` table, with a cone or an uploaded target list.

Positions and radii are in degrees, times are MJD on ``t_min`` (the
observation start); text values are quoted as ADQL string literals.
"""

from __future__ import annotations

from latentsky.archives.base import parse_coordinates, parse_radius, parse_time
from latentsky.exceptions import CoordinateError

OBSCORE_COLUMNS = (
    "dp_id",
    "obs_collection",
    "instrument_name",
    "dataproduct_type",
    "target_name",
    "s_ra",
    "s_dec",
    "t_min",
    "t_max",
    "t_exptime",
    "em_min",
    "em_max",
    "access_url",
    "access_format",
    "access_estsize",
)
"""The ObsCore columns asked for (all exist in ESO's ``ivoa.ObsCore``)."""


def quote(text: str) -> str:
    """``text`` as an ADQL string literal (single quotes doubled)."""
    return "'" + str(text).replace("'", "''") + "'"


def obscore_adql(
    *,
    collection: str | None = "HARPS",
    instrument: str | None = None,
    dataproduct_type: str | None = "spectrum",
    target_name: str | None = None,
    coordinates=None,
    radius=None,
    start=None,
    end=None,
    upload: str | None = None,
    top: int | None = None,
) -> str:
    """The ADQL for one query (no network).

    Parameters
    ----------
    collection, instrument, dataproduct_type, target_name : str or None
        Exact matches on ``obs_collection``, ``instrument_name``,
        ``dataproduct_type`` and ``target_name``; None leaves a column free.
    coordinates : SkyCoord, optional
        Centre of a cone (scalar), any frame.
    radius : Angle
        Cone radius.
    start, end : Time, str or float (MJD), optional
        ``start <= t_min < end``.
    upload : str, optional
        Name of an uploaded table with ``ra, dec, radius`` (degrees) columns to join on.
    top : int, optional
        ``SELECT TOP``.
    """
    where = []
    for column, value in (
        ("obs_collection", collection),
        ("instrument_name", instrument),
        ("dataproduct_type", dataproduct_type),
        ("target_name", target_name),
    ):
        if value is not None:
            where.append(f"{column} = {quote(value)}")
    if coordinates is not None and upload is None:
        c = parse_coordinates(coordinates)
        if not c.isscalar:
            raise CoordinateError("coordinates: build_query takes one position; upload a table for many")
        r = parse_radius(radius).deg
        where.append(
            f"CONTAINS(POINT('ICRS', s_ra, s_dec), "
            f"CIRCLE('ICRS', {float(c.ra.deg)!r}, {float(c.dec.deg)!r}, {float(r)!r})) = 1"
        )
    t0, t1 = parse_time(start, parameter="start"), parse_time(end, parameter="end")
    if t0 is not None and t1 is not None and t1 <= t0:
        raise CoordinateError(f"end ({t1.isot}) must be after start ({t0.isot})")
    if t0 is not None:
        where.append(f"t_min >= {float(t0.mjd)!r}")
    if t1 is not None:
        where.append(f"t_min < {float(t1.mjd)!r}")
    prefix = "o." if upload else ""
    select = ", ".join(prefix + c for c in OBSCORE_COLUMNS)
    head = f"SELECT {'TOP %d ' % top if top else ''}{select}"
    if upload:
        where = [
            w.replace("t_min", "o.t_min")
            .replace("obs_collection", "o.obs_collection")
            .replace("instrument_name", "o.instrument_name")
            .replace("dataproduct_type", "o.dataproduct_type")
            .replace("target_name", "o.target_name")
            for w in where
        ]
        return (
            f"{head}, t.target_index FROM ivoa.ObsCore AS o JOIN TAP_UPLOAD.{upload} AS t ON "
            "1 = CONTAINS(POINT('ICRS', o.s_ra, o.s_dec), CIRCLE('ICRS', t.ra, t.dec, t.radius))"
            + (" WHERE " + " AND ".join(where) if where else "")
        )
    return f"{head} FROM ivoa.ObsCore" + (" WHERE " + " AND ".join(where) if where else "")
