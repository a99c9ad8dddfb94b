"""Archive clients: one module, one class and one module-level instance per archive.

- :mod:`latentsky.archives.eso`: ESO reduced spectra (HARPS...) through TAP/ObsCore (pyvo);
- :mod:`latentsky.archives.sdss`: SDSS spectra and photometry through SkyServer SQL (astroquery.sdss);
- :mod:`latentsky.archives.skyview`, :mod:`latentsky.archives.ukidss`: SkyView images, UKIDSS sources and
  cut-outs (astroquery.skyview, astroquery.ukidss);
- :mod:`latentsky.archives.cutouts`: image cutouts (SDSS, FIRST, UKIDSS) at scale into one Zarr array
  (hips2fits);
- :mod:`latentsky.archives.local`: the loopback archive that speaks their protocols.

Every client has ``query(...) -> astropy Table`` (one row per product, see
:data:`~latentsky.archives.base.PRODUCT_COLUMNS`) and ``plan(table, dest) ->
[DownloadItem]`` (no network).  Base URLs are read from
:data:`latentsky.config.conf` at call time.
"""

from latentsky.archives.base import PRODUCT_COLUMNS, Archive

ARCHIVES = ("eso", "sdss", "skyview", "ukidss")
"""Names accepted by :func:`get_archive` (and ``latentsky query``)."""


def get_archive(name: str) -> Archive:
    """The module-level client of archive ``name`` (one of :data:`ARCHIVES`)."""
    from latentsky.exceptions import LatentskyError

    key = str(name).lower()
    if key == "eso":
        from latentsky.archives.eso import eso

        return eso
    if key == "sdss":
        from latentsky.archives.sdss import sdss

        return sdss
    if key == "skyview":
        from latentsky.archives.skyview import skyview

        return skyview
    if key == "ukidss":
        from latentsky.archives.ukidss import ukidss

        return ukidss
    raise LatentskyError(f"archive: unknown archive {name!r}; known: {', '.join(ARCHIVES)}")


__all__ = ["ARCHIVES", "PRODUCT_COLUMNS", "Archive", "get_archive"]
