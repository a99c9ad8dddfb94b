"""The SkyServer SQL the SDSS client sends: the columns asked, cone blocks per position, class pages, look-ups by id.

- Positions become ``UNION ALL`` blocks of ``dbo.fGetNearbySpecObjEq(ra, dec, r)``
  (``fGetNearbyObjEq`` for photometry), each tagged with its position's ``idx``.
- A whole class is read in keyset pages ordered by (plate, mjd, fiber).
- A catalog of spectra is looked up by ``(plate = P AND mjd = M AND fiberID IN (...)) OR ...``.

Angles are in degrees in the SQL text, radii in arcminutes (SkyServer's functions take arcmin).
"""

from __future__ import annotations

import numpy as np
from astropy import units as u

from latentsky.archives.base import parse_coordinates, parse_radius
from latentsky.exceptions import CoordinateError

SPEC_COLUMNS = (
    "s.specObjID AS specobjid",
    "s.ra",
    "s.dec",
    "s.z",
    "s.class",
    "s.subClass AS subclass",
    "s.plate",
    "s.mjd",
    "s.fiberID AS fiberid",
    "s.run2d",
    "s.instrument",
)
"""SpecObj columns asked for."""

PHOTO_COLUMNS = (
    "p.objID AS objid",
    "p.ra",
    "p.dec",
    "p.run",
    "p.rerun",
    "p.camcol",
    "p.field",
    "p.type",
    "p.psfMag_u",
    "p.psfMag_g",
    "p.psfMag_r",
    "p.psfMag_i",
    "p.psfMag_z",
)
"""PhotoObj columns asked for."""

_CLASSES = ("GALAXY", "QSO", "STAR")


def spectra_sql(
    *,
    coordinates=None,
    radius=None,
    spec_class: str | None = None,
    top: int | None = None,
    first_index: int = 0,
    paged: bool = False,
    after: tuple | None = None,
) -> str:
    """The SQL for spectra: by class/TOP (``paged``: ordered by plate, mjd, fiber, starting ``after``
    such a triple), or per position (``UNION ALL`` of cone blocks; ``radius`` default 2 arcsec)."""
    cols = ", ".join(SPEC_COLUMNS)
    where = []
    if spec_class is not None:
        if str(spec_class).upper() not in _CLASSES:
            raise CoordinateError(f"spec_class: expected one of {_CLASSES}, got {spec_class!r}")
        where.append(f"s.class = '{str(spec_class).upper()}'")
    if coordinates is None:
        if after is not None:  # the next page: rows after (plate, mjd, fiber) in that order
            p, m, f = (int(v) for v in after)
            where.append(f"(s.plate > {p} OR (s.plate = {p} AND (s.mjd > {m} OR (s.mjd = {m} AND s.fiberID > {f}))))")
        head = f"SELECT {'TOP %d ' % top if top else ''}{cols} FROM SpecObj AS s"
        return (
            head
            + (" WHERE " + " AND ".join(where) if where else "")
            + (" ORDER BY s.plate, s.mjd, s.fiberID" if paged else "")
        )
    coords = parse_coordinates(coordinates)
    r_arcmin = parse_radius(radius if radius is not None else 2 * u.arcsec).to_value(u.arcmin)
    extra = (" WHERE " + " AND ".join(where)) if where else ""
    blocks = []
    ra, dec = np.atleast_1d(coords.ra.deg), np.atleast_1d(coords.dec.deg)
    for i, (a, d) in enumerate(zip(ra, dec), start=first_index):
        blocks.append(
            f"SELECT {i} AS idx, {cols} FROM SpecObj AS s JOIN dbo.fGetNearbySpecObjEq("
            f"{float(a):.7f}, {float(d):.7f}, {float(r_arcmin):.6g}) AS n ON s.specObjID = n.specObjID" + extra
        )
    return " UNION ALL ".join(blocks)


def photometry_sql(*, coordinates, radius=None, first_index: int = 0) -> str:
    """The SQL for photometric objects around each position (``radius`` default 2 arcsec)."""
    coords = parse_coordinates(coordinates)
    r_arcmin = parse_radius(radius if radius is not None else 2 * u.arcsec).to_value(u.arcmin)
    cols = ", ".join(PHOTO_COLUMNS)
    ra, dec = np.atleast_1d(coords.ra.deg), np.atleast_1d(coords.dec.deg)
    return " UNION ALL ".join(
        f"SELECT {i} AS idx, {cols} FROM PhotoObj AS p JOIN dbo.fGetNearbyObjEq({float(a):.7f}, {float(d):.7f}, "
        f"{float(r_arcmin):.6g}) AS n ON p.objID = n.objID"
        for i, (a, d) in enumerate(zip(ra, dec), start=first_index)
    )


def identifiers_sql(keys) -> str:
    """The SQL for the spectra named by rows of ``(plate, mjd, fiberid)``, grouped by plate and MJD."""
    groups: dict = {}
    for p, m, f in keys:
        groups.setdefault((int(p), int(m)), []).append(str(int(f)))
    where = " OR ".join(
        f"(s.plate = {p} AND s.mjd = {m} AND s.fiberID IN ({', '.join(fs)}))" for (p, m), fs in groups.items()
    )
    return f"SELECT {', '.join(SPEC_COLUMNS)} FROM SpecObj AS s WHERE {where}"
