"""SDSS: spectra and photometry through the SkyServer SQL search (astroquery.sdss), files from the SAS.

This module is the client: what to ask, in how many requests, and the
product table.  The SQL text is :mod:`latentsky.archives.sdss_sql`'s; each
statement is sent by :mod:`astroquery.sdss` through latentsky's session and
retry policy (:mod:`latentsky.archives.sdss_skyserver`).

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

import logging
import warnings
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
from astropy import units as u
from astropy.table import Table, vstack
from astropy.time import Time

from latentsky.archives import sdss_skyserver as skyserver
from latentsky.archives.base import Archive, fits_items, parse_coordinates, require_columns
from latentsky.archives.sdss_skyserver import astroquery_sdss, parse_skyserver_csv, skyserver_base
from latentsky.archives.sdss_sql import PHOTO_COLUMNS, SPEC_COLUMNS, identifiers_sql, photometry_sql, spectra_sql
from latentsky.config import conf
from latentsky.exceptions import ArchiveError, CoordinateError, LatentskyWarning

__all__ = [
    "SDSS",
    "sdss",
    "spectrum_url",
    "parse_skyserver_csv",
    "skyserver_base",
    "astroquery_sdss",
    "SPEC_COLUMNS",
    "PHOTO_COLUMNS",
    "MAX_URL_CHARS",
    "ROW_LIMIT",
    "PAGE_ROWS",
]

log = logging.getLogger(__name__)

MAX_URL_CHARS = 6000
"""Longest GET URL sent: well under the 8 kB many servers and proxies accept."""

ROW_LIMIT = 500_000
"""SkyServer's row cap on one SQL answer; an answer this long is treated as truncated."""

PAGE_ROWS = 100_000
"""Rows asked per page when a whole class is read (well under :data:`ROW_LIMIT`)."""


class SDSS(Archive):
    """Client of the SDSS SkyServer (SQL) and SAS (files)."""

    name = "sdss"

    # ------------------------------------------------------------------ SQL
    def sql_url(self, data_release: int | None = None) -> str:
        """The SkyServer SQL search URL astroquery.sdss asks (from ``conf.sdss_skyserver_url``)."""
        return skyserver.sql_url(data_release)

    def query_sql(self, sql: str, *, data_release: int | None = None) -> Table:
        """Run one SQL statement on SkyServer (:func:`~latentsky.archives.sdss_skyserver.run_sql`)."""
        return skyserver.run_sql(sql, data_release=data_release)

    def sql_payload(self, sql: str, *, data_release: int | None = None) -> dict:
        """The request parameters astroquery.sdss sends for ``sql`` (no network)."""
        return skyserver.sql_payload(sql, data_release=data_release)

    build_spectra_sql = staticmethod(spectra_sql)
    build_photometry_sql = staticmethod(photometry_sql)

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

        def build(idx):
            return identifiers_sql(keys[idx])

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
        return fits_items(products, dest, archive="sdss", file_prefix="spec-")


def spectrum_url(plate: int, mjd: int, fiber: int, run2d: str = "26", *, data_release: int | None = None) -> str:
    """SAS URL of one spectrum file (``conf.sdss_sas_url``, astroquery.sdss's DR16/17 path rule)."""
    dr = conf.sdss_data_release if data_release is None else data_release
    run2d = str(run2d).strip()
    spectra = "spectra" if run2d in ("26", "103", "104") else "spectra/full"
    return (
        f"{conf.sdss_sas_url.rstrip('/')}/dr{dr}/sdss/spectro/redux/{run2d}/{spectra}/{int(plate):04d}/"
        f"spec-{int(plate):04d}-{int(mjd)}-{int(fiber):04d}.fits"
    )


sdss = SDSS()
"""The module-level client (astroquery style)."""
