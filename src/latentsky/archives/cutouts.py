"""Image cutouts for a table of coordinates, into one chunked Zarr array plus a Parquet index.

For N targets and B bands (SDSS g/r/i, FIRST, UKIDSS K...), :func:`fetch_cutouts`
writes ``<dest>/cutouts.zarr`` (array ``images``, float32, N x B x H x W,
chunked by blocks of targets, NaN where nothing was fetched) and
``<dest>/index.parquet`` (one row per target: input columns, ``ra``, ``dec``,
and per band ``status_<band>`` / ``attempts_<band>`` / ``error_<band>`` /
``coverage_<band>``, the fraction of non-blank pixels),
instead of hundreds of thousands of loose files.

Where the pixels come from: the CDS **hips2fits** service (``conf.hips2fits_url``)
resamples the SDSS9, FIRST and UKIDSS HiPS onto exactly the requested H x W
grid, one request per target and band; astroquery.hips2fits builds the same
requests but cannot read its server from our ``conf`` at call time nor give us
per-request timeouts, so the few parameters are built here (see
:func:`hips2fits_params`).  astroquery.skyview (HTML forms, slow and prone to
hanging: astroquery #3347, #3353) and astroquery.ukidss (WSA HTML pages, one
programme per request) fit badly for 10^5 targets; the local archive answers
the same hips2fits requests from real FITS images.

Statuses: ``ok``; ``off_footprint`` (the service returned a blank image: the
target lies outside the survey) is final and never retried; ``error`` is
retried on later runs until ``attempts`` reaches ``max_attempts``.  Running the
same call again resumes: finished cells are skipped.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from astropy.table import Table

from latentsky.archives.base import parse_coordinates, request
from latentsky.config import conf
from latentsky.exceptions import ArchiveError, LatentskyError
from latentsky.progress import Progress, ProgressCallback

log = logging.getLogger(__name__)

SURVEYS = {
    "SDSS-u": ("CDS/P/SDSS9/u", 0.396), "SDSS-g": ("CDS/P/SDSS9/g", 0.396), "SDSS-r": ("CDS/P/SDSS9/r", 0.396),
    "SDSS-i": ("CDS/P/SDSS9/i", 0.396), "SDSS-z": ("CDS/P/SDSS9/z", 0.396),
    "FIRST": ("CDS/P/FIRST", 1.8),
    "UKIDSS-Y": ("CDS/P/UKIDSS/Y", 0.4), "UKIDSS-J": ("CDS/P/UKIDSS/J", 0.4), "UKIDSS-H": ("CDS/P/UKIDSS/H", 0.4),
    "UKIDSS-K": ("CDS/P/UKIDSS/K", 0.4),
}
"""Band name -> (HiPS identifier, native pixel scale in arcsec).  The identifiers follow
the CDS HiPS list (https://aladin.cds.unistra.fr/hips/list); check them there
before a large run, and pass ``hips={"band": "ID"}`` to override."""

STATUSES = ("pending", "ok", "off_footprint", "error")

ZARR_NAME = "cutouts.zarr"
INDEX_NAME = "index.parquet"


@dataclasses.dataclass
class CutoutResult:
    """What :func:`fetch_cutouts` did.

    Attributes
    ----------
    path : Path
        The output folder (``cutouts.zarr`` and ``index.parquet`` inside).
    bands : list of str
    counts : dict
        ``{status: number of (target, band) cells}``.
    errors : Table
        One row per cell still in error: ``row, band, ra, dec, attempts, error``.
    """

    path: Path
    bands: list
    counts: dict
    errors: Table

    @property
    def complete(self) -> bool:
        """True when no cell is pending or in error (off-footprint cells count as done)."""
        return not self.counts.get("pending") and not self.counts.get("error")


def hips2fits_params(hips: str, ra: float, dec: float, size: int, pixel_scale_arcsec: float) -> dict:
    """Query parameters of one hips2fits request (a ``size`` x ``size`` TAN image).

    Parameters
    ----------
    hips : str
        HiPS identifier, e.g. ``"CDS/P/SDSS9/r"``.
    ra, dec : float
        Centre, degrees (ICRS).
    size : int
        Width and height, pixels.
    pixel_scale_arcsec : float
        Pixel size, arcsec; the field of view is ``size * pixel_scale``.
    """
    return {"hips": hips, "width": int(size), "height": int(size), "projection": "TAN", "coordsys": "icrs",
            "ra": f"{float(ra):.8f}", "dec": f"{float(dec):.8f}",
            "fov": f"{size * pixel_scale_arcsec / 3600.0:.10g}", "format": "fits"}


def fetch_one(hips: str, ra: float, dec: float, size: int, pixel_scale_arcsec: float) -> tuple[str, np.ndarray | None, str]:
    """Fetch one cutout; returns ``(status, image or None, error text)``.

    A blank (all-NaN or all-zero) image means the position is off the survey.
    Anything that is not a FITS image of the right shape is an ``error``.
    """
    from astropy.io import fits

    try:
        response = request("GET", conf.hips2fits_url, archive="hips2fits", retries=0,
                           params=hips2fits_params(hips, ra, dec, size, pixel_scale_arcsec))
    except ArchiveError as err:
        return "error", None, str(err)
    body = response.content
    if not body.startswith(b"SIMPLE"):
        return "error", None, f"hips2fits answered {response.headers.get('Content-Type', '?')}, not FITS: " \
                              f"{body[:80]!r}"
    try:
        with fits.open(io.BytesIO(body)) as hdul:
            data = np.asarray(hdul[0].data, dtype=np.float32)
    except (OSError, ValueError, TypeError) as err:
        return "error", None, f"unreadable FITS from hips2fits: {err}"
    if data.shape != (size, size):
        return "error", None, f"hips2fits sent a {data.shape} image, expected ({size}, {size})"
    finite = np.isfinite(data)
    if not finite.any() or not np.any(data[finite]):
        return "off_footprint", None, ""
    return "ok", data, ""


def fetch_cutouts(coordinates, dest: str | Path, *, bands=("SDSS-g", "SDSS-r", "SDSS-i"), size: int = 28,
                  pixel_scale: dict | float | None = None, hips: dict | None = None, block: int = 256,
                  max_attempts: int = 3, workers: int | None = None,
                  progress: ProgressCallback | None = None) -> CutoutResult:
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
        Targets per Zarr chunk and per write; a crash loses at most one block.
    max_attempts : int
        Requests per cell, over all runs, before its error is final.
    workers : int, optional
        Concurrent requests (default ``conf.max_connections_per_host``).
    progress : callable, optional
        Receives :class:`~latentsky.progress.ProgressEvent` (task ``"cutouts"``).

    Returns
    -------
    CutoutResult
    """
    import pandas as pd
    import zarr

    bands = [str(b) for b in bands]
    if not bands:
        raise LatentskyError("bands: give at least one band")
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
    coords = parse_coordinates(coordinates, parameter="coordinates")
    coords = coords.reshape((1,)) if coords.isscalar else coords
    n = len(coords)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    index_path = dest / INDEX_NAME
    group = zarr.open_group(str(dest / ZARR_NAME), mode="a")
    settings = {"bands": bands, "size": int(size), "hips": hips_ids, "pixel_scale_arcsec": scales, "n": n}

    if "images" in group and index_path.exists():
        images = group["images"]
        stored = dict(images.attrs)
        index = pd.read_parquet(index_path)
        same = (stored.get("bands") == bands and stored.get("size") == size and stored.get("n") == n
                and np.allclose(index["ra"].to_numpy(), coords.ra.deg, atol=1e-9)
                and np.allclose(index["dec"].to_numpy(), coords.dec.deg, atol=1e-9))
        if not same:
            raise LatentskyError(f"dest: {dest} holds cutouts of other targets, bands or size "
                                 f"({stored.get('n')} targets, bands {stored.get('bands')}, size {stored.get('size')}); "
                                 "choose another folder")
    else:
        images = group.create_array(name="images", shape=(n, len(bands), size, size),
                                    chunks=(min(block, max(n, 1)), len(bands), size, size), dtype="float32",
                                    fill_value=np.nan, overwrite=True)
        images.attrs.update(settings)
        index = _new_index(coordinates, coords, bands)
        _write_index(index, index_path)

    block = images.chunks[0]
    todo_total = int(sum(((index[f"status_{b}"] == "pending") |
                          ((index[f"status_{b}"] == "error") & (index[f"attempts_{b}"] < max_attempts))).sum()
                         for b in bands))
    workers = int(workers or conf.max_connections_per_host)
    with Progress("cutouts", total=todo_total, unit="cutouts", callback=progress) as bar, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        for lo in range(0, n, block):
            hi = min(n, lo + block)
            cells = [(i, b) for i in range(lo, hi) for b, band in enumerate(bands)
                     if _wanted(index, i, band, max_attempts)]
            if not cells:
                continue
            data = np.asarray(images[lo:hi])
            ra, dec = coords.ra.deg, coords.dec.deg
            futures = [pool.submit(_fetch_with_retry, hips_ids[bands[b]], ra[i], dec[i], size, scales[bands[b]],
                                   max_attempts - int(index.at[i, f"attempts_{bands[b]}"]))
                       for i, b in cells]
            for (i, b), future in zip(cells, futures):
                status, image, error, tries = future.result()
                band = bands[b]
                index.at[i, f"status_{band}"] = status
                # a target near a survey edge gives a partly blank cutout: say how much is real
                index.at[i, f"coverage_{band}"] = float(np.isfinite(image).mean()) if image is not None else 0.0
                index.at[i, f"attempts_{band}"] = int(index.at[i, f"attempts_{band}"]) + tries
                index.at[i, f"error_{band}"] = error
                if image is not None:
                    data[i - lo, b] = image
                bar.advance(1, message=f"{band} row {i}: {status}")
            # the pixels first, then the index that says they are there
            images[lo:hi] = data
            _write_index(index, index_path)
    return _result(dest, index, bands)


def _fetch_with_retry(hips_id, ra, dec, size, scale, budget):
    """Up to ``budget`` attempts with exponential backoff and jitter; returns (status, image, error, tries)."""
    tries, status, image, error = 0, "error", None, ""
    for attempt in range(max(1, budget)):
        tries += 1
        status, image, error = fetch_one(hips_id, ra, dec, size, scale)
        if status != "error" or " HTTP 4" in error and " HTTP 429" not in error:
            break  # done, off the footprint, or a request the service will never accept
        if attempt + 1 < budget:
            time.sleep(min(8.0, 0.2 * 2 ** attempt) * (0.5 + random.random()))
    return status, image, error, tries


def _wanted(index, i, band, max_attempts) -> bool:
    status = index.at[i, f"status_{band}"]
    return status == "pending" or (status == "error" and int(index.at[i, f"attempts_{band}"]) < max_attempts)


def _new_index(original, coords, bands):
    import pandas as pd

    frame = pd.DataFrame({"row": np.arange(len(coords)), "ra": coords.ra.deg, "dec": coords.dec.deg})
    if isinstance(original, Table):
        for name in original.colnames:
            if name.lower() in ("ra", "dec") or original[name].ndim != 1:
                continue
            values = np.asarray(original[name])
            frame[name] = values.astype(str) if values.dtype.kind in "SUO" else values
    for band in bands:
        frame[f"status_{band}"] = "pending"
        frame[f"attempts_{band}"] = 0
        frame[f"error_{band}"] = ""
        frame[f"coverage_{band}"] = 0.0
    return frame


def _write_index(index, path: Path) -> None:
    # write beside, then rename: a crash never leaves a half-written index
    tmp = path.with_name(path.name + ".tmp")
    index.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _result(dest: Path, index, bands) -> CutoutResult:
    counts = {s: 0 for s in STATUSES}
    rows = []
    for band in bands:
        for status, k in index[f"status_{band}"].value_counts().items():
            counts[status] = counts.get(status, 0) + int(k)
        bad = index[index[f"status_{band}"] == "error"]
        for _, r in bad.iterrows():
            rows.append((int(r["row"]), band, float(r["ra"]), float(r["dec"]), int(r[f"attempts_{band}"]),
                         str(r[f"error_{band}"])))
    errors = Table(rows=rows, names=("row", "band", "ra", "dec", "attempts", "error"),
                   dtype=(int, str, float, float, int, str)) if rows else \
        Table(names=("row", "band", "ra", "dec", "attempts", "error"), dtype=(int, str, float, float, int, str))
    return CutoutResult(dest, list(bands), counts, errors)


def open_cutouts(dest: str | Path):
    """Open a cutout store: ``(images, index)``, the Zarr array (N x B x H x W) and the index DataFrame."""
    import pandas as pd
    import zarr

    dest = Path(dest)
    if not (dest / INDEX_NAME).exists() or not (dest / ZARR_NAME).exists():
        raise LatentskyError(f"{dest}: no cutout store ({ZARR_NAME} and {INDEX_NAME}) here")
    return zarr.open_group(str(dest / ZARR_NAME), mode="r")["images"], pd.read_parquet(dest / INDEX_NAME)
