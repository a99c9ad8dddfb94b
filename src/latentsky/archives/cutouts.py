"""Image cutouts for a table of coordinates, streamed into one chunked Zarr array, resumable.

For N targets and B bands (SDSS g/r/i, FIRST, UKIDSS K...), :func:`fetch_cutouts`
fills a cutout folder (:mod:`latentsky.archives.cutout_store`): the pixels in
``cutouts.zarr`` (N x B x H x W float32, NaN where there is no image), the
targets in ``index.parquet``, the progress in ``progress.sqlite``, instead of
hundreds of thousands of loose files.  :func:`open_cutouts` reads it back.

Where the pixels come from: the CDS **hips2fits** service
(``conf.hips2fits_url``) resamples the SDSS9, FIRST and UKIDSS HiPS onto
exactly the requested H x W grid, one request per cell (target, band).
astroquery.hips2fits builds the request and serves one-off cutouts
(:mod:`latentsky.archives.hips2fits`); the bulk transfer is latentsky's: a
:class:`~latentsky.download.pool.RequestPool` streams the cells through a
bounded window (no barrier between blocks) with latentsky's retry policy (:mod:`latentsky.download.policy`) and per-host
limit, because astroquery sends one request at a time.  (astroquery.skyview and
astroquery.ukidss, :mod:`latentsky.archives.skyview` and
:mod:`latentsky.archives.ukidss`, give whole images and catalogues one
position at a time: for 10^5 targets hips2fits is the service.)

Statuses: ``ok``; ``off_footprint`` (the service returned a blank image: the
target lies outside the survey), final and never asked again; ``error``,
asked again on later runs until ``attempts`` reaches ``max_attempts`` (an
error the policy calls final, e.g. a 400, is not).  Running the same call
again resumes: recorded cells are not requested again.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
from astropy.table import Table

from latentsky.archives.base import parse_coordinates
from latentsky.archives.cutout_store import ERROR, INDEX_NAME, OFF, OK, PENDING, STATUSES, ZARR_NAME, CutoutStore
from latentsky.archives.hips2fits import fetch_one, hips2fits_params, parse_cutout
from latentsky.config import conf
from latentsky.exceptions import LatentskyError
from latentsky.progress import Progress, ProgressCallback

log = logging.getLogger(__name__)

__all__ = [
    "SURVEYS",
    "STATUSES",
    "CutoutResult",
    "fetch_cutouts",
    "open_cutouts",
    "fetch_one",
    "hips2fits_params",
    "parse_cutout",
    "ZARR_NAME",
    "INDEX_NAME",
]

SURVEYS = {
    **{f"SDSS-{band}": (f"CDS/P/SDSS9/{band}", 0.396) for band in "ugriz"},
    "FIRST": ("CDS/P/FIRST", 1.8),
    **{f"UKIDSS-{band}": (f"CDS/P/UKIDSS/{band}", 0.4) for band in "YJHK"},
}
"""Band name -> (HiPS identifier, native pixel scale in arcsec).  The identifiers follow
the CDS HiPS list (https://aladin.cds.unistra.fr/hips/list); check them there
before a large run, and pass ``hips={"band": "ID"}`` to override."""

PROGRESS_INTERVAL = 0.2
"""Seconds between two progress events of a run (the terminal bar and the app's widget)."""


@dataclasses.dataclass
class CutoutResult:
    """What :func:`fetch_cutouts` did.

    Attributes
    ----------
    path : Path
        The output folder (see :mod:`latentsky.archives.cutout_store`).
    bands : list of str
    counts : dict
        ``{status: number of (target, band) cells}``, over all runs.
    errors : Table
        One row per cell still in error: ``row, band, ra, dec, attempts, error``.
    requests : int
        HTTP requests sent in this run.
    elapsed : float
        Duration of this run, s.
    """

    path: Path
    bands: list
    counts: dict
    errors: Table
    requests: int = 0
    elapsed: float = 0.0

    @property
    def complete(self) -> bool:
        """True when no cell is pending or in error (off-footprint cells count as done)."""
        return not self.counts.get("pending") and not self.counts.get("error")


def fetch_cutouts(
    coordinates,
    dest: str | Path,
    *,
    bands=("SDSS-g", "SDSS-r", "SDSS-i"),
    size: int = 28,
    pixel_scale: dict | float | None = None,
    hips: dict | None = None,
    block: int = 256,
    max_attempts: int = 3,
    connections: int | None = None,
    progress: ProgressCallback | None = None,
    backoff: float | None = None,
    seed: int | None = None,
) -> CutoutResult:
    """Fetch ``size`` x ``size`` cutouts of every target in every band; resumable.

    Parameters
    ----------
    coordinates : Table, SkyCoord or (ra, dec)
        Targets.  A Table keeps its other columns (e.g. names) in the index;
        it needs ``ra``/``dec`` in degrees.
    dest : path-like
        Output folder; created if needed.  If it already holds a store for the
        same targets, bands and size, the run continues it.
    bands : sequence of str
        Keys of :data:`SURVEYS` (or any name given in ``hips``).
    size : int
        Cutout width and height in pixels (default 28).
    pixel_scale : float or dict, optional
        Arcsec per pixel (one for all bands, or per band); default the
        survey's native scale.
    hips : dict, optional
        ``{band: HiPS identifier}`` overriding :data:`SURVEYS`.
    block : int
        Targets per Zarr chunk (fixed when the folder is made).
    max_attempts : int
        Requests per cell, over all runs, before its error is final.
    connections : int, optional
        Requests in flight to the service (default ``conf.max_connections_per_host``).
    progress : callable, optional
        Receives :class:`~latentsky.progress.ProgressEvent` (task ``"cutouts"``,
        unit ``"cells"``; the message counts ok, off-footprint and failed
        cells and the time left).
    backoff : float, optional
        Base of the retry backoff, s (default ``conf.retry_backoff``; see
        :class:`~latentsky.download.policy.RetryPolicy`).
    seed : int, optional
        Seed of the backoff jitter (tests).

    Returns
    -------
    CutoutResult
    """
    from latentsky.download.policy import RetryPolicy
    from latentsky.download.pool import RequestPool

    t0 = time.monotonic()
    bands, hips_ids, scales = _check_bands(bands, size, pixel_scale, hips)
    if int(max_attempts) < 1:
        raise LatentskyError(f"max_attempts: expected a positive number of requests, got {max_attempts!r}")
    coords = parse_coordinates(coordinates, parameter="coordinates")
    coords = coords.reshape((1,)) if coords.isscalar else coords
    settings = {"bands": bands, "size": int(size), "hips": hips_ids, "pixel_scale_arcsec": scales, "block": int(block)}
    store = CutoutStore.create_or_open(dest, _targets(coordinates, coords), settings)
    try:
        with store.running():
            connections = int(connections or conf.max_connections_per_host)
            pool = RequestPool(
                max_connections=connections,
                max_connections_per_host=connections,
                policy=RetryPolicy(max_attempts=int(max_attempts), backoff=backoff),
                seed=seed,
            )
            run = _Run(
                store, coords, [_url_prefix(hips_ids[b], int(size), scales[b]) for b in bands], int(max_attempts)
            )
            with Progress("cutouts", total=run.total, unit="cells", callback=progress) as bar:
                run.bar = bar
                size_ = int(size)
                for batch in pool.batches(run.requests(), parse=lambda body, _h: parse_cutout(body, size_)):
                    run.record(batch)
                run.finish()
            result = _result(store)
            result.requests, result.elapsed = pool.stats.requests, time.monotonic() - t0
            return result
    finally:
        store.close()


def _check_bands(bands, size, pixel_scale, hips):
    bands = [str(b) for b in bands]
    if not bands:
        raise LatentskyError("bands: give at least one band")
    if len(set(bands)) != len(bands):
        raise LatentskyError(f"bands: {bands} names a band twice")
    if not (isinstance(size, (int, np.integer)) and 1 <= size <= 2048):
        raise LatentskyError(f"size: expected an integer number of pixels in [1, 2048], got {size!r}")
    hips_ids, scales = {}, {}
    for band in bands:
        known = SURVEYS.get(band)
        hips_ids[band] = (hips or {}).get(band) or (known[0] if known else None)
        if hips_ids[band] is None:
            raise LatentskyError(f"bands: unknown band {band!r}; known: {sorted(SURVEYS)} (or pass hips=...)")
        scale = pixel_scale.get(band) if isinstance(pixel_scale, dict) else pixel_scale
        scales[band] = float(scale if scale is not None else (known[1] if known else 1.0))
        if not scales[band] > 0:
            raise LatentskyError(f"pixel_scale: must be > 0 arcsec for band {band!r}, got {scales[band]}")
    return bands, hips_ids, scales


def _url_prefix(hips_id: str, size: int, scale: float) -> str:
    """The hips2fits URL of a band's cells, up to the position (``&ra=..&dec=..`` follows)."""
    params = hips2fits_params(hips_id, 0.0, 0.0, size, scale)
    fixed = {k: v for k, v in params.items() if k not in ("ra", "dec")}
    return f"{conf.hips2fits_url}?{urlencode(fixed)}"


def _targets(original, coords):
    import pandas as pd

    frame = pd.DataFrame({"row": np.arange(len(coords)), "ra": coords.ra.deg, "dec": coords.dec.deg})
    if isinstance(original, Table):
        for name in original.colnames:
            if name.lower() in ("ra", "dec", "row") or original[name].ndim != 1:
                continue
            values = np.asarray(original[name])
            frame[name] = values.astype(str) if values.dtype.kind in "SUO" else values
    return frame


class _Run:
    """One run over a store: which cells to ask, what to record, which blocks to write."""

    def __init__(self, store: CutoutStore, coords, prefixes: list[str], max_attempts: int):
        self.store, self.prefixes = store, prefixes
        self.ra, self.dec = coords.ra.deg, coords.dec.deg
        self.status, self.attempts, retry = store.state()
        # blocks a killed run left with recorded pixels not yet in their chunk
        for block in store.pending_blocks():
            store.write_block(block, store.load_block(block, stored=True))
        self.wanted = (self.status == PENDING) | ((self.status == ERROR) & retry & (self.attempts < max_attempts))
        self.total = int(self.wanted.sum())
        nblocks = -(-store.n // store.block)
        per_row = self.wanted.sum(axis=1)
        self.scheduled = np.add.reduceat(per_row, np.arange(0, store.n, store.block)) if store.n else np.zeros(0)
        self.resolved = np.zeros(nblocks, np.int64)
        self.had_pixels = (
            np.add.reduceat((self.status == OK).sum(axis=1), np.arange(0, store.n, store.block)) > 0
            if store.n
            else np.zeros(0, bool)
        )
        self.buffers: dict[int, np.ndarray] = {}
        self.counts = {s: int((self.status == code).sum()) for code, s in enumerate(STATUSES)}
        self.failed = 0
        self.bar: Progress | None = None
        self._last_event = 0.0
        self._start = time.monotonic()

    def requests(self):
        """The cells to ask, target by target (a generator the pool pulls as room frees)."""
        from latentsky.download.pool import Request

        for lo in range(0, self.store.n, self.store.block):  # block by block: memory stays flat
            rows, bands = np.nonzero(self.wanted[lo : lo + self.store.block])
            for i, b in zip((rows + lo).tolist(), bands.tolist()):
                yield Request(
                    (i, b),
                    f"{self.prefixes[b]}&ra={float(self.ra[i])!r}&dec={float(self.dec[i])!r}",
                    attempts=int(self.attempts[i, b]),
                )

    def record(self, batch) -> None:
        """Record a batch of outcomes (one transaction), then write the blocks it completed."""
        cells, pixels, touched = [], [], collections.Counter()
        for outcome in batch:
            i, b = outcome.request.key
            attempts = outcome.request.attempts
            if outcome.ok:
                status, image, coverage = outcome.value
                code, retry, error = (OK if status == "ok" else OFF), 1, ""
                if image is not None:
                    pixels.append((i, b, image))
            else:
                code, retry, coverage, error = ERROR, int(outcome.error.retryable), 0.0, outcome.error.problem
                self.failed += 1
            cells.append((i, b, code, attempts, retry, coverage, error))
            self.counts[STATUSES[self.status[i, b]]] -= 1
            self.counts[STATUSES[code]] += 1
            self.status[i, b] = code
            touched[i // self.store.block] += 1
        self.store.record(cells, pixels)
        for i, b, image in pixels:
            block = i // self.store.block
            if block not in self.buffers:
                self.buffers[block] = self.store.load_block(block, stored=bool(self.had_pixels[block]))
            self.buffers[block][i - block * self.store.block, b] = image
        for block, k in touched.items():
            self.resolved[block] += k
            if self.resolved[block] >= self.scheduled[block]:
                self._write(block)
        self._advance(len(batch))

    def _write(self, block: int) -> None:
        data = self.buffers.pop(block, None)
        if data is not None:
            self.store.write_block(block, data)

    def finish(self) -> None:
        for block in list(self.buffers):
            self._write(block)
        self._advance(0, force=True)

    def _advance(self, n: int, force: bool = False) -> None:
        bar = self.bar
        bar.done += n
        now = time.monotonic()
        if not force and now - self._last_event < PROGRESS_INTERVAL:
            return
        self._last_event = now
        elapsed = now - self._start
        rate = bar.done / elapsed if elapsed > 0 else 0.0
        left = (bar.total - bar.done) / rate if rate > 0 else None
        bar.advance(
            0,
            f"ok {self.counts['ok']:,} · off {self.counts['off_footprint']:,} · failed {self.failed:,}"
            + (f" · {_duration(left)} left" if left is not None and bar.done < bar.total else ""),
        )


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _result(store: CutoutStore) -> CutoutResult:
    cells = store.cells()
    counts = {s: 0 for s in STATUSES}
    for code, k in zip(*np.unique(cells["status"], return_counts=True)):
        counts[STATUSES[code]] = int(k)
    counts["pending"] = store.n * len(store.bands) - len(cells["row"])
    errors = store.errors()
    rows = sorted(errors)
    targets = store.targets() if rows else None
    attempts = (
        {
            (int(r), int(b)): int(a)
            for r, b, a in zip(cells["row"], cells["band"], cells["attempts"])
            if (int(r), int(b)) in errors
        }
        if rows
        else {}
    )
    table = Table(
        {
            "row": [r for r, _ in rows],
            "band": [store.bands[b] for _, b in rows],
            "ra": [float(targets["ra"].iloc[r]) for r, _ in rows],
            "dec": [float(targets["dec"].iloc[r]) for r, _ in rows],
            "attempts": [attempts[k] for k in rows],
            "error": [errors[k] for k in rows],
        },
        dtype=(int, str, float, float, int, str),
    )
    return CutoutResult(store.path, store.bands, counts, table)


def open_cutouts(dest: str | Path):
    """Open a cutout folder: ``(images, index)``.

    ``images`` is the Zarr array (N x B x H x W), ``index`` a DataFrame with
    one row per target: its columns, and per band ``status_<band>``,
    ``attempts_<band>``, ``error_<band>``, ``coverage_<band>``.
    """
    store = CutoutStore.open(dest)
    try:
        index = store.targets()
        cells, errors = store.cells(), store.errors()
        for b, band in enumerate(store.bands):
            mine = cells["band"] == b
            rows = cells["row"][mine]
            status = np.full(store.n, "pending", dtype=object)
            status[rows] = np.asarray(STATUSES, dtype=object)[cells["status"][mine]]
            attempts, coverage = np.zeros(store.n, int), np.zeros(store.n)
            attempts[rows], coverage[rows] = cells["attempts"][mine], cells["coverage"][mine]
            error = np.full(store.n, "", dtype=object)
            for (row, b_), text in errors.items():
                if b_ == b:
                    error[row] = text
            index[f"status_{band}"], index[f"attempts_{band}"] = status, attempts
            index[f"error_{band}"], index[f"coverage_{band}"] = error, coverage
        return store.images, index
    finally:
        store.close()
