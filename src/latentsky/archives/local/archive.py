"""The archive protocols of the local archive, registered on a :class:`LocalServer`.

:class:`LocalArchive` scans a folder of FITS files (:mod:`.catalog`) and
answers, on 127.0.0.1, the requests our clients send to the real archives:

==============================================  ===========================================================
route                                           speaks like
==============================================  ===========================================================
``/tap/sync``, ``/tap/async``, ``/tap/...``    ESO ``tap_obs`` (TAP 1.1, sync and async, ADQL on
                                                ``ivoa.ObsCore`` and ``TAP_SCHEMA``, ``MAXREC``, ``UPLOAD``;
                                                see :mod:`.tap`)
``GET /eso/file/{dp_id}``                       ESO data portal file download
``GET /sdss/{dr}/.../search/x_results.aspx``   SDSS SkyServer SQL search as astroquery.sdss asks it
                                                (``cmd``, ``format=csv``, ``searchtool=SQL``)
``GET /sas/{path}``                             SDSS Science Archive Server spectra (``spec-PPPP-MJD-FFFF.fits``)
``GET /hips2fits``                              CDS hips2fits (``hips, width, height, fov, ra, dec``):
                                                an image resampled on a TAN grid from the real FITS images
``GET /synthetic/hips2fits``                    the same where the images cover the position, a synthetic
                                                sky elsewhere (:mod:`.sky`, marked ``SYNTHSKY = T``)
``GET /cutout/{survey}``                        a native-pixel cutout (``ra, dec, size``) cut with
                                                :class:`astropy.nddata.Cutout2D`
``GET /skyview/current/cgi/...``                SkyView's form, results and images as astroquery.skyview
                                                reads them (:mod:`.skyview`)
``GET /wsa/GetImage``, ``/wsa/WSASQL``...       the UKIDSS WSA pages astroquery.ukidss reads (:mod:`.ukidss`)
==============================================  ===========================================================

:meth:`LocalArchive.urls` gives the ``conf`` settings that point every client
at it, and :meth:`LocalArchive.configure` applies them (and restores them on
exit when used as a context manager)::

    with LocalArchive("src/latentsky/data/sample") as archive:
        table = eso.query(collection="HARPS")           # goes to 127.0.0.1
"""

from __future__ import annotations

import functools
import logging
import threading
import warnings
from pathlib import Path

from astropy.table import Table

from latentsky.archives.local import adql, images, skyserver, skyview, tap, tap_schema, ukidss, uws
from latentsky.archives.local.catalog import FolderCatalog, scan
from latentsky.archives.local.server import LocalServer

log = logging.getLogger(__name__)


class LocalArchive:
    """ESO-, SkyServer-, SAS- and hips2fits-like endpoints over a folder of FITS files.

    Parameters
    ----------
    root : path-like
        Folder scanned recursively for spectra (HARPS s1d, SDSS spec/spSpec) and
        images with a celestial WCS (FIRST, UKIDSS...).
    server : LocalServer, optional
        Register the routes on this server; by default a new one is made from
        ``server_options`` (``host``, ``port``, ``latency``, ``fault_rate``,
        ``faults``, ``seed``...) and started by :meth:`start`.
    tap_maxrec : int
        The TAP service's hard row limit: a query asking for more (or not
        saying) gets at most this many rows and ``QUERY_STATUS=OVERFLOW``.
    obscore : Table, optional
        Extra ObsCore rows (e.g. a recorded ESO response) served beside the
        rows built from the files; their ``access_url`` is kept as recorded.
    **server_options
        Passed to :class:`LocalServer`.

    Attributes
    ----------
    catalog : FolderCatalog
        What was found in ``root``.
    server : LocalServer
    """

    def __init__(
        self,
        root: str | Path,
        *,
        server: LocalServer | None = None,
        tap_maxrec: int = 100_000,
        obscore: Table | None = None,
        **server_options,
    ):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(f"local archive root {self.root} is not a folder")
        # the port first: a port in use fails at once, not after the scan
        self.server = server if server is not None else LocalServer(**server_options)
        try:
            self.catalog: FolderCatalog = scan(self.root)
        except BaseException:
            if server is None:
                self.server.stop()
            raise
        self.tap_maxrec = int(tap_maxrec)
        self.extra_obscore = obscore
        self.jobs = uws.JobStore(functools.partial(tap.execute, self), execution_duration=int(adql.QUERY_SECONDS))
        self.jobs_retention = uws.RETENTION
        self._conf_blocks: list = []  # the conf.set_temp blocks :meth:`configure` entered
        self._lock = threading.Lock()
        self._obscore: Table | None = None
        self.register(self.server)
        log.info(
            "local archive over %s: %d ESO spectra, %d SDSS spectra, %d images (%s)",
            self.root,
            len(self.catalog.obscore),
            len(self.catalog.specobj),
            len(self.catalog.images),
            ", ".join(self.catalog.surveys()) or "no surveys",
        )

    # ------------------------------------------------------------------ set-up
    def register(self, server: LocalServer) -> None:
        """Add this archive's routes to ``server``."""

        def bind(handler):
            return functools.partial(handler, self)

        for method in ("GET", "POST"):
            server.add_route(method, "/tap/sync", bind(tap.sync))
            server.add_route(method, "/sdss/{release}/en/tools/search/x_results.aspx", bind(skyserver.sql_search))
        for name in ("capabilities", "availability", "tables", "examples"):
            server.add_route("GET", f"/tap/{name}", bind(getattr(tap, name)), inline=True)
        uws.register(server, self.jobs)
        server.add_route("GET", "/eso/file/{dp_id}", bind(tap.eso_file))
        server.add_route("GET", "/sas/{path:path}", bind(skyserver.sas_file))
        server.add_route("GET", "/hips2fits", bind(images.hips2fits))
        server.add_route("GET", "/synthetic/hips2fits", bind(images.synthetic_hips2fits))
        server.add_route("GET", "/cutout/{survey}", bind(images.cutout))
        for method, path, handler in skyview.ROUTES + ukidss.ROUTES:
            server.add_route(method, path, bind(handler))

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return self.server.base_url

    def urls(self) -> dict[str, str]:
        """The :data:`latentsky.config.conf` settings that send every client here."""
        base = self.base_url
        return {
            "eso_tap_url": f"{base}/tap",
            "eso_data_url": f"{base}/eso/file/",
            "sdss_skyserver_url": f"{base}/sdss/",
            "sdss_sas_url": f"{base}/sas/",
            "hips2fits_url": f"{base}/hips2fits",
            "skyview_url": f"{base}/skyview/",
            "ukidss_url": f"{base}/wsa/",
        }

    def configure(self) -> dict[str, str]:
        """Point ``conf`` at this archive; the previous values are restored by :meth:`restore`."""
        from latentsky.config import conf

        urls = self.urls()
        block = conf.set_temp(**urls)
        block.__enter__()
        self._conf_blocks.append(block)
        return urls

    def restore(self) -> None:
        """Undo the last :meth:`configure`."""
        if self._conf_blocks:
            self._conf_blocks.pop().__exit__(None, None, None)

    def start(self) -> "LocalArchive":
        """Start the server in a background thread."""
        self.server.start()
        return self

    def stop(self) -> None:
        """Stop the server and the asynchronous jobs."""
        self.server.stop()
        self.jobs.close()

    def __enter__(self) -> "LocalArchive":
        self.start()
        self.configure()
        return self

    def __exit__(self, *exc) -> None:
        self.restore()
        self.stop()

    def __repr__(self) -> str:
        return f"LocalArchive({str(self.root)!r}, {self.base_url})"

    # ------------------------------------------------------------------ TAP
    def obscore_table(self) -> Table:
        """The ``ivoa.ObsCore`` table as served: every ObsCore 1.1 column, described, access URLs pointing here.

        Built once; the ``access_url`` of rows from ``obscore`` (recorded answers) is kept as recorded.
        """
        with self._lock:
            if self._obscore is None:
                self._obscore = tap_schema.dress(self._raw_obscore(), tap_schema.OBSCORE)
            return self._obscore

    def _raw_obscore(self) -> Table:
        table = self.catalog.obscore.copy()
        table["access_url"] = [f"{self.base_url}/eso/file/{dp}" for dp in table["dp_id"]]
        table["obs_publisher_did"] = [f"ivo://latentsky.local/eso?{dp}" for dp in table["dp_id"]]
        table.remove_column("filename")
        if self.extra_obscore is not None:
            from astropy.table import vstack

            extra = self.extra_obscore.copy()
            for name in list(extra.colnames):
                if name not in table.colnames and name.startswith("col"):
                    extra.remove_column(name)  # pandas' unnamed index column in recorded CSVs
                elif name in table.colnames and (table[name].dtype.kind in "SU") != (extra[name].dtype.kind in "SU"):
                    # e.g. obs_id: numbers in a recorded answer, text in ours
                    table[name] = table[name].astype(str)
                    extra[name] = extra[name].astype(str)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                table = vstack([table, extra], join_type="outer", metadata_conflicts="silent")
        return table
