"""The local archive's UKIDSS WFCAM Science Archive (WSA): the pages astroquery.ukidss reads.

astroquery.ukidss (its WFAU base class) asks ``GetImage`` for the cut-outs
around a position and follows the links of the result page (renaming
``getImage`` to ``getFImage`` to get FITS), and asks ``WSASQL`` for the
sources around a position and reads the VOTable its result page links to.
It looks for ``row`` (images) or ``query finished`` (sources) in the pages,
and stops at any page containing the word "error".  The local WSA answers:

- ``/wsa/GetImage``: one row per band covering the position (the folder's
  UKIDSS images, else the synthetic sky's UKIDSS footprint);
- ``/wsa/getFImage``: the cut-out, ``xsize`` x ``ysize`` arcmin at 0.4
  arcsec per pixel (synthetic ones marked ``SYNTHSKY = T``);
- ``/wsa/WSASQL`` and ``/wsa/tmp/results_<query>.xml``: the sources of the
  synthetic sky (:mod:`.sky`) within ``radius``, with magnitudes, as a
  VOTable whose description says they are synthetic.

Requests carry their parameters in the links (no state is kept).
"""

from __future__ import annotations

import base64
import io
import json
from urllib.parse import urlencode

import numpy as np

from latentsky.archives.local import sky
from latentsky.archives.local.images import survey_fits
from latentsky.archives.local.server import HTTPError, Request, Response

FILTERS = {"1": "Z", "2": "Y", "3": "J", "4": "H", "5": "K"}
"""astroquery's ``filterID`` -> WFCAM band."""

PIXEL_ARCSEC = 0.4
ZERO_POINT = 22.5
"""Magnitude of a synthetic source of unit flux."""


def _position(request: Request) -> tuple[float, float]:
    try:
        ra, dec = float(request.param("ra", "nan")), float(request.param("dec", "nan"))
    except ValueError as err:
        raise HTTPError(400, f"ra and dec must be numbers (degrees): {err}") from err
    if (request.param("sys") or "J").upper() == "G":  # galactic l, b
        from astropy.coordinates import SkyCoord

        icrs = SkyCoord(ra, dec, unit="deg", frame="galactic").icrs
        ra, dec = float(icrs.ra.deg), float(icrs.dec.deg)
    if not (np.isfinite([ra, dec]).all() and -90 <= dec <= 90):
        raise HTTPError(400, f"bad position ra={ra} dec={dec}")
    return ra % 360.0, dec


def _covers(archive, band: str, ra: float, dec: float) -> bool:
    survey = f"UKIDSS-{band}"
    if any(im.survey.lower() == survey.lower() and im.contains(ra, dec) for im in archive.catalog.images):
        return True
    found = sky.survey_band(survey)
    return found is not None and sky.in_footprint(found[0], ra, dec)


def get_image(archive, request: Request) -> Response:
    """``GetImage``: the cut-outs of the bands covering the position, as links."""
    ra, dec = _position(request)
    asked = str(request.param("filterID") or "all")
    bands = list(FILTERS.values())[1:] if asked == "all" else [FILTERS.get(asked)]
    if None in bands:
        raise HTTPError(400, f"unknown filterID {asked!r}; known: {sorted(FILTERS)} or all")
    xsize = float(request.param("xsize") or 1.0)
    ysize = float(request.param("ysize") or xsize)
    base = request.server.base_url if request.server is not None else ""
    rows = []
    for band in bands:
        if not _covers(archive, band, ra, dec):
            continue
        query = urlencode({"ra": f"{ra:.7f}", "dec": f"{dec:.7f}", "band": band, "xsize": xsize, "ysize": ysize})
        rows.append(
            f'<tr><td><a href="{base}/wsa/getImage?{query}" target=show>show</a></td><td nowrap>{band}</td></tr>'
        )
    page = (
        f"<html><body><h3>GetImage cut-out results</h3><br><b>J2000 coords:</b> RA: {ra:.7f} Dec: {dec:.7f}"
        f'<table border="1">{"".join(rows)}</table>\n{len(rows)} rows returned.\n</body></html>'
    )
    return Response.text(page, content_type="text/html")


def get_fimage(archive, request: Request) -> Response:
    """``getFImage``: one band's cut-out as FITS."""
    ra, dec = _position(request)
    band = request.param("band") or ""
    try:
        xsize, ysize = float(request.param("xsize") or 1.0), float(request.param("ysize") or 1.0)
    except ValueError as err:
        raise HTTPError(400, f"xsize, ysize must be arcminutes: {err}") from err
    width, height = (max(1, int(round(s * 60 / PIXEL_ARCSEC))) for s in (xsize, ysize))
    if band not in FILTERS.values() or width * height > 4096 * 4096:
        raise HTTPError(400, f"band must be one of {sorted(FILTERS.values())} and the cut-out at most 27 arcmin")
    body = survey_fits(archive, f"UKIDSS-{band}", f"UKIDSS {band}", ra, dec, width, height, width * PIXEL_ARCSEC / 3600)
    if body is None:
        raise HTTPError(404, f"no UKIDSS {band} image at ra={ra} dec={dec}")
    return Response(body, content_type="application/fits")


def wsasql(archive, request: Request) -> Response:
    """``WSASQL`` (a region query): a page saying the query finished, linking to its VOTable."""
    ra, dec = _position(request)
    try:
        radius = float(request.param("radius") or 1.0)
    except ValueError as err:
        raise HTTPError(400, f"radius must be arcminutes: {err}") from err
    if not 0 < radius <= 90:
        raise HTTPError(400, f"radius must be in (0, 90] arcmin, got {radius}")
    token = base64.urlsafe_b64encode(json.dumps({"ra": ra, "dec": dec, "radius": radius}).encode()).decode()
    base = request.server.base_url if request.server is not None else ""
    page = (
        f"<html><body><h1>WSA Database - SQL Query Results</h1><p>Synthetic sources of the latentsky local "
        f"archive around RA {ra:.6f} Dec {dec:.6f}, radius {radius:g} arcmin.</p>"
        f'<p><a href="{base}/wsa/tmp/results_{token}.xml">VOTable</a></p>'
        "<p><b>QUERY FINISHED</b></p></body></html>"
    )
    return Response.text(page, content_type="text/html")


def results(archive, request: Request) -> Response:
    """The VOTable of a region query: the synthetic UKIDSS sources within the radius."""
    from astropy.io.votable import from_table, writeto
    from astropy.table import Table

    try:
        asked = json.loads(
            base64.urlsafe_b64decode(request.path_params["name"].removeprefix("results_").removesuffix(".xml"))
        )
    except ValueError:
        raise HTTPError(404, f"no such result: {request.path}") from None
    ra, dec, radius = float(asked["ra"]), float(asked["dec"]), float(asked["radius"])
    family = sky.FAMILIES["UKIDSS"]
    src = (
        sky.sources(family, ra, dec, radius / 60.0)
        if sky.in_footprint(family, ra, dec)
        else {
            "ra": np.zeros(0),
            "dec": np.zeros(0),
            "flux": np.zeros(0),
            "colour": np.zeros(0),
            "extended": np.zeros(0, bool),
        }
    )
    d = (
        np.degrees(
            np.arccos(
                np.clip(
                    np.sin(np.radians(dec)) * np.sin(np.radians(src["dec"]))
                    + np.cos(np.radians(dec)) * np.cos(np.radians(src["dec"])) * np.cos(np.radians(src["ra"] - ra)),
                    -1,
                    1,
                )
            )
        )
        * 60.0
    )
    keep = d <= radius
    table = Table(
        {
            "sourceID": np.arange(keep.sum(), dtype=np.int64) + 400000000000,
            "RA": src["ra"][keep],
            "Dec": src["dec"][keep],
            "mergedClass": np.where(src["extended"][keep], 1, -1).astype(np.int16),
        }
    )
    for band in ("Y", "J", "H", "K"):
        flux = src["flux"][keep] * family.bands[band] ** src["colour"][keep]
        table[f"{band if band != 'K' else 'K_1'}AperMag3"] = (ZERO_POINT - 2.5 * np.log10(flux)).astype(np.float32)
    table["distance"] = d[keep]
    votable = from_table(table)
    votable.resources[0].tables[0].description = "latentsky synthetic sky: not real data (UKIDSS-like sources)"
    out = io.BytesIO()
    writeto(votable, out)
    return Response(out.getvalue(), content_type="text/xml")


ROUTES = (
    ("GET", "/wsa/GetImage", get_image),
    ("GET", "/wsa/getFImage", get_fimage),
    ("GET", "/wsa/WSASQL", wsasql),
    ("GET", "/wsa/tmp/{name}", results),
)
"""``(method, path, handler)`` of the local WSA, registered by :class:`~.archive.LocalArchive`."""
