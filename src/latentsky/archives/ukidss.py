"""UKIDSS: sources and image cut-outs from the WFCAM Science Archive (WSA), through astroquery.ukidss.

astroquery.ukidss (its WFAU base class) sends the WSA's ``WSASQL`` region
queries and ``GetImage`` cut-out requests and reads their result pages; this
client points it at ``conf.ukidss_url`` (astroquery's own ``conf.server``
accepts the ROE address only) and gives it latentsky's HTTP session (a
timeout on every request, offline mode, the retry policy, the user agent).
The source table a region query's result page links is fetched through the
same session (astroquery would fetch it with astropy's downloader, outside
that policy).  Cut-outs become products that :meth:`Ukidss.plan` hands to
the download manager.

astroquery waits one second per result page it reads (its ``_check_page``),
so each call costs at least a second: for 10^4+ cut-outs of UKIDSS K use
:func:`latentsky.archives.cutouts.fetch_cutouts` (hips2fits) on the
positions :meth:`Ukidss.query_sources` finds.

Examples
--------
>>> from latentsky.archives.ukidss import ukidss                       # doctest: +SKIP
>>> sources = ukidss.query_sources("150.0 2.0", radius="1 arcmin")      # doctest: +SKIP
>>> products = ukidss.query("150.0 2.0", waveband="K")                  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
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
    session,
)
from latentsky.config import conf
from latentsky.exceptions import ArchiveError, CoordinateError

DATABASE = "UKIDSSDR11PLUS"
"""The WSA release asked by default (astroquery's default)."""


class Ukidss(Archive):
    """Client of the UKIDSS WSA (astroquery.ukidss for queries and result pages; downloads by the manager)."""

    name = "ukidss"

    @contextlib.contextmanager
    def _client(self, database: str, programme_id: str):
        from astroquery import cache_conf
        from astroquery.ukidss import UkidssClass

        base = conf.ukidss_url.strip().rstrip("/") + "/"
        check_offline(base)
        client = UkidssClass(database=database, programme_id=programme_id)
        # astroquery builds these from its conf at import; a mirror or the local archive needs them here
        client.BASE_URL, client.LOGIN_URL, client.IMAGE_URL = base, base + "DBLogin", base + "GetImage"
        client.ARCHIVE_URL, client.REGION_URL = base + "ImageList", base + "WSASQL"
        client.CROSSID_URL = base + "CrossID"
        client.TIMEOUT = conf.timeout
        # astroquery's WFAU classes send through ``session`` when it is set (their hook for a logged-in
        # session; without one, result pages are polled with a bare requests.get and no timeout)
        client._session = client.session = session()
        with cache_conf.set_temp("cache_active", False):
            yield client

    def query_sources(
        self,
        coordinates,
        *,
        radius="1 arcmin",
        programme_id: str = "LAS",
        database: str = DATABASE,
        get_query_payload: bool = False,
    ) -> Table:
        """Sources of a UKIDSS programme around a position (a WSA region query).

        Parameters
        ----------
        coordinates : SkyCoord, (ra, dec), str
            Centre (ICRS; numbers in degrees).
        radius : Quantity, Angle or str
            Search radius (at most 90 arcmin).
        programme_id : str
            ``"LAS"``, ``"GPS"``, ``"GCS"``, ``"DXS"`` or ``"UDS"``.
        database : str
            WSA release.

        Returns
        -------
        Table
            The WSA's columns (``sourceID, RA, Dec``, magnitudes...) plus ``ra``, ``dec``
            in degrees, ready for :func:`~latentsky.archives.cutouts.fetch_cutouts`.
        """
        coord = _one(coordinates)
        r = parse_radius(radius)
        if r.to_value(u.arcmin) > 90:
            raise CoordinateError(f"radius: the WSA searches at most 90 arcmin, got {r.to_value(u.arcmin):g}")
        with self._client(database, programme_id) as client:
            query = lambda: client.query_region_async(
                coord,
                radius=r.to(u.arcmin),  # noqa: E731
                programme_id=programme_id,
                database=database,
                get_query_payload=get_query_payload,
            )
            page = call(query, archive="ukidss", url=client.REGION_URL, what="region query")
            if get_query_payload:
                return page
            table = _linked_table(client, page)
        names = {n.lower(): n for n in table.colnames}
        if "ra" in names and "dec" in names and ("ra" not in table.colnames or "dec" not in table.colnames):
            table["ra"], table["dec"] = np.asarray(table[names["ra"]], float), np.asarray(table[names["dec"]], float)
        return table

    def query(
        self,
        coordinates,
        *,
        waveband: str = "K",
        image_width="1 arcmin",
        programme_id: str = "all",
        database: str = DATABASE,
        get_query_payload: bool = False,
    ) -> Table:
        """Cut-outs around a position: one product per image the WSA lists (``GetImage``).

        Returns
        -------
        Table
            The common product columns plus ``waveband``; ``access_url`` is the FITS cut-out.
        """
        coord = _one(coordinates)
        width = parse_radius(image_width, parameter="image_width").to(u.arcmin)
        with self._client(database, programme_id) as client:
            query = lambda: client.get_image_list(
                coord,
                waveband=waveband,
                image_width=width,  # noqa: E731
                database=database,
                programme_id=programme_id,
                get_query_payload=get_query_payload,
            )
            urls = call(query, archive="ukidss", url=client.IMAGE_URL, what="image query")
        if get_query_payload:
            return urls
        ra, dec = float(coord.ra.deg), float(coord.dec.deg)
        ids = [f"{waveband}_{ra:.5f}{dec:+.5f}_{k}" for k in range(len(urls))]
        return cutout_table("ukidss", ra, dec, ids, urls, "WFCAM", waveband=waveband)

    def plan(self, products: Table, dest: str | Path) -> list:
        """Download items for UKIDSS cut-outs (no network): ``dest/ukidss_<band>_<ra><dec>_<k>.fits``."""
        return fits_items(products, dest, archive="ukidss", file_prefix="ukidss_")


def _linked_table(client, page) -> Table:
    """The VOTable a WSA result page links (astroquery.wfau's choice of link), fetched through latentsky's session."""
    import io
    import warnings

    from astropy.io.votable import parse_single_table
    from astropy.io.votable.exceptions import VOWarning

    links = [link for link in client.extract_urls(page.text) if "8080" not in link]  # 8080: Java Web Start links
    if not links:
        raise ArchiveError(f"ukidss: region query: the result page {page.url} links no VOTable")
    body = request("GET", links[0], archive="ukidss").content
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VOWarning)
            return parse_single_table(io.BytesIO(body)).to_table()
    except Exception as err:  # astropy raises many kinds on a page that is not a VOTable
        raise ArchiveError(f"ukidss: region query: {links[0]} is not a VOTable ({type(err).__name__}: {err})") from None


def _one(coordinates):
    coord = parse_coordinates(coordinates)
    if not coord.isscalar:
        if len(coord) != 1:
            raise CoordinateError(f"coordinates: one position per WSA query, got {len(coord)}")
        coord = coord[0]
    return coord


ukidss = Ukidss()
"""The module-level client (astroquery style)."""
