"""The ESO Science Archive: reduced spectra (HARPS and others) through TAP/ObsCore.

Why pyvo and not ``astroquery.eso``: astroquery 0.4.11's ESO module still
queries the archive's old web forms (its TAP interface is unreleased), while
ESO publishes its reduced products in the IVOA ObsCore table of the TAP
service ``tap_obs`` (``ivoa.ObsCore``, ``obs_collection='HARPS'``,
``dataproduct_type='spectrum'``).  pyvo is the reference TAP client, so we
write ADQL and let :class:`pyvo.dal.TAPService` do the protocol (synchronous
queries, asynchronous UWS jobs, ``MAXREC``, table upload).

Synchronous or asynchronous (``mode``): ESO ends a synchronous query after
60 s, so a large one (all 267,487 HARPS spectra) must run as an asynchronous
job.  By default (``mode="auto"``) a query is sent synchronously for at most
``conf.tap_sync_rows`` rows; when the answer is capped there, the query is
larger than a synchronous one should be and runs again as a job (pyvo's
:meth:`~pyvo.dal.TAPService.submit_job`), as do the pieces it is split into.

Row limits (astroquery #638): a TAP service caps results and says so with
``QUERY_STATUS=OVERFLOW``.  A capped answer is never returned: the query is
split in time (``t_min`` halves) and, for uploaded target lists, in halves of
the list, until every piece fits; a piece that cannot be split raises
:class:`~latentsky.exceptions.QueryTruncatedError`.

The ADQL is written by :mod:`latentsky.archives.eso_adql`, each query sent by
:mod:`latentsky.archives.eso_tap`; this module splits queries and makes the
product table and the download plan.

Examples
--------
>>> from latentsky.archives.eso import eso
>>> print(eso.query(collection="HARPS", start="2012-01-01", end="2013-01-01",
...                 get_query_payload=True))                                   # doctest: +NORMALIZE_WHITESPACE
SELECT dp_id, obs_collection, instrument_name, dataproduct_type, target_name, s_ra, s_dec, t_min, t_max,
    t_exptime, em_min, em_max, access_url, access_format, access_estsize FROM ivoa.ObsCore
    WHERE obs_collection = 'HARPS' AND dataproduct_type = 'spectrum' AND t_min >= 55927.0 AND t_min < 56293.0
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table, unique, vstack
from astropy.time import Time

from latentsky.archives.base import (
    Archive,
    parse_coordinates,
    parse_radius,
    parse_time,
    require_columns,
    resolve_name,
    safe_name,
)
from latentsky.archives.eso_adql import OBSCORE_COLUMNS, obscore_adql
from latentsky.archives.eso_tap import run_tap
from latentsky.config import conf
from latentsky.exceptions import CoordinateError, QueryTruncatedError

log = logging.getLogger(__name__)

FIRST_MJD = 44239.0
"""1980-01-01: earlier than any ESO product; the lower end of a split when no start is given."""

MIN_SLICE_DAYS = 1.0 / 86400.0
"""A time slice shorter than one second that still overflows cannot be split further."""

MODES = ("auto", "sync", "async")
"""How a query is sent: synchronously up to ``conf.tap_sync_rows`` rows, else as a job; always synchronously;
always as an asynchronous (UWS) job."""

UPLOAD_CHUNK = 5000
"""Targets per uploaded table (ESO's upload limit is generous; this keeps each query short)."""

DEFAULT_NAME_RADIUS = 60 * u.arcsec
"""Cone around a resolved target name: catalogue J2000 positions and pointing
coordinates of date differ by tens of arcseconds for high proper-motion stars."""


class ESO(Archive):
    """Client of the ESO TAP service (``conf.eso_tap_url``) for reduced products.

    ``query`` returns one row per product with the columns of
    :data:`~latentsky.archives.base.PRODUCT_COLUMNS` plus the ObsCore ones;
    ``plan`` makes the download items (``conf.eso_data_url`` + ``dp_id``).
    """

    name = "eso"

    # ------------------------------------------------------------------ ADQL
    build_query = staticmethod(obscore_adql)
    """The ADQL for one query, no network (:func:`~latentsky.archives.eso_adql.obscore_adql`)."""

    # ------------------------------------------------------------------ query
    def query(
        self,
        target: str | None = None,
        *,
        coordinates=None,
        radius=None,
        collection: str | None = "HARPS",
        instrument: str | None = None,
        dataproduct_type: str | None = "spectrum",
        target_name: str | None = None,
        start=None,
        end=None,
        maxrec: int | None = None,
        mode: str = "auto",
        get_query_payload: bool = False,
    ) -> Table:
        """Find products; one row per product, never silently truncated.

        Parameters
        ----------
        target : str, optional
            Object name, resolved to a position (``conf.name_table`` first,
            Sesame unless ``conf.offline``) and searched within ``radius``
            (default 60 arcsec).
        coordinates : SkyCoord, (ra, dec), str or Table, optional
            One position (cone of ``radius``, default 10 arcsec) or many (a
            Table with ``ra``/``dec`` [deg] and optionally ``radius`` [deg]
            columns, or an array SkyCoord): uploaded to the TAP service in
            chunks of :data:`UPLOAD_CHUNK` and joined there.
        radius : Quantity, Angle, str or float (deg), optional
            Search radius.
        collection, instrument, dataproduct_type, target_name : str or None
            Exact matches on ObsCore columns (None: any).
        start, end : str, Time or float (MJD), optional
            Observation start (``t_min``) in ``[start, end)``.
        maxrec : int, optional
            Rows asked per request (default ``conf.tap_maxrec``); an
            ``OVERFLOW`` answer makes the client split the query.
        mode : {"auto", "sync", "async"}
            ``"auto"``: synchronously, and as an asynchronous job when the
            answer has more than ``conf.tap_sync_rows`` rows; ``"sync"``,
            ``"async"``: always so.
        get_query_payload : bool
            Return the ADQL (first request) instead of querying.

        Returns
        -------
        Table
            Columns ``archive, product_id, object, ra, dec, date, instrument,
            access_url`` and the ObsCore ones (``dp_id``, ``t_min``...);
            ``target_index`` when a table of targets was given.

        Raises
        ------
        CoordinateError
            Bad position, radius, date or unknown target name (names the parameter).
        ArchiveError
            The service failed or refused the query.
        QueryTruncatedError
            A capped answer that could not be split further.
        """
        if target is not None and coordinates is not None:
            raise CoordinateError("give either target (a name) or coordinates, not both")
        if target is not None:
            coordinates = resolve_name(target, parameter="target")
            radius = DEFAULT_NAME_RADIUS if radius is None else radius
        upload = None
        if coordinates is not None:
            coords = parse_coordinates(coordinates)
            default = 10 * u.arcsec
            if coords.isscalar:
                coordinates, radius = coords, parse_radius(default if radius is None else radius)
            else:
                upload = self._upload_table(coordinates, coords, radius if radius is not None else default)
                coordinates = None
        filters = dict(
            collection=collection,
            instrument=instrument,
            dataproduct_type=dataproduct_type,
            target_name=target_name,
            coordinates=coordinates,
            radius=radius,
        )
        t0, t1 = parse_time(start, parameter="start"), parse_time(end, parameter="end")
        maxrec = int(maxrec or conf.tap_maxrec)
        if maxrec <= 0:
            raise CoordinateError(f"maxrec must be a positive number of rows, got {maxrec}")
        if mode not in MODES:
            raise CoordinateError(f"mode: expected one of {MODES}, got {mode!r}")
        if get_query_payload:
            return self.build_query(**filters, start=t0, end=t1, upload="targets" if upload is not None else None)
        pieces: list[Table] = []
        if upload is None:
            pieces += self._collect(filters, None, t0, t1, maxrec, mode)
        else:
            for lo in range(0, len(upload), UPLOAD_CHUNK):
                pieces += self._collect(filters, upload[lo : lo + UPLOAD_CHUNK], t0, t1, maxrec, mode)
        raw = _vstack(pieces)
        return self._normalise(raw)

    def _upload_table(self, original, coords, radius) -> Table:
        table = Table({"target_index": np.arange(len(coords)), "ra": coords.ra.deg, "dec": coords.dec.deg})
        if isinstance(original, Table) and "radius" in original.colnames:
            col = original["radius"]
            values = u.Quantity(col).to_value(u.deg) if col.unit is not None else np.asarray(col, float)
            if not np.all((values > 0) & (values <= 180)):
                bad = np.flatnonzero(~((values > 0) & (values <= 180)))[:5].tolist()
                raise CoordinateError(f"coordinates: column 'radius' must be in (0, 180] deg; rows {bad} are not")
            table["radius"] = values
        else:
            table["radius"] = np.full(len(coords), parse_radius(radius).deg)
        return table

    def _collect(self, filters: dict, upload: Table | None, t0, t1, maxrec: int, mode: str) -> list[Table]:
        """Run one query; on overflow split it (targets first, then time) and run the halves."""
        adql = self.build_query(**filters, start=t0, end=t1, upload="targets" if upload is not None else None)
        table, overflow, mode = self._ask(adql, upload, maxrec, mode)
        if not overflow:
            return [table]
        if upload is not None and len(upload) > 1:
            half = len(upload) // 2
            log.info("ESO: %d targets overflowed maxrec=%d; splitting the list", len(upload), maxrec)
            return self._collect(filters, upload[:half], t0, t1, maxrec, mode) + self._collect(
                filters, upload[half:], t0, t1, maxrec, mode
            )
        lo = FIRST_MJD if t0 is None else t0.mjd
        hi = Time.now().mjd + 1.0 if t1 is None else t1.mjd
        if hi - lo <= MIN_SLICE_DAYS:
            raise QueryTruncatedError(
                f"eso: more than maxrec={maxrec} products start within one second "
                f"(t_min in [{lo}, {hi}) MJD) for {adql!r}; raise maxrec"
            )
        mid = lo + (hi - lo) / 2
        log.info("ESO: answer capped at %d rows (OVERFLOW); splitting t_min at MJD %.6f", maxrec, mid)
        pieces = []
        if t0 is None and t1 is None:
            # products without t_min would fall in no time slice: fetch them on their own
            pieces += self._null_time_rows(filters, upload, maxrec, mode)
        pieces += self._collect(filters, upload, Time(lo, format="mjd"), Time(mid, format="mjd"), maxrec, mode)
        pieces += self._collect(filters, upload, Time(mid, format="mjd"), Time(hi, format="mjd"), maxrec, mode)
        return pieces

    def _null_time_rows(self, filters, upload, maxrec, mode) -> list[Table]:
        adql = self.build_query(**filters, upload="targets" if upload is not None else None)
        adql += (" AND " if " WHERE " in adql else " WHERE ") + (
            "o.t_min IS NULL" if upload is not None else "t_min IS NULL"
        )
        table, overflow, _ = self._ask(adql, upload, maxrec, mode)
        if overflow:
            raise QueryTruncatedError(f"eso: more than maxrec={maxrec} products without t_min for {adql!r}")
        return [table]

    def _ask(self, adql: str, upload: Table | None, maxrec: int, mode: str) -> tuple[Table, bool, str]:
        """Run one query in ``mode`` (see :data:`MODES`): the table, whether it was capped, and the mode
        its pieces are to be asked in (``"async"`` once a query proved too large for a synchronous one)."""
        if mode == "auto":
            sync_rows = max(1, min(maxrec, int(conf.tap_sync_rows)))
            table, overflow = self._run(adql, upload, sync_rows)
            if not overflow or sync_rows >= maxrec or len(table) < sync_rows:
                # complete; or capped at maxrec all the same; or capped by the service's own limit,
                # below the sync limit, which a job would meet too: split instead
                return table, overflow, mode
            log.info("ESO: more than %d rows (conf.tap_sync_rows): asking again as an asynchronous job", sync_rows)
            mode = "async"
        table, overflow = self._run(adql, upload, maxrec, asynchronous=mode == "async")
        return table, overflow, mode

    def _run(self, adql: str, upload: Table | None, maxrec: int, *, asynchronous: bool = False) -> tuple[Table, bool]:
        """One TAP query (:func:`~latentsky.archives.eso_tap.run_tap`): the table and whether it was capped."""
        return run_tap(adql, upload, maxrec, asynchronous=asynchronous)

    def _normalise(self, raw: Table) -> Table:
        if len(raw) == 0 and not raw.colnames:
            raw = Table(
                {c: np.array([], dtype=float if c.startswith(("s_", "t_", "em_")) else str) for c in OBSCORE_COLUMNS}
            )
        require_columns(raw, ("dp_id", "s_ra", "s_dec", "t_min", "access_url"), parameter="ESO TAP answer")
        table = Table(raw, masked=False, copy=True)
        for name in table.colnames:
            if hasattr(table[name], "filled"):
                col = table[name]
                table[name] = col.filled(np.nan if col.dtype.kind == "f" else ("" if col.dtype.kind in "SUO" else -1))
        # a product can match several uploaded targets: keep it once, with the first target
        if "target_index" in table.colnames and len(table):
            table.sort(["dp_id", "target_index"])
            table = unique(table, keys="dp_id", keep="first")
        return product_table(table)

    # ------------------------------------------------------------------ plan
    def plan(self, products: Table, dest: str | Path, *, auth: str | None = None) -> list:
        """Download items for ESO products (no network).

        ``auth="eso"`` makes the download manager send the ESO token (for
        proprietary data); public data need none.

        The URL is ``conf.eso_data_url + dp_id`` (the data portal's file
        endpoint; ObsCore ``access_url`` is a DataLink document at ESO);
        files go to ``dest/<dp_id>.fits`` with a file-name-safe ``dp_id``.
        FITS files are checked on arrival (``kind="fits"``), which catches
        ESO's login page saved as data (astroquery #1272, #1818).
        """
        from latentsky.download.items import DownloadItem

        require_columns(products, ("dp_id",))
        dest = Path(dest)
        items = []
        for row in products:
            dp_id = str(row["dp_id"])
            # no size check: ObsCore's access_estsize is an estimate in kB
            items.append(
                DownloadItem(
                    key=f"eso/{dp_id}",
                    url=conf.eso_data_url + dp_id,
                    dest=dest / f"{safe_name(dp_id)}.fits",
                    kind="fits",
                    auth=auth,
                )
            )
        return items


def product_table(table: Table) -> Table:
    """Add the common product columns (:data:`~latentsky.archives.base.PRODUCT_COLUMNS`) to an ObsCore table."""
    n = len(table)
    t_min = np.asarray(table["t_min"], dtype=float)
    dates = (
        np.array([Time(t, format="mjd").isot if np.isfinite(t) else "" for t in t_min], dtype=str)
        if n
        else np.array([], dtype=str)
    )
    access = np.asarray(table["access_url"]).astype(str)
    formats = np.asarray(table["access_format"]).astype(str) if "access_format" in table.colnames else np.full(n, "")
    # ESO's ObsCore access_url is a DataLink document; the file itself is on the data portal
    datalink = np.char.find(np.char.lower(formats.astype(str)), "datalink") >= 0 if n else np.zeros(0, bool)
    dp_ids = np.asarray(table["dp_id"]).astype(str)
    files = np.where(datalink, np.char.add(conf.eso_data_url, dp_ids), access) if n else access
    out = Table()
    out["archive"] = np.full(n, "eso")
    out["product_id"] = dp_ids
    out["object"] = np.asarray(table["target_name"]).astype(str) if "target_name" in table.colnames else np.full(n, "")
    out["ra"] = np.asarray(table["s_ra"], dtype=float)
    out["ra"].unit = u.deg
    out["dec"] = np.asarray(table["s_dec"], dtype=float)
    out["dec"].unit = u.deg
    out["date"] = dates
    out["instrument"] = (
        np.asarray(table["instrument_name"]).astype(str) if "instrument_name" in table.colnames else np.full(n, "")
    )
    out["access_url"] = files.astype(str)
    for name in table.colnames:
        if name not in out.colnames:
            out[name] = table[name]
    if "access_url" in table.colnames:
        out["datalink_url"] = np.where(datalink, access, "") if n else access
    return out


def _vstack(pieces: list[Table]) -> Table:
    pieces = [p for p in pieces if p is not None]
    if not pieces:
        return Table()
    nonempty = [p for p in pieces if len(p)] or pieces[:1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return vstack(nonempty, join_type="outer", metadata_conflicts="silent")


eso = ESO()
"""The module-level client (astroquery style)."""
