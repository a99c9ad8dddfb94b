"""The local archive's SDSS endpoints: SkyServer SQL search (CSV answers) and SAS spectrum files."""

from __future__ import annotations

import io
import re

import numpy as np
from astropy.table import Table

from latentsky.archives.local import adql
from latentsky.archives.local.files import fits_file_response
from latentsky.archives.local.server import HTTPError, Request, Response

ROW_LIMIT = 500_000
"""Most rows of one answer, as SkyServer's SQL search: longer results are cut, silently."""


def sql_search(archive, request: Request) -> Response:
    """SkyServer's SQL search as astroquery.sdss asks it (``GET /dr<N>/en/tools/search/x_results.aspx``,
    ``cmd``, ``format=csv``, ``searchtool=SQL``): a CSV answer, or an error text."""
    sql = request.param("cmd")
    if not sql:
        return Response.text("the cmd parameter (SQL) is missing", status=400)
    fmt = (request.param("format") or "csv").lower()
    if fmt != "csv":
        return Response.text(f"format={fmt!r} is not supported by the local SkyServer; use csv", status=400)
    try:
        result = run_skyserver_sql(sql, archive.catalog.specobj)
    except adql.AdqlError as err:
        # SkyServer answers SQL errors with an error text, not a table
        return Response.text(f"Error: {err}", status=400)
    return Response.text(skyserver_csv(result[:ROW_LIMIT]), content_type="text/plain; charset=utf-8")


def sas_file(archive, request: Request) -> Response:
    name = request.path_params["path"].rsplit("/", 1)[-1]
    m = re.fullmatch(r"spec-(\d+)-(\d+)-(\d+)\.fits", name)
    if not m:
        raise HTTPError(404, f"no such file: {request.path}")
    plate, mjd, fiber = (int(g) for g in m.groups())
    spec = archive.catalog.specobj
    hit = (spec["plate"] == plate) & (spec["mjd"] == mjd) & (spec["fiberid"] == fiber)
    if not hit.any():
        raise HTTPError(404, f"no spectrum plate={plate} mjd={mjd} fiber={fiber}")
    return fits_file_response(archive.catalog.path_of(spec["filename"][hit][0]))


_NEARBY = re.compile(
    r"^\s*SELECT\s+(?P<idx>-?\d+)\s+AS\s+idx\s*,\s*(?P<cols>.+?)\s+FROM\s+SpecObj\s+AS\s+(?P<alias>\w+)\s+"
    r"JOIN\s+dbo\.fGetNearbySpecObjEq\(\s*(?P<ra>[-+\d.eE]+)\s*,\s*(?P<dec>[-+\d.eE]+)\s*,\s*(?P<r>[-+\d.eE]+)\s*\)"
    r"\s+AS\s+\w+\s+ON\s+[\w.]+\s*=\s*[\w.]+\s*(?:WHERE\s+(?P<where>.+?))?\s*$",
    re.IGNORECASE | re.DOTALL,
)


def run_skyserver_sql(sql: str, specobj: Table) -> Table:
    """Run the SkyServer SQL our SDSS client sends on a SpecObj table.

    Two forms are understood: a plain ``SELECT ... FROM SpecObj AS s WHERE ...``
    (run as ADQL), and a ``UNION ALL`` of per-position blocks
    ``SELECT <i> AS idx, ... FROM SpecObj AS s JOIN dbo.fGetNearbySpecObjEq(ra, dec, r_arcmin) AS n
    ON s.specObjID = n.specObjID [WHERE ...]`` (run as a cone search per block).
    """
    tables = {"specobj": specobj}
    parts = re.split(r"\bUNION\s+ALL\b", sql, flags=re.IGNORECASE)
    results = []
    for part in parts:
        m = _NEARBY.match(part)
        if m is None:
            if len(parts) > 1:
                raise adql.AdqlError("UNION ALL is only supported between fGetNearbySpecObjEq blocks")
            return adql.run(part, tables)[0]
        try:
            ra, dec, r_deg = float(m["ra"]), float(m["dec"]), float(m["r"]) / 60.0  # SkyServer radii: arcminutes
        except ValueError:
            raise adql.AdqlError(
                f"fGetNearbySpecObjEq({m['ra']}, {m['dec']}, {m['r']}): ra, dec (deg) and "
                "radius (arcmin) must be numbers"
            ) from None
        cone = f"CONTAINS(POINT('ICRS', {m['alias']}.ra, {m['alias']}.dec), CIRCLE('ICRS', {ra}, {dec}, {r_deg})) = 1"
        where = cone if not m["where"] else f"{cone} AND ({m['where']})"
        table, _ = adql.run(f"SELECT {m['cols']} FROM SpecObj AS {m['alias']} WHERE {where}", tables)
        table.add_column(np.full(len(table), int(m["idx"])), name="idx", index=0)
        results.append(table)
    from astropy.table import vstack

    return vstack(results) if results else Table()


def skyserver_csv(table: Table) -> str:
    """SkyServer's CSV answer: a ``#Table1`` line, the header, the rows."""
    out = io.StringIO()
    out.write("#Table1\n")
    out.write(",".join(table.colnames) + "\n")
    for row in table:
        out.write(",".join(_csv_value(row[name]) for name in table.colnames) + "\n")
    return out.getvalue()


def _csv_value(value) -> str:
    if isinstance(value, (float, np.floating)):
        return repr(float(value)) if np.isfinite(value) else ""
    text = str(value)
    return f'"{text}"' if "," in text else text
