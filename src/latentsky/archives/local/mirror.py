"""Query a local archive for every spectrum it serves and download them all: the demo's first step.

:func:`mirror_local` runs the whole client path (TAP/ObsCore query, SkyServer
query, ``plan``, the download manager with its manifest) against a
:class:`~latentsky.archives.local.archive.LocalArchive` over a folder, so
``latentsky demo`` and the classroom mode exercise exactly what users run
against ESO and SDSS.  Running it again resumes and skips verified files.

Example
-------
>>> from latentsky.data import sample_path                      # doctest: +SKIP
>>> done = mirror_local(sample_path(), "demo-output/downloads")  # doctest: +SKIP
>>> done.results.errors                                          # doctest: +SKIP
[]
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from astropy.table import Table

from latentsky.archives.local.server import FAULT_KINDS
from latentsky.progress import ProgressCallback

log = logging.getLogger(__name__)


@dataclasses.dataclass
class MirrorResult:
    """What :func:`mirror_local` did.

    Attributes
    ----------
    dest : Path
        Download folder: ``eso/`` and ``sdss/`` inside, and the manifest.
    eso, sdss : Table
        The query results (one row per product).
    items : list of DownloadItem
        The plan.
    results : latentsky.download.manager.Results
        The download run (``results.errors`` can be retried alone).
    """

    dest: Path
    eso: Table
    sdss: Table
    items: list
    results: object


def mirror_local(
    root: str | Path,
    dest: str | Path,
    *,
    progress: ProgressCallback | None = None,
    fault_rate: float = 0.0,
    faults=FAULT_KINDS,
    seed: int = 0,
    max_retries: int | None = None,
) -> MirrorResult:
    """Serve ``root`` on 127.0.0.1, query every ESO and SDSS spectrum in it and download them to ``dest``.

    Parameters
    ----------
    root : path-like
        Folder of FITS files (e.g. :func:`latentsky.data.sample_path`).
    dest : path-like
        Download folder (created); files land in ``dest/eso`` and ``dest/sdss``.
    progress : callable, optional
        Receives the download's :class:`~latentsky.progress.ProgressEvent` objects.
    fault_rate : float
        Probability in [0, 1] that the archive misbehaves on a request (queries
        and files), to show that nothing is lost.
    faults : sequence of str
        Fault kinds drawn from (see :data:`~latentsky.archives.local.server.FAULT_KINDS`).
    seed : int
        Seed of the fault draws.
    max_retries : int, optional
        Attempts per file (default ``conf.max_retries``).

    Returns
    -------
    MirrorResult
    """
    from latentsky.archives.eso import eso
    from latentsky.archives.local.archive import LocalArchive
    from latentsky.archives.sdss import sdss
    from latentsky.config import conf
    from latentsky.download.manager import DownloadManager

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    # the local archive recovers at once: with injected faults, short waits keep the demo quick
    quick = {"retry_backoff": 0.05} if fault_rate else {}
    with (
        LocalArchive(root, fault_rate=fault_rate, faults=faults, seed=seed, retry_after=0.1) as archive,
        conf.set_temp(**quick),
    ):
        eso_table = eso.query(collection=None, dataproduct_type="spectrum")
        sdss_table = sdss.query_spectra()
        items = eso.plan(eso_table, dest / "eso") + sdss.plan(sdss_table, dest / "sdss")
        log.info("mirror: %d ESO and %d SDSS spectra from %s", len(eso_table), len(sdss_table), archive.base_url)
        manager = DownloadManager(dest, progress=progress, max_retries=max_retries)
        results = manager.run(items)
    return MirrorResult(dest, eso_table, sdss_table, items, results)
