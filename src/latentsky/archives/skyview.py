"""SkyView: images of its surveys (SDSS, UKIDSS, VLA FIRST...) around a position, through astroquery.skyview.

astroquery.skyview reads SkyView's query form, submits it and returns the
``FITS`` links of the results page; this client points it at
``conf.skyview_url`` (a SkyView site, or the local archive's ``/skyview/``),
gives it latentsky's HTTP session (a timeout on every request, offline mode:
astroquery sets none and SkyView is known to hang, astroquery #3347, #3353;
the retry policy and the user agent)
and turns the links into products that :meth:`SkyView.plan` hands to the
download manager.  One request chain per position: for 10^4+ cutouts use
:func:`latentsky.archives.cutouts.fetch_cutouts` (hips2fits) instead.

Examples
--------
>>> from latentsky.archives.skyview import skyview                      # doctest: +SKIP
>>> products = skyview.query("162.53 30.68", ["VLA FIRST (1.4 GHz)", "SDSSr"], pixels=64)   # doctest: +SKIP
>>> images = skyview.get_images("162.53 30.68", ["SDSSr"], pixels=64)   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from astropy import units as u
from astropy.table import Table

from latentsky.archives.astroquery_call import call
from latentsky.archives.base import (
    Archive,
    check_offline,
    cutout_table,
    fits_items,
    parse_coordinates,
    parse_radius,
    request,
    safe_name,
    session,
)
from latentsky.config import conf
from latentsky.exceptions import ArchiveError, CoordinateError

FORM_PATH = "current/cgi/basicform.pl"
"""The query form under a SkyView site (astroquery.skyview's ``conf.url`` by default)."""


def form_url() -> str:
    """The SkyView query form astroquery reads: ``conf.skyview_url`` + :data:`FORM_PATH` (or the URL itself)."""
    url = conf.skyview_url.strip()
    return url if url.endswith(".pl") else url.rstrip("/") + "/" + FORM_PATH


class SkyView(Archive):
    """Client of SkyView (astroquery.skyview for the form and its results; downloads by the manager)."""

    name = "skyview"

    @contextlib.contextmanager
    def _client(self):
        from astroquery import cache_conf
        from astroquery.skyview import SkyViewClass

        url = form_url()
        check_offline(url)
        client = SkyViewClass()
        client.URL = url
        client._session = session()  # timeouts (conf.timeout) and offline mode on every request it sends
        with cache_conf.set_temp("cache_active", False):  # a failed answer is never replayed
            yield client

    def list_surveys(self) -> dict:
        """``{category: [survey names]}`` as the site's form lists them."""
        with self._client() as client:
            return call(lambda: dict(client.survey_dict), archive="skyview", url=form_url(), what="survey list")

    def query(self, position, surveys, *, pixels: int = 300, radius=None, get_query_payload: bool = False) -> Table:
        """One product per survey: the image SkyView makes around ``position``.

        Parameters
        ----------
        position : SkyCoord, (ra, dec), str
            Centre (ICRS; numbers in degrees).
        surveys : str or list of str
            SkyView survey names (``"SDSSr"``, ``"UKIDSS-K"``, ``"VLA FIRST (1.4 GHz)"``...).
        pixels : int
            Image width and height, pixels.
        radius : Quantity, Angle or str, optional
            Half the image width (default: the survey's own pixel scale).
        get_query_payload : bool
            Return the form values astroquery would send instead.

        Returns
        -------
        Table
            The common product columns plus ``survey`` and ``pixels``; ``access_url``
            is the FITS image.
        """
        coord = parse_coordinates(position, parameter="position")
        coord = coord[0] if not coord.isscalar else coord
        surveys = [surveys] if isinstance(surveys, str) else list(surveys)
        if not surveys:
            raise CoordinateError("surveys: give at least one SkyView survey")
        if not 0 < int(pixels) <= 4096:
            raise CoordinateError(f"pixels: expected 1 to 4096, got {pixels!r}")
        kwargs = {"pixels": str(int(pixels))}
        if radius is not None:
            kwargs["radius"] = parse_radius(radius).to(u.deg)
        with self._client() as client:
            if get_query_payload:
                return call(
                    lambda: client.get_image_list(coord, surveys, get_query_payload=True, **kwargs),
                    archive="skyview",
                    url=form_url(),
                    what="surveys",
                )
            urls = call(
                lambda: client.get_image_list(coord, surveys, cache=False, **kwargs),
                archive="skyview",
                url=form_url(),
                what="surveys",
            )
        if len(urls) != len(surveys):
            raise ArchiveError(f"skyview: asked for {len(surveys)} surveys, the results page links {len(urls)} images")
        ra, dec = float(coord.ra.deg), float(coord.dec.deg)
        ids = [f"{safe_name(s)}_{ra:.5f}{dec:+.5f}_{int(pixels)}" for s in surveys]
        return cutout_table("skyview", ra, dec, ids, urls, surveys, survey=surveys, pixels=int(pixels))

    def get_images(self, position, surveys, **kwargs) -> list:
        """The images of :meth:`query` as :class:`~astropy.io.fits.HDUList` objects (fetched now, in memory)."""
        from astropy.io import fits

        products = self.query(position, surveys, **kwargs)
        out = []
        for url in products["access_url"]:
            body = request("GET", str(url), archive="skyview").content
            out.append(
                fits.HDUList.fromstring(body)
                if body.startswith(b"SIMPLE")
                else _raise(f"skyview: {url} is not a FITS file: {body[:80]!r}")
            )
        return out

    def plan(self, products: Table, dest: str | Path) -> list:
        """Download items for SkyView images (no network): ``dest/<survey>_<ra><dec>_<pixels>.fits``."""
        return fits_items(products, dest, archive="skyview")


def _raise(message: str):
    raise ArchiveError(message)


skyview = SkyView()
"""The module-level client (astroquery style)."""
