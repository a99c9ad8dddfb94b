"""The archive protocols of the local archive, registered on a :class:`LocalServer`.

:class:`LocalArchive` scans a folder of FITS files (:mod:`.catalog`) and
answers, on 127.0.0.1, the requests our clients send to the real archives:

==============================================  ===========================================================
route                                           speaks like
==============================================  ===========================================================
``GET|POST /tap/sync``                          ESO ``tap_obs`` (TAP 1.1 sync, ADQL on ``ivoa.ObsCore``,
                                                ``MAXREC``, ``UPLOAD``, ``QUERY_STATUS`` OK/OVERFLOW/ERROR)
``GET /eso/file/{dp_id}``                       ESO data portal file download
``GET|POST /sdss/SearchTools/SqlSearch``        SDSS SkyServer SQL search (``cmd``, ``format=csv``)
``GET /sas/{path}``                             SDSS Science Archive Server spectra (``spec-PPPP-MJD-FFFF.fits``)
``GET /hips2fits``                              CDS hips2fits (``hips, width, height, fov, ra, dec``):
                                                an image resampled on a TAN grid from the real FITS images
``GET /cutout/{survey}``                        a native-pixel cutout (``ra, dec, size``) cut with
                                                :class:`astropy.nddata.Cutout2D`
==============================================  ===========================================================

:meth:`LocalArchive.urls` gives the ``conf`` settings that point every client
at it, and :meth:`LocalArchive.configure` applies them (and restores them on
exit when used as a context manager)::

    with LocalArchive("src/latentsky/data/sample") as archive:
        table = eso.query(collection="HARPS")           # goes to 127.0.0.1
"""

from __future__ import annotations

import functools
import gzip
import io
import logging
import re
import threading
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from latentsky.archives.local import adql
from latentsky.archives.local.catalog import FolderCatalog, scan
from latentsky.archives.local.server import HTTPError, LocalServer, Request, Response

log = logging.getLogger(__name__)

VOTABLE_TYPE = "application/x-votable+xml"

HIPS_ALIASES = {
    "CDS/P/SDSS9/u": "SDSS-u", "CDS/P/SDSS9/g": "SDSS-g", "CDS/P/SDSS9/r": "SDSS-r",
    "CDS/P/SDSS9/i": "SDSS-i", "CDS/P/SDSS9/z": "SDSS-z", "CDS/P/FIRST": "FIRST",
    "CDS/P/UKIDSS/K": "UKIDSS-K", "CDS/P/UKIDSS/H": "UKIDSS-H", "CDS/P/UKIDSS/J": "UKIDSS-J",
    "CDS/P/UKIDSS/Y": "UKIDSS-Y",
}
"""HiPS identifiers the hips2fits endpoint understands, mapped to local survey names
(a survey name itself, e.g. ``"FIRST"``, is accepted too)."""

MAX_CUTOUT_PIXELS = 4096 * 4096


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

    def __init__(self, root: str | Path, *, server: LocalServer | None = None, tap_maxrec: int = 100_000,
                 obscore: Table | None = None, **server_options):
        self.root = Path(root).resolve()
        self.catalog: FolderCatalog = scan(self.root)
        self.tap_maxrec = int(tap_maxrec)
        self.extra_obscore = obscore
        self.server = server if server is not None else LocalServer(**server_options)
        self._saved_conf: list[dict] = []
        self._lock = threading.Lock()
        self.register(self.server)
        log.info("local archive over %s: %d ESO spectra, %d SDSS spectra, %d images (%s)", self.root,
                 len(self.catalog.obscore), len(self.catalog.specobj), len(self.catalog.images),
                 ", ".join(self.catalog.surveys()) or "no surveys")

    # ------------------------------------------------------------------ set-up
    def register(self, server: LocalServer) -> None:
        """Add this archive's routes to ``server``."""
        for method in ("GET", "POST"):
            server.add_route(method, "/tap/sync", self._tap_sync)
            server.add_route(method, "/sdss/SearchTools/SqlSearch", self._skyserver_sql)
        server.add_route("GET", "/tap/capabilities", self._tap_capabilities)
        server.add_route("GET", "/eso/file/{dp_id}", self._eso_file)
        server.add_route("GET", "/sas/{path:path}", self._sas_file)
        server.add_route("GET", "/hips2fits", self._hips2fits)
        server.add_route("GET", "/cutout/{survey}", self._cutout)

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
        }

    def configure(self) -> dict[str, str]:
        """Point ``conf`` at this archive; the previous values are restored by :meth:`restore`."""
        from latentsky.config import conf

        urls = self.urls()
        self._saved_conf.append({name: getattr(conf, name) for name in urls})
        conf.set(**urls)
        return urls

    def restore(self) -> None:
        """Undo the last :meth:`configure`."""
        from latentsky.config import conf

        if self._saved_conf:
            conf.set(**self._saved_conf.pop())

    def start(self) -> "LocalArchive":
        """Start the server in a background thread."""
        self.server.start()
        return self

    def stop(self) -> None:
        """Stop the server."""
        self.server.stop()

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
        """The ``ivoa.ObsCore`` table as served (access URLs pointing at this server)."""
        table = self.catalog.obscore.copy()
        table["access_url"] = [f"{self.base_url}/eso/file/{dp}" for dp in table["dp_id"]]
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
            table = table.filled() if table.has_masked_columns else table
        return table

    def _tap_capabilities(self, request: Request) -> Response:
        body = ('<?xml version="1.0"?><vosi:capabilities xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0" '
                'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:tr="http://www.ivoa.net/xml/TAPRegExt/v1.0">'
                '<capability standardID="ivo://ivoa.net/std/TAP" xsi:type="tr:TableAccess">'
                f'<interface role="std"><accessURL use="base">{self.base_url}/tap</accessURL></interface>'
                '<language><name>ADQL</name><version ivo-id="ivo://ivoa.net/std/ADQL#v2.0">2.0</version></language>'
                f'<outputLimit><default unit="row">{self.tap_maxrec}</default>'
                f'<hard unit="row">{self.tap_maxrec}</hard></outputLimit>'
                '</capability></vosi:capabilities>')
        return Response.text(body, content_type="text/xml")

    def _tap_sync(self, request: Request) -> Response:
        if (request.param("REQUEST") or "doQuery").lower() != "doquery":
            return votable_error(f"REQUEST={request.param('REQUEST')!r} is not supported; use doQuery")
        lang = (request.param("LANG") or "ADQL").upper()
        if not lang.startswith("ADQL"):
            return votable_error(f"LANG={lang!r} is not supported; use ADQL")
        text = request.param("QUERY")
        if not text:
            return votable_error("the QUERY parameter is missing")
        maxrec = self.tap_maxrec
        if request.param("MAXREC") is not None:
            try:
                maxrec = min(maxrec, int(request.param("MAXREC")))
            except ValueError:
                return votable_error(f"MAXREC={request.param('MAXREC')!r} is not an integer")
        tables = {"ivoa.obscore": self.obscore_table()}
        try:
            tables.update(_uploads(request))
            result, overflow = adql.run(text, tables, maxrec=maxrec)
        except adql.AdqlError as err:
            return votable_error(f"ADQL error: {err}")
        except ValueError as err:
            return votable_error(str(err))
        return Response(votable_bytes(result, overflow=overflow), content_type=VOTABLE_TYPE)

    def _eso_file(self, request: Request) -> Response:
        dp_id = request.path_params["dp_id"]
        rows = self.catalog.obscore[self.catalog.obscore["dp_id"] == dp_id]
        if len(rows) == 0:
            raise HTTPError(404, f"no product with dp_id {dp_id!r}")
        return fits_file_response(self.catalog.path_of(rows["filename"][0]))

    # ------------------------------------------------------------------ SDSS
    def _skyserver_sql(self, request: Request) -> Response:
        sql = request.param("cmd")
        if not sql:
            return Response.text("the cmd parameter (SQL) is missing", status=400)
        fmt = (request.param("format") or "csv").lower()
        if fmt != "csv":
            return Response.text(f"format={fmt!r} is not supported by the local SkyServer; use csv", status=400)
        try:
            result = run_skyserver_sql(sql, self.catalog.specobj)
        except adql.AdqlError as err:
            # SkyServer answers SQL errors with an error text, not a table
            return Response.text(f"Error: {err}", status=400)
        return Response.text(skyserver_csv(result), content_type="text/plain; charset=utf-8")

    def _sas_file(self, request: Request) -> Response:
        name = request.path_params["path"].rsplit("/", 1)[-1]
        m = re.fullmatch(r"spec-(\d+)-(\d+)-(\d+)\.fits", name)
        if not m:
            raise HTTPError(404, f"no such file: {request.path}")
        plate, mjd, fiber = (int(g) for g in m.groups())
        spec = self.catalog.specobj
        hit = (spec["plate"] == plate) & (spec["mjd"] == mjd) & (spec["fiberid"] == fiber)
        if not hit.any():
            raise HTTPError(404, f"no spectrum plate={plate} mjd={mjd} fiber={fiber}")
        return fits_file_response(self.catalog.path_of(spec["filename"][hit][0]))

    # ------------------------------------------------------------------ images
    def _find_images(self, survey: str):
        name = HIPS_ALIASES.get(survey, survey)
        images = [im for im in self.catalog.images if im.survey.lower() == name.lower()]
        if not images:
            raise HTTPError(404, f"unknown survey {survey!r}; this archive has {self.catalog.surveys()}")
        return images

    def _hips2fits(self, request: Request) -> Response:
        try:
            hips = request.param("hips")
            if not hips:
                raise ValueError("hips is missing")
            width, height = int(request.param("width", "0")), int(request.param("height", "0"))
            fov, ra, dec = (float(request.param(k, "nan")) for k in ("fov", "ra", "dec"))
            projection = (request.param("projection") or "TAN").upper()
            fmt = (request.param("format") or "fits").lower()
        except ValueError as err:
            return Response.json({"title": "Bad request", "description": str(err)}, status=400)
        if not (0 < width * height <= MAX_CUTOUT_PIXELS) or not np.isfinite([fov, ra, dec]).all() or fov <= 0:
            return Response.json({"title": "Bad request", "description":
                                  "width, height (pixels), fov (deg), ra, dec (deg) must be positive numbers"},
                                 status=400)
        if fmt != "fits" or projection != "TAN":
            return Response.json({"title": "Bad request", "description":
                                  "the local hips2fits serves format=fits, projection=TAN only"}, status=400)
        try:
            images = self._find_images(hips)
        except HTTPError as err:
            if hips not in HIPS_ALIASES and hips not in HIPS_ALIASES.values():
                return Response.json({"title": "Unknown HiPS", "description": err.message}, status=400)
            # a survey the real service knows but this folder has no image of: all blank, as off-footprint
            images = []
        hdu = resample_tan(images, ra, dec, width, height, fov)
        return Response(_fits_bytes(hdu), content_type="application/fits")

    def _cutout(self, request: Request) -> Response:
        from astropy.coordinates import SkyCoord
        from astropy.nddata import Cutout2D, NoOverlapError

        try:
            ra, dec = float(request.param("ra", "nan")), float(request.param("dec", "nan"))
            size = int(request.param("size", "28"))
        except ValueError as err:
            raise HTTPError(400, f"ra, dec (deg) and size (pixels) must be numbers: {err}") from err
        if not (np.isfinite(ra) and np.isfinite(dec) and -90 <= dec <= 90 and 0 < size <= 4096):
            raise HTTPError(400, f"bad cutout request ra={ra} dec={dec} size={size}")
        for image in self._find_images(request.path_params["survey"]):
            if not image.contains(ra, dec):
                continue
            with fits.open(image.path, memmap=False) as hdul:
                src = hdul[image.hdu]
                try:
                    cut = Cutout2D(src.data, SkyCoord(ra, dec, unit="deg"), (size, size), wcs=image.wcs,
                                   mode="partial", fill_value=np.nan)
                except NoOverlapError:
                    continue
                header = src.header.copy()
                header.update(cut.wcs.to_header())
                header["SURVEY"] = image.survey
                header["ORIGFILE"] = image.path.name
                data = np.asarray(cut.data, dtype=np.float32)
            return Response(_fits_bytes(fits.PrimaryHDU(data, header)), content_type="application/fits")
        raise HTTPError(404, f"position ra={ra} dec={dec} is outside the footprint of {request.path_params['survey']}")


# ---------------------------------------------------------------------------- helpers

def fits_file_response(path: Path) -> Response:
    """Serve a FITS file as the archives do: uncompressed, named, with byte ranges.

    Files kept gzipped on disk (the bundled sample) are sent decompressed,
    because ESO's and SDSS's file endpoints send plain FITS.
    """
    name = re.sub(r"\.gz$", "", path.name, flags=re.I)
    if path.name.lower().endswith(".gz"):
        resp = Response(_gunzipped(path, path.stat().st_mtime_ns), content_type="application/fits")
        resp.headers["Content-Disposition"] = f'attachment; filename="{name}"'
        return resp
    return Response.from_file(path, content_type="application/fits", filename=name)


@functools.lru_cache(maxsize=32)
def _gunzipped(path: Path, mtime_ns: int) -> bytes:
    with gzip.open(path, "rb") as fh:
        return fh.read()


def _uploads(request: Request) -> dict[str, Table]:
    spec = request.param("UPLOAD")
    if not spec:
        return {}
    tables = {}
    for item in spec.split(";"):
        name, _, source = item.partition(",")
        name = name.strip()
        if not source.startswith("param:"):
            raise ValueError(f"UPLOAD {name!r}: only inline uploads (param:...) are supported")
        field = source[len("param:"):]
        data = request.files.get(field)
        if data is None:
            raise ValueError(f"UPLOAD {name!r}: no multipart field {field!r} in the request")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tables[f"tap_upload.{name.lower()}"] = Table.read(io.BytesIO(data), format="votable")
    return tables


def votable_bytes(table: Table, *, overflow: bool = False) -> bytes:
    """A TAP result document: the table, ``QUERY_STATUS=OK`` and, when cut, ``OVERFLOW`` after it."""
    from astropy.io.votable import from_table
    from astropy.io.votable.tree import Info

    table = table.copy(copy_data=False)
    for name in table.colnames:  # VOTable cannot write numpy object columns
        if table[name].dtype.kind == "O":
            table[name] = table[name].astype(str)
    vot = from_table(table)
    resource = vot.resources[0]
    resource.type = "results"
    resource.infos.append(Info(name="QUERY_STATUS", value="OK"))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vot.to_xml(buf)
    xml = buf.getvalue()
    if overflow:
        # TAP puts the OVERFLOW status after the table, where a streaming server learns it
        end = xml.rindex(b"</RESOURCE>")
        xml = xml[:end] + b'<INFO name="QUERY_STATUS" value="OVERFLOW"/>\n' + xml[end:]
    return xml


def votable_error(message: str, status: int = 400) -> Response:
    """A TAP error document (``QUERY_STATUS=ERROR``)."""
    from xml.sax.saxutils import escape

    body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<VOTABLE version="1.3" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">\n'
            f'<RESOURCE type="results"><INFO name="QUERY_STATUS" value="ERROR">{escape(message)}</INFO>'
            '</RESOURCE>\n</VOTABLE>\n')
    return Response(body.encode(), status=status, content_type=VOTABLE_TYPE)


_NEARBY = re.compile(
    r"^\s*SELECT\s+(?P<idx>-?\d+)\s+AS\s+idx\s*,\s*(?P<cols>.+?)\s+FROM\s+SpecObj\s+AS\s+(?P<alias>\w+)\s+"
    r"JOIN\s+dbo\.fGetNearbySpecObjEq\(\s*(?P<ra>[-+\d.eE]+)\s*,\s*(?P<dec>[-+\d.eE]+)\s*,\s*(?P<r>[-+\d.eE]+)\s*\)"
    r"\s+AS\s+\w+\s+ON\s+[\w.]+\s*=\s*[\w.]+\s*(?:WHERE\s+(?P<where>.+?))?\s*$",
    re.IGNORECASE | re.DOTALL)


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
        r_deg = float(m["r"]) / 60.0  # SkyServer radii are arcminutes
        cone = (f"CONTAINS(POINT('ICRS', {m['alias']}.ra, {m['alias']}.dec), "
                f"CIRCLE('ICRS', {float(m['ra'])}, {float(m['dec'])}, {r_deg})) = 1")
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


def resample_tan(images, ra: float, dec: float, width: int, height: int, fov: float) -> fits.PrimaryHDU:
    """An image on a TAN grid centred on (ra, dec), ``fov`` degrees wide, sampled from ``images``.

    Pixels no image covers are NaN (hips2fits' blank value), so a position
    off the survey gives an all-NaN image.  Bilinear interpolation.
    """
    from astropy.wcs import WCS
    from scipy.ndimage import map_coordinates

    scale = fov / width
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [(width + 1) / 2, (height + 1) / 2]
    wcs.wcs.cdelt = [-scale, scale]
    wcs.wcs.cunit = ["deg", "deg"]
    out = np.full((height, width), np.nan, dtype=np.float32)
    yy, xx = np.mgrid[0:height, 0:width]
    world = wcs.pixel_to_world(xx, yy)
    for image in images:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sx, sy = image.wcs.world_to_pixel(world)
        ny, nx = image.shape
        inside = np.isfinite(sx) & np.isfinite(sy) & (sx >= -0.5) & (sx <= nx - 0.5) & (sy >= -0.5) & \
            (sy <= ny - 0.5) & np.isnan(out)
        if not inside.any():
            continue
        with fits.open(image.path, memmap=False) as hdul:
            data = np.asarray(hdul[image.hdu].data, dtype=np.float64)
        values = map_coordinates(data, [sy[inside], sx[inside]], order=1, mode="nearest")
        out[inside] = values
    header = wcs.to_header()
    header["ORIGIN"] = "latentsky local hips2fits"
    return fits.PrimaryHDU(out, header)


def _fits_bytes(hdu) -> bytes:
    buf = io.BytesIO()
    hdu.writeto(buf)
    return buf.getvalue()
