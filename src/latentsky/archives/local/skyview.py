"""The local archive's SkyView: the pages and images astroquery.skyview asks for.

astroquery.skyview reads the query form (``/current/cgi/basicform.pl``: its
default values and the survey lists), sends the filled form to the form's
``action`` (``runquery.pl``), and follows the ``FITS`` links of the results
page.  The local SkyView answers the same three requests:

- the form: a page listing the surveys this archive can make (the SDSS,
  UKIDSS and FIRST bands of :mod:`.sky`), shaped like SkyView's own (form
  ``query``, ``select name='survey'`` per category, ``pixels`` default 300);
- ``runquery.pl``: a results page with one ``FITS`` link per survey asked,
  naming the image by its parameters (no state is kept);
- the image: a TAN image ``pixels`` wide over ``size`` degrees, from the
  folder's images where one covers the centre, else from the synthetic sky
  (marked ``SYNTHSKY = T``; blank off the survey).
"""

from __future__ import annotations

import base64
import html
import json

from latentsky.archives.local.images import survey_fits
from latentsky.archives.local.server import HTTPError, Request, Response

SURVEYS = {
    "Optical:SDSS": {"SDSSu": "SDSS-u", "SDSSg": "SDSS-g", "SDSSr": "SDSS-r", "SDSSi": "SDSS-i", "SDSSz": "SDSS-z"},
    "InfraredHighRes": {"UKIDSS-Y": "UKIDSS-Y", "UKIDSS-J": "UKIDSS-J", "UKIDSS-H": "UKIDSS-H", "UKIDSS-K": "UKIDSS-K"},
    "Radio": {"VLA FIRST (1.4 GHz)": "FIRST"},
}
"""SkyView category -> {SkyView survey name: local survey}, the names astroquery.skyview validates against."""

NATIVE_ARCSEC = {"SDSS": 0.396, "UKIDSS": 0.4, "FIRST": 1.8}
"""Pixel scale of an image whose ``size`` is not given, arcsec (the survey's own)."""

MAX_PIXELS = 2048


def form(archive, request: Request) -> Response:
    """The query form (``basicform.pl``)."""
    selects = "\n".join(
        f"<select class='selectbox' multiple size=7 NAME='survey' id='{html.escape(cat)}'>\n"
        + "\n".join(f"<option>{html.escape(name)}</option>" for name in names)
        + "\n</select>"
        for cat, names in SURVEYS.items()
    )
    page = f"""<!DOCTYPE html>
<html><head><title>SkyView Query Form (latentsky local archive)</title></head><body>
<form name="query" action="runquery.pl" method="GET" target="skyview_out">
<input type='text' name='Position' value='' size=40>
{selects}
<select name='coordinates' id='csys'><option selected>J2000</option><option>Galactic</option></select>
<select name='projection' id='proj'><option selected>Tan</option></select>
<input type='text' class='formtext' name='pixels' Value='300' SIZE=11 id='size_pix' >
<input type='text' class='formtext' name='size' SIZE=10 id='size_deg'>
<input TYPE='submit' Value='Submit Request'>
</form></body></html>
"""
    return Response.text(page, content_type="text/html; charset=utf-8")


def runquery(archive, request: Request) -> Response:
    """The results page: a ``FITS`` link per survey asked."""
    position = request.param("Position") or ""
    try:
        ra, dec = (float(x) for x in position.replace(",", " ").split()[:2])
        pixels = int(float(request.param("pixels") or 300))
        size = request.param("size") or ""
        size_deg = float(size.split(",")[0]) if size else None
    except ValueError as err:
        raise HTTPError(400, f"Position must be 'ra dec' in degrees (J2000), pixels and size numbers: {err}") from err
    surveys = request.query.get("survey", []) + request.form.get("survey", [])
    if not surveys or not 0 < pixels <= MAX_PIXELS or not -90 <= dec <= 90:
        raise HTTPError(400, "give a survey, a Position 'ra dec' (deg) and 0 < pixels <= 2048")
    known = {name: local for names in SURVEYS.values() for name, local in names.items()}
    rows = []
    for name in surveys:
        if name not in known:
            raise HTTPError(400, f"unknown survey {name!r}; this SkyView makes {sorted(known)}")
        token = _token({"survey": known[name], "name": name, "ra": ra, "dec": dec, "pixels": pixels, "size": size_deg})
        rows.append(f"<tr><td>{html.escape(name)}</td><td><a href=../../tempspace/fits/{token}.fits>FITS</a></td></tr>")
    page = (
        "<html><head><title>SkyView results (latentsky local archive)</title></head><body><table>"
        + "".join(rows)
        + "</table></body></html>"
    )
    return Response.text(page, content_type="text/html; charset=utf-8")


def image(archive, request: Request) -> Response:
    """The FITS image a results page links to."""
    try:
        asked = json.loads(base64.urlsafe_b64decode(request.path_params["token"].removesuffix(".fits")))
    except ValueError:
        raise HTTPError(404, f"no such image: {request.path}") from None
    pixels = int(asked["pixels"])
    native = NATIVE_ARCSEC[asked["survey"].split("-")[0]]
    size = asked["size"] if asked["size"] else pixels * native / 3600.0
    body = survey_fits(
        archive, asked["survey"], asked["name"], float(asked["ra"]) % 360.0, float(asked["dec"]), pixels, pixels, size
    )
    if body is None:
        raise HTTPError(404, f"no image of {asked['name']!r} here")
    return Response(body, content_type="application/fits")


def _token(params: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(params, sort_keys=True).encode()).decode()


ROUTES = (
    ("GET", "/skyview/current/cgi/basicform.pl", form),
    ("GET", "/skyview/current/cgi/runquery.pl", runquery),
    ("GET", "/skyview/tempspace/fits/{token}", image),
)
"""``(method, path, handler)`` of the local SkyView, registered by :class:`~.archive.LocalArchive`."""
