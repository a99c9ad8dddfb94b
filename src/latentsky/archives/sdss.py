"""SDSS: spectra and photometry through the SkyServer SQL search (astroquery.sdss), files from the SAS.

Queries are sent by :mod:`astroquery.sdss` (``SDSS.query_sql`` with
``data_release=conf.sdss_data_release``, so the request, its URL and its
parameters are astroquery's), to the SkyServer named by
``conf.sdss_skyserver_url`` (given to astroquery's ``conf.skyserver_baseurl``
for the call; astroquery appends ``/dr<N>/en/tools/search/x_results.aspx``).
The request goes through latentsky's session (a 5xx or a 429 is asked again
by its retry policy, with backoff), the answer is judged by the same policy
(an HTML page where a table belongs is asked again too) and parsed with
64-bit identifiers kept exact; astroquery's cache is off (a failed answer is
never replayed, astroquery #1904).

- A list of positions is sent as ``UNION ALL`` blocks of
  ``dbo.fGetNearbySpecObjEq(ra, dec, r)`` (``fGetNearbyObjEq`` for
  photometry), in chunks whose URL stays under :data:`MAX_URL_CHARS`
  (thousands of positions in one request break on query-string limits and
  time out, astroquery #2211, #2082).  A chunk that fails is split in halves
  down to single positions; a position that still fails is recorded in
  ``table.meta["failed"]`` and the others are returned.
- A whole class (``spec_class="QSO"``: every quasar of the release) is read
  in pages of at most :data:`PAGE_ROWS` rows ordered by (plate, mjd, fiber),
  each page starting after the last row of the previous one, so no answer
  meets SkyServer's row limit (:data:`ROW_LIMIT`).
- A catalog of spectra (``plate, mjd, fiberid`` columns, e.g. DR16Q) is
  looked up by those identifiers (:meth:`SDSS.query_identifiers`), many per
  request.

Spectrum files come from the Science Archive Server: ``conf.sdss_sas_url +
dr<N>/sdss/spectro/redux/<run2d>/spectra[/full]/<plate>/spec-<plate>-<mjd>-<fiber>.fits``
(the path rule of astroquery.sdss for DR16/17); the download manager fetches them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import threading
import warnings
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
from astropy import units as u
from astropy.table import Table, vstack
from astropy.time import Time

from latentsky.archives.base import (
    Archive,
    _Retryable,
    check_offline,
    parse_coordinates,
    parse_radius,
    require_columns,
    safe_name,
    session,
    with_retries,
)
from latentsky.config import conf
from latentsky.exceptions import ArchiveError, CoordinateError, LatentskyWarning

log = logging.getLogger(__name__)

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

MAX_URL_CHARS = 6000
"""Longest GET URL sent: well under the 8 kB many servers and proxies accept."""

ROW_LIMIT = 500_000
"""SkyServer's row cap on one SQL answer; an answer this long is treated as truncated."""

PAGE_ROWS = 100_000
"""Rows asked per page when a whole class is read (well under :data:`ROW_LIMIT`)."""

_ASTROQUERY_LOCK = threading.Lock()  # astroquery.sdss reads its server from a process-wide conf

_ID_COLUMNS = ("specobjid", "objid", "bestobjid")

_CLASSES = ("GALAXY", "QSO", "STAR")


class SDSS(Archive):
    """Client of the SDSS SkyServer (SQL) and SAS (files)."""

    name = "sdss"

    # ------------------------------------------------------------------ SQL
    def sql_url(self, data_release: int | None = None) -> str:
        """The SkyServer SQL search URL astroquery.sdss asks (from ``conf.sdss_skyserver_url``)."""
        from astroquery.sdss import SDSSClass

        dr = conf.sdss_data_release if data_release is None else int(data_release)
        return skyserver_base() + SDSSClass.QUERY_URL_SUFFIX_DR_NEW.format(dr=dr)

    def query_sql(self, sql: str, *, data_release: int | None = None) -> Table:
        """Run one SQL statement on SkyServer (through astroquery.sdss); the CSV answer as a Table.

        Raises
        ------
        ArchiveError
            HTTP failure, timeout (``conf.timeout``) or an SQL error text;
            5xx, 429 and HTML answers are asked again first (``conf.max_retries``).
        """
        dr = conf.sdss_data_release if data_release is None else int(data_release)
        url = self.sql_url(dr)

        def once():
            import requests

            check_offline(url)
            try:
                with astroquery_sdss() as client:
                    response = client.query_sql_async(sql, data_release=dr, timeout=conf.timeout, cache=False)
            except requests.Timeout as err:
                raise ArchiveError(f"sdss: no answer from {url} within {conf.timeout} s") from err
            except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as err:
                raise _Retryable(f"sdss: the answer from {url} was cut short: {type(err).__name__}: {err}") from err
            except requests.RequestException as err:  # the session has asked again already
                raise ArchiveError(f"sdss: cannot reach {url}: {type(err).__name__}: {err}") from err
            _judge(response, url)
            return parse_skyserver_csv(response.text, url=url)

        return with_retries(once, what=f"sdss {url}")

    def sql_payload(self, sql: str, *, data_release: int | None = None) -> dict:
        """The request parameters astroquery.sdss sends for ``sql`` (no network)."""
        from astroquery.sdss import SDSSClass

        dr = conf.sdss_data_release if data_release is None else int(data_release)
        return SDSSClass().query_sql_async(sql, data_release=dr, get_query_payload=True)

    def build_spectra_sql(
        self,
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
        such a triple), or per position (``UNION ALL`` of cone blocks)."""
        cols = ", ".join(SPEC_COLUMNS)
        where = []
        if spec_class is not None:
            if str(spec_class).upper() not in _CLASSES:
                raise CoordinateError(f"spec_class: expected one of {_CLASSES}, got {spec_class!r}")
            where.append(f"s.class = '{str(spec_class).upper()}'")
        if coordinates is None:
            if after is not None:  # the next page: rows after (plate, mjd, fiber) in that order
                p, m, f = (int(v) for v in after)
                where.append(
                    f"(s.plate > {p} OR (s.plate = {p} AND (s.mjd > {m} OR (s.mjd = {m} AND s.fiberID > {f}))))"
                )
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

    def build_photometry_sql(self, *, coordinates, radius=None, first_index: int = 0) -> str:
        """The SQL for photometric objects around each position."""
        coords = parse_coordinates(coordinates)
        r_arcmin = parse_radius(radius if radius is not None else 2 * u.arcsec).to_value(u.arcmin)
        cols = ", ".join(PHOTO_COLUMNS)
        ra, dec = np.atleast_1d(coords.ra.deg), np.atleast_1d(coords.dec.deg)
        return " UNION ALL ".join(
            f"SELECT {i} AS idx, {cols} FROM PhotoObj AS p JOIN dbo.fGetNearbyObjEq({float(a):.7f}, {float(d):.7f}, "
            f"{float(r_arcmin):.6g}) AS n ON p.objID = n.objID"
            for i, (a, d) in enumerate(zip(ra, dec), start=first_index)
        )

    # ------------------------------------------------------------------ queries
    def query(
        self,
        coordinates=None,
        *,
        radius=None,
        spec_class: str | None = None,
        top: int | None = None,
        get_query_payload: bool = False,
    ) -> Table:
        """Spectra (:meth:`query_spectra`): the common interface."""
        return self.query_spectra(
            coordinates, radius=radius, spec_class=spec_class, top=top, get_query_payload=get_query_payload
        )

    def query_spectra(
        self,
        coordinates=None,
        *,
        radius=None,
        spec_class: str | None = None,
        top: int | None = None,
        chunk_size: int | None = None,
        page_rows: int | None = None,
        get_query_payload: bool = False,
    ) -> Table:
        """SDSS spectra, around positions or by class.

        Parameters
        ----------
        coordinates : SkyCoord, (ra, dec), str or Table, optional
            One or many positions (any frame; a Table needs ``ra``/``dec`` in
            degrees).  None searches the whole SpecObj table.
        radius : Quantity, Angle, str or float (deg), optional
            Match radius, default 2 arcsec.
        spec_class : {"QSO", "GALAXY", "STAR"}, optional
            Keep this class only.
        top : int, optional
            At most this many rows (whole-table searches only).
        chunk_size : int, optional
            Most positions per request (default: as many as fit in
            :data:`MAX_URL_CHARS`).
        page_rows : int, optional
            Rows per request of a whole-table search (default :data:`PAGE_ROWS`):
            pages follow each other until one comes back short.
        get_query_payload : bool
            Return the request parameters of the first request instead.

        Returns
        -------
        Table
            One row per spectrum: the common product columns plus ``specobjid,
            z, class, plate, mjd, fiberid, run2d`` and, for positions, ``idx``
            (the row of ``coordinates`` matched).  ``meta["failed"]`` lists the
            positions whose requests failed, with the error.
        """
        if coordinates is None:
            return self._query_pages(spec_class, top, page_rows, get_query_payload)
        coords = parse_coordinates(coordinates)
        coords = coords.reshape((1,)) if coords.isscalar else coords

        def build(idx):
            return self.build_spectra_sql(
                coordinates=coords[idx], radius=radius, spec_class=spec_class, first_index=int(idx[0])
            )

        if get_query_payload:
            return self.sql_payload(build(self._chunk_indices(coords, build)[0]))
        table, failed = self._run_chunks(coords, build, chunk_size)
        return self._spectra_products(table, failed=failed)

    def _query_pages(self, spec_class, top, page_rows, get_query_payload):
        """A whole-table search, page after page (keyset paging on plate, mjd, fiber)."""
        page = int(page_rows or PAGE_ROWS)
        if not 1 <= page <= ROW_LIMIT:
            raise CoordinateError(f"page_rows: expected 1 to {ROW_LIMIT} rows per request, got {page_rows!r}")
        if top is not None and int(top) < 1:
            raise CoordinateError(f"top: expected a positive number of rows, got {top!r}")
        pieces, after, got = [], None, 0
        while True:
            want = page if top is None else min(page, int(top) - got)
            sql = self.build_spectra_sql(spec_class=spec_class, top=want, paged=True, after=after)
            if get_query_payload:
                return self.sql_payload(sql)
            table = self.query_sql(sql)
            if len(table):
                pieces.append(table)
                got += len(table)
                last = table[-1]
                after = (last["plate"], last["mjd"], last["fiberid"])
            log.info("sdss: page of %d rows (%d so far)", len(table), got)
            if len(table) < want or (top is not None and got >= int(top)):
                break
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = vstack(pieces, metadata_conflicts="silent") if pieces else Table()
        return self._spectra_products(table, failed=[])

    def query_identifiers(self, catalog, *, chunk_size: int | None = None) -> Table:
        """The spectra named by a catalog's ``plate, mjd, fiberid`` columns (any case), e.g. DR16Q.

        Many spectra per request: ``(plate = P AND mjd = M AND fiberID IN (...)) OR ...``
        in chunks whose URL stays under :data:`MAX_URL_CHARS`.  ``idx`` is the
        catalog row of each spectrum; rows SkyServer does not know are listed in
        ``meta["missing"]``.
        """
        names = {n.lower(): n for n in catalog.colnames}
        missing = [c for c in ("plate", "mjd", "fiberid") if c not in names]
        if missing:
            raise CoordinateError(f"catalog: needs plate, mjd and fiberid columns to name spectra; lacks {missing}")
        keys = np.stack([np.asarray(catalog[names[c]], dtype=np.int64) for c in ("plate", "mjd", "fiberid")], axis=1)
        cols = ", ".join(SPEC_COLUMNS)

        def build(idx):
            groups: dict = {}
            for p, m, f in keys[idx]:
                groups.setdefault((int(p), int(m)), []).append(str(int(f)))
            where = " OR ".join(
                f"(s.plate = {p} AND s.mjd = {m} AND s.fiberID IN ({', '.join(fs)}))" for (p, m), fs in groups.items()
            )
            return f"SELECT {cols} FROM SpecObj AS s WHERE {where}"

        table, failed = self._run_chunks(np.arange(len(keys)), build, chunk_size, what="catalog rows")
        products = self._spectra_products(table, failed=failed)
        row_of = {tuple(k): i for i, k in enumerate(keys.tolist())}
        products["idx"] = [
            row_of.get((int(p), int(m), int(f)), -1)
            for p, m, f in zip(products["plate"], products["mjd"], products["fiberid"])
        ]
        found = set(products["idx"])
        products.meta["missing"] = [
            i for i in range(len(keys)) if i not in found and i not in {f["idx"] for f in failed}
        ]
        return products

    def query_photometry(
        self, coordinates, *, radius=None, chunk_size: int | None = None, get_query_payload: bool = False
    ) -> Table:
        """Primary photometric objects (PhotoObj) around each position; ``idx`` names the position."""
        coords = parse_coordinates(coordinates)
        coords = coords.reshape((1,)) if coords.isscalar else coords

        def build(idx):
            return self.build_photometry_sql(coordinates=coords[idx], radius=radius, first_index=int(idx[0]))

        if get_query_payload:
            return self.sql_payload(build(self._chunk_indices(coords, build)[0]))
        table, failed = self._run_chunks(coords, build, chunk_size)
        table.meta["failed"] = failed
        return table

    def _chunk_indices(self, coords, build, chunk_size: int | None = None) -> list[np.ndarray]:
        """Split position indices into runs whose GET URL stays under :data:`MAX_URL_CHARS`."""
        n = len(coords)
        one = len(urlencode({"cmd": build(np.array([0]))}))
        # what each more item adds (a whole cone block, or one clause of a catalog look-up)
        more = len(urlencode({"cmd": build(np.array([0, 1]))})) - one if n > 1 else one
        base = len(self.sql_url()) + 60 + one - more
        per = max(1, (MAX_URL_CHARS - base) // max(1, more))
        if chunk_size is not None:
            if int(chunk_size) < 1:
                raise CoordinateError(f"chunk_size: expected a positive number of positions, got {chunk_size}")
            per = min(per, int(chunk_size))
        return [np.arange(lo, min(n, lo + per)) for lo in range(0, n, per)]

    def _run_chunks(self, coords, build, chunk_size=None, what: str = "positions") -> tuple[Table, list[dict]]:
        """Run the chunks of ``coords`` (positions, or row numbers of a catalog); bisect failing chunks."""
        pieces, failed = [], []
        pending = self._chunk_indices(coords, build, chunk_size)
        while pending:
            idx = pending.pop(0)
            try:
                pieces.append(self.query_sql(build(idx)))
            except ArchiveError as err:
                if len(idx) > 1:
                    # one bad position (or a transient failure) must not sink the others: bisect
                    half = len(idx) // 2
                    log.info("sdss: a chunk of %d positions failed (%s); splitting", len(idx), err)
                    pending[:0] = [idx[:half], idx[half:]]
                    continue
                i = int(idx[0])
                where = (
                    {"ra": float(coords[i].ra.deg), "dec": float(coords[i].dec.deg)} if hasattr(coords, "ra") else {}
                )
                failed.append({"idx": i, **where, "error": str(err)})
        if failed:
            warnings.warn(
                f"sdss: {len(failed)} of {len(coords)} {what} failed (see table.meta['failed']); "
                f"first: row {failed[0]['idx']}: {failed[0]['error']}",
                LatentskyWarning,
                stacklevel=3,
            )
        pieces = [p for p in pieces if len(p.colnames)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = vstack(pieces, metadata_conflicts="silent") if pieces else Table()
        return table, failed

    def _spectra_products(self, table: Table, *, failed: list) -> Table:
        n = len(table)
        if n == 0 and not table.colnames:
            table = Table(
                {
                    name: np.array(
                        [],
                        dtype=float
                        if name in ("ra", "dec", "z")
                        else (int if name in ("plate", "mjd", "fiberid") else str),
                    )
                    for name in (
                        "specobjid",
                        "ra",
                        "dec",
                        "z",
                        "class",
                        "plate",
                        "mjd",
                        "fiberid",
                        "run2d",
                        "instrument",
                    )
                }
            )
        require_columns(table, ("ra", "dec", "plate", "mjd", "fiberid"), parameter="SkyServer answer")
        out = Table()
        plate = np.asarray(table["plate"], dtype=int)
        mjd = np.asarray(table["mjd"], dtype=int)
        fiber = np.asarray(table["fiberid"], dtype=int)
        run2d = np.asarray(table["run2d"]).astype(str) if "run2d" in table.colnames else np.full(n, "26")
        out["archive"] = np.full(n, "sdss")
        out["product_id"] = np.array([f"{p:04d}-{m}-{f:04d}" for p, m, f in zip(plate, mjd, fiber)], dtype=str)
        out["object"] = (
            np.asarray(table["specobjid"]).astype(str) if "specobjid" in table.colnames else out["product_id"]
        )
        out["ra"] = np.asarray(table["ra"], dtype=float) * u.deg
        out["dec"] = np.asarray(table["dec"], dtype=float) * u.deg
        out["date"] = (
            np.array([Time(float(m), format="mjd").isot for m in mjd], dtype=str) if n else np.array([], dtype=str)
        )
        out["instrument"] = (
            np.asarray(table["instrument"]).astype(str) if "instrument" in table.colnames else np.full(n, "SDSS")
        )
        out["access_url"] = np.array(
            [spectrum_url(p, m, f, r) for p, m, f, r in zip(plate, mjd, fiber, run2d)], dtype=str
        )
        for name in table.colnames:
            if name not in out.colnames:
                out[name] = table[name]
        out.meta["failed"] = failed
        return out

    # ------------------------------------------------------------------ plan
    def plan(self, products: Table, dest: str | Path) -> list:
        """Download items for SDSS spectra (no network): ``dest/spec-PPPP-MJD-FFFF.fits``, one per spectrum."""
        from latentsky.download.items import DownloadItem

        require_columns(products, ("product_id", "access_url"))
        dest = Path(dest)
        items = {}
        for row in products:
            # one spectrum matched by two nearby positions appears twice in a query: fetch it once
            key = f"sdss/{row['product_id']}"
            items.setdefault(
                key,
                DownloadItem(
                    key=key,
                    url=str(row["access_url"]),
                    dest=dest / safe_name(f"spec-{row['product_id']}.fits"),
                    kind="fits",
                ),
            )
        return list(items.values())


def skyserver_base() -> str:
    """astroquery.sdss's ``skyserver_baseurl`` for ``conf.sdss_skyserver_url``.

    astroquery appends ``/dr<N>/en/tools/search/x_results.aspx`` itself, so a
    SkyServer web-service URL (``https://skyserver.sdss.org/dr17/SkyServerWS/``)
    gives its host, and any other URL (a mirror, the local archive's
    ``.../sdss/``) is used as the base.
    """
    url = conf.sdss_skyserver_url.strip()
    return re.sub(r"/dr\d+/SkyServerWS/?$", "", url, flags=re.IGNORECASE).rstrip("/")


@contextlib.contextmanager
def astroquery_sdss():
    """An astroquery ``SDSSClass`` whose requests go to :func:`skyserver_base` (one caller at a time).

    astroquery reads the server from its process-wide ``conf`` at call time;
    ``conf.set_temp`` points it for the duration of the block.  The client
    sends through latentsky's session (:func:`~latentsky.archives.base.session`:
    the retry policy, the user agent, offline mode).
    """
    from astroquery.sdss import SDSSClass
    from astroquery.sdss import conf as astroquery_conf

    with _ASTROQUERY_LOCK, astroquery_conf.set_temp("skyserver_baseurl", skyserver_base()):
        client = SDSSClass()
        client._session = session()
        yield client


def _judge(response, url: str) -> None:
    """Raise what a SkyServer answer deserves under the download policy.

    An error status is final (the session has asked again already); an HTML
    page where a table was expected is worth another try (:class:`_Retryable`).
    """
    from latentsky.download.policy import HTML_SNIFF, attempts_of, check_answer
    from latentsky.exceptions import DownloadError

    try:
        check_answer(
            "sdss",
            url,
            response.status_code,
            response.reason or "",
            response.headers,
            response.content[:HTML_SNIFF],
            kind="csv",
        )
    except DownloadError as err:
        snippet = response.text[:200].strip().replace("\n", " ")
        message = f"sdss: {url} answered {err.problem}: {snippet!r}"
        if response.status_code >= 300:
            attempts = attempts_of(response)
            raise ArchiveError(message + (f" (after {attempts} attempts)" if attempts > 1 else "")) from None
        raise _Retryable(message, err.retry_after) from None


def spectrum_url(plate: int, mjd: int, fiber: int, run2d: str = "26", *, data_release: int | None = None) -> str:
    """SAS URL of one spectrum file (``conf.sdss_sas_url``, astroquery.sdss's DR16/17 path rule)."""
    dr = conf.sdss_data_release if data_release is None else data_release
    run2d = str(run2d).strip()
    spectra = "spectra" if run2d in ("26", "103", "104") else "spectra/full"
    return (
        f"{conf.sdss_sas_url.rstrip('/')}/dr{dr}/sdss/spectro/redux/{run2d}/{spectra}/{int(plate):04d}/"
        f"spec-{int(plate):04d}-{int(mjd)}-{int(fiber):04d}.fits"
    )


def parse_skyserver_csv(text: str, *, url: str = "SkyServer") -> Table:
    """Parse SkyServer's CSV answer (``#Table1`` line, header, rows) into a Table.

    Identifier columns (``objid``, ``specobjid``) stay strings: they are 64-bit
    integers that must not pass through floating point.

    Raises
    ------
    ArchiveError
        When the text is an error message or HTML page rather than a table.
    """
    lines = text.lstrip("\ufeff").splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    if lines and lines[0].startswith("#Table"):
        lines.pop(0)
    if not lines or lines[0].lstrip().startswith(("<", "Error", "ERROR")) or "," not in lines[0] and len(lines) > 1:
        snippet = " ".join(lines[:3])[:300]
        raise ArchiveError(f"sdss: {url} answered with no table: {snippet!r}")
    import pandas as pd

    header = [h.strip().lower() for h in lines[0].split(",")]
    dtypes = {h: str for h in header if h in _ID_COLUMNS}
    frame = pd.read_csv(io.StringIO("\n".join(lines)), dtype=dtypes)
    frame.columns = header
    for name in ("class", "subclass", "run2d", "instrument"):
        if name in frame.columns:
            frame[name] = [("" if pd.isna(v) else str(v)) for v in frame[name]]
    return Table.from_pandas(frame)


sdss = SDSS()
"""The module-level client (astroquery style)."""
