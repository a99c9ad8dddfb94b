"""Ingest: FITS spectra in, a spectrum store out (Parquet catalog + Zarr arrays).

Files are read in small batches (never all in memory), resampled onto a
common log-lambda grid, normalised, and appended chunk by chunk to a store
built under a temporary name and moved into place at the end.  With a Dask
client the batches are parsed on the workers (which read the files by path)
and their results come back in file order, so this process writes the same
store, chunk for chunk, as a single-process run.  Files that cannot be read
are reported, with the reason, and skipped.  Running ingest again on the same
inputs with the same settings does nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from latentsky.exceptions import LatentskyError, SpectrumError, StoreError
from latentsky.io.grid import (
    DEFAULT_NORMALISATION,
    NORMALISATIONS,
    LogLambdaGrid,
    normalise,
    resample,
    resolve_normalisation,
)
from latentsky.io.readers import read_spectrum
from latentsky.progress import Progress, ProgressCallback
from latentsky.store import (
    SpectrumStore,
    SpectrumStoreWriter,
    atomic_directory,
    check_output,
    read_lineage,
    write_lineage,
)
from latentsky.store.lineage import fingerprint

log = logging.getLogger(__name__)

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")
SAME_OBJECT_ARCSEC = 2.0
#: Files parsed per Dask task: enough to make the task overhead small, few enough for steady progress.
FILES_PER_TASK = 32
STORE_KIND = "spectra"
"""The output kind of a spectrum store (see :mod:`latentsky.store.output`)."""
CATALOG_COLUMNS = [
    "id",
    "path",
    "instrument",
    "object",
    "ra",
    "dec",
    "mjd",
    "exptime",
    "snr",
    "wave_min",
    "wave_max",
    "sha256",
    "spec_class",
    "redshift",
    "format",
    "n_good_pixels",
]


@dataclasses.dataclass
class IngestResult:
    """What an ingest run did.

    Attributes
    ----------
    store : Path
        The store directory.
    n_spectra : int
        Spectra in the store.
    errors : list of SpectrumError
        Files that were not ingested, each naming the file and the problem.
    up_to_date : bool
        True when the store already matched the inputs and nothing was written.
    """

    store: Path
    n_spectra: int
    errors: list[SpectrumError]
    up_to_date: bool = False


def find_fits(sources: Iterable) -> list[Path]:
    """Expand files and folders (searched recursively) into a sorted list of FITS files."""
    files: list[Path] = []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            files.extend(p for p in source.rglob("*") if p.is_file() and p.name.lower().endswith(FITS_SUFFIXES))
        elif source.exists():
            files.append(source)
        else:
            raise LatentskyError(f"ingest: source {source} does not exist")
    return sorted(set(p.resolve() for p in files))


def _stat_key(path: Path) -> list:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def ingest(
    sources: Iterable,
    out,
    *,
    grid: LogLambdaGrid | None = None,
    normalisation: str = DEFAULT_NORMALISATION,
    chunk_rows: int = 256,
    progress: ProgressCallback | None = None,
    force: bool = False,
    client=None,
    scheduler: str | None = None,
    workers: int | None = None,
    cluster: str | None = None,
) -> IngestResult:
    """Read FITS spectra and write a spectrum store.

    Parameters
    ----------
    sources : iterable of path-like
        FITS files and/or folders (searched recursively for ``*.fits[.gz]``, ``*.fit[.gz]``).
    out : path-like
        The store directory to write (replaced atomically if it exists).
    grid : LogLambdaGrid, optional
        The common grid; default 3800-9000 Angstrom in 4096 pixels (~63 km/s).
    normalisation : {"auto", "median", "continuum", "local", "none"}
        How each spectrum is normalised (see :func:`latentsky.io.grid.normalise`); ``auto`` chooses by
        product (:func:`latentsky.io.grid.resolve_normalisation`).
    chunk_rows : int
        Spectra per Zarr chunk.
    progress : callable, optional
        Receives :class:`~latentsky.progress.ProgressEvent` objects.
    force : bool
        Rewrite the store even if it is up to date.
    client : distributed.Client, optional
        Parse the files on this Dask cluster (every worker must see them at
        the same paths); the store is written here, in file order.
    scheduler : str, optional
        Address of a Dask scheduler to connect to instead.
    workers : int, optional
        Start a local Dask cluster of this many worker processes instead (or,
        with ``cluster``, ask that cluster for this many workers).
    cluster : str, optional
        A cluster kind of :func:`latentsky.distributed.make_cluster`, configured by Dask's configuration.

    Returns
    -------
    IngestResult
    """
    grid = grid or LogLambdaGrid()
    if normalisation not in NORMALISATIONS:
        raise LatentskyError(f"ingest: normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
    out, sources = Path(out), [Path(s) for s in sources]
    check_output(out, STORE_KIND, inputs=sources)  # before any work: the folder may not be ours
    files = find_fits(sources)
    if not files:
        raise LatentskyError("ingest: no FITS files found in " + ", ".join(str(s) for s in sources))
    listed = len(files)
    params = {"grid": grid.as_dict(), "normalisation": normalisation}
    errors: list[SpectrumError] = []
    stats = {}
    for path in files:
        try:
            stats[str(path)] = _stat_key(path)
        except OSError as err:  # gone or unreadable since it was listed
            errors.append(SpectrumError(path, f"cannot read the file ({err.strerror or err})"))
    files = [p for p in files if str(p) in stats]
    try:
        previous = read_lineage(out) if out.exists() else None
    except StoreError as err:
        log.warning("%s; the store is written again", err)
        previous = None
    if not force and previous and previous.get("params") == params and previous.get("stats") == stats:
        log.info("%s is up to date with its %d input files; nothing to do", out, len(files))
        store = SpectrumStore(out)
        return IngestResult(out, len(store), [], up_to_date=True)

    from latentsky.distributed import dask_client, map_ordered

    rows: list[dict] = []
    hashes: dict[str, str] = {}
    with (
        dask_client(client, scheduler=scheduler, workers=workers, cluster=cluster) as dc,
        atomic_directory(out, STORE_KIND, inputs=sources) as tmp,
        Progress("ingest", total=len(files), unit="spectra", callback=progress) as bar,
    ):
        per_task = 1 if dc is None else FILES_PER_TASK  # here: progress file by file
        tasks = [(files[i : i + per_task],) for i in range(0, len(files), per_task)]
        writer = SpectrumStoreWriter(tmp, grid.wave, capacity=len(files), chunk_rows=chunk_rows)
        results = map_ordered(_ingest_batch, tasks, client=dc, common={"grid": grid, "normalisation": normalisation})
        for (paths,), (good, bad) in zip(tasks, results):
            for row, flux, ivar in good:
                hashes[row["path"]] = row["sha256"]
                writer.append(flux, ivar)
                rows.append(row)
            for err in bad:
                log.debug("skipped %s", err)
            errors.extend(bad)
            bar.advance(len(paths), paths[-1].name)
        if not rows:
            raise LatentskyError(f"ingest: none of the {listed} files could be read; first problem: {errors[0]}")
        catalog = _finish_catalog(pd.DataFrame(rows))
        writer.close(
            catalog,
            attrs={
                "grid": grid.as_dict(),
                "normalisation": normalisation,
                "wave_unit": "Angstrom",
                "wave_medium": "vacuum",
            },
        )
        write_lineage(
            tmp,
            step="ingest",
            params=params,
            inputs={"files": hashes, "fingerprint": fingerprint(sorted(hashes.values()))},
            extra={
                "stats": stats,
                "n_spectra": len(rows),
                "errors": [str(e) for e in errors],
                "rejected": [{"path": e.path, "reason": e.problem} for e in errors],
            },
        )
    if errors:
        log.warning("%d of %d files were not ingested:\n  %s", len(errors), listed, "\n  ".join(str(e) for e in errors))
    return IngestResult(out, len(rows), errors)


def _ingest_batch(
    paths: list[Path], *, grid: LogLambdaGrid, normalisation: str
) -> tuple[list[tuple[dict, np.ndarray, np.ndarray]], list[SpectrumError]]:
    """Read and resample some files (in this process or on a Dask worker): the good ones, and the errors."""
    good, bad = [], []
    for path in paths:
        try:
            row, flux, ivar = _ingest_one(path, grid, normalisation)
        except SpectrumError as err:
            bad.append(err)
            continue
        except Exception as err:  # one bad file never stops a run: reported with its reason
            log.debug("reading %s", path, exc_info=True)
            bad.append(SpectrumError(path, f"unreadable ({type(err).__name__}: {err})"))
            continue
        good.append((row, flux.astype("f4"), ivar.astype("f4")))
    return good, bad


def _ingest_one(path: Path, grid: LogLambdaGrid, normalisation: str) -> tuple[dict, np.ndarray, np.ndarray]:
    try:
        data = path.read_bytes()  # one read serves both the hash and the parser
    except OSError as err:  # gone or unreadable since it was listed
        raise SpectrumError(path, f"cannot read the file ({err.strerror or err})") from None
    spectrum = read_spectrum(path, data=data)
    flux, ivar = resample(spectrum, grid, path=str(path))
    if not (ivar > 0).any():
        raise SpectrumError(
            path,
            "no good pixel left on the grid (all masked where it overlaps "
            f"{grid.wave_min:.0f}-{grid.wave_max:.0f} Angstrom)",
        )
    flux, ivar = normalise(flux, ivar, resolve_normalisation(normalisation, spectrum.meta), path=str(path), grid=grid)
    wave = spectrum.wave.value[spectrum.ivar > 0]
    meta = spectrum.meta
    row = {
        "id": _spectrum_id(path),
        "path": str(path),
        **{
            k: meta.get(k)
            for k in ("instrument", "object", "ra", "dec", "mjd", "exptime", "snr", "spec_class", "redshift", "format")
        },
        "wave_min": float(wave.min()),
        "wave_max": float(wave.max()),
        "sha256": hashlib.sha256(data).hexdigest(),
        "n_good_pixels": int((ivar > 0).sum()),
    }
    return row, flux, ivar


def _spectrum_id(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".fits", ".fit", ".fts"):
        name = name.removesuffix(suffix)
    return name


def _finish_catalog(catalog: pd.DataFrame) -> pd.DataFrame:
    """Make ids unique and give repeat observations of one sky position one object name."""
    dup = catalog["id"].duplicated(keep=False)
    catalog.loc[dup, "id"] = catalog.loc[dup, "id"] + "-" + catalog.loc[dup, "sha256"].str[:8]
    catalog["object"] = _group_by_position(catalog)
    return catalog[CATALOG_COLUMNS].astype({"snr": "f8", "redshift": "f8", "exptime": "f8"})


def _group_by_position(catalog: pd.DataFrame) -> pd.Series:
    """Objects without a name from the observer (SDSS) share the name of the first spectrum within 2 arcsec."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    names = catalog["object"].fillna("").astype(str).copy()
    unnamed = np.flatnonzero(
        names.str.startswith("SDSS J").to_numpy() & np.isfinite(catalog["ra"].to_numpy(dtype="f8"))
    )
    if len(unnamed) < 2:
        return names
    coords = SkyCoord(catalog["ra"].to_numpy()[unnamed] * u.deg, catalog["dec"].to_numpy()[unnamed] * u.deg)
    i, j, _, _ = coords.search_around_sky(coords, SAME_OBJECT_ARCSEC * u.arcsec)
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(len(unnamed), len(unnamed)))
    _, labels = connected_components(graph, directed=False)
    first = {}
    for k, label in enumerate(labels):
        first.setdefault(label, names.iloc[unnamed[k]])
        names.iloc[unnamed[k]] = first[label]
    return names
