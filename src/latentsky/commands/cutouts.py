"""``latentsky cutouts TABLE --dest DIR``: image cutouts of every position of a table, in one Zarr array.

TABLE is any table astropy reads with ``ra``/``dec`` columns in degrees (for
example what ``latentsky query sdss --class QSO`` writes, or a catalog such
as DR16Q, FIRST or a UKIDSS source list).  DIR receives ``cutouts.zarr``
(N x bands x size x size), ``index.parquet`` (the targets) and
``progress.sqlite`` (a status per target and band).  The cells stream through
``--connections`` requests in flight to hips2fits, with the download
manager's retry policy; progress shows the cells done, off the footprint and
failed, the rate and the time left.  Running the same command again resumes:
finished and off-footprint cells are not requested again, errors are retried
until ``--max-attempts``.

Examples::

    latentsky query sdss --class QSO --out quasars.parquet
    latentsky cutouts quasars.parquet --dest quasars-gri --bands SDSS-g,SDSS-r,SDSS-i --size 28
    latentsky cutouts first_catalog.fits --dest first --bands FIRST
    latentsky cutouts ukidss_sources.ecsv --dest ukidss --bands UKIDSS-K

Exit status: 0 when every cell is done (ok or off the footprint), 1 when some
are still in error, 2 on bad input.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "cutouts",
        help="fetch image cutouts for a table of positions (resumable)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("table", type=Path, help="table with ra, dec columns (degrees)")
    p.add_argument(
        "--dest", type=Path, required=True, help="output folder (cutouts.zarr, index.parquet, progress.sqlite)"
    )
    p.add_argument(
        "--bands",
        default="SDSS-g,SDSS-r,SDSS-i",
        help="comma-separated bands (default SDSS-g,SDSS-r,SDSS-i; also FIRST, UKIDSS-K...)",
    )
    p.add_argument("--size", type=int, default=28, help="cutout width and height, pixels (default 28)")
    p.add_argument("--pixel-scale", type=float, help="arcsec per pixel for every band (default: native)")
    p.add_argument("--max-attempts", type=int, default=3, help="requests per cell over all runs (default 3)")
    p.add_argument(
        "--connections",
        type=int,
        default=None,
        help="requests in flight (default conf.max_connections_per_host; mind the service's limits)",
    )
    p.add_argument("--base-url", help="base URL of a latentsky local archive (its /hips2fits endpoint)")
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="with --base-url: the local archive's synthetic sky where its images do not reach "
        "(/synthetic/hips2fits; not real data)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from astropy.table import Table

    from latentsky.archives.cutouts import fetch_cutouts
    from latentsky.config import conf
    from latentsky.exceptions import LatentskyError
    from latentsky.progress import TqdmProgress

    if args.synthetic and not args.base_url:
        raise LatentskyError("cutouts: --synthetic needs --base-url (a latentsky local archive)")
    if args.base_url:
        conf.set(hips2fits_url=args.base_url.rstrip("/") + ("/synthetic/hips2fits" if args.synthetic else "/hips2fits"))
    try:
        table = Table.read(args.table)
    except Exception as err:  # astropy raises many kinds for unreadable files
        raise LatentskyError(f"cutouts: TABLE {args.table}: cannot read a table ({err})") from err
    bands = [b.strip() for b in args.bands.split(",") if b.strip()]
    result = fetch_cutouts(
        table,
        args.dest,
        bands=bands,
        size=args.size,
        pixel_scale=args.pixel_scale,
        max_attempts=args.max_attempts,
        connections=args.connections,
        progress=None if args.no_progress else TqdmProgress(),
    )
    counts = ", ".join(f"{k}: {v}" for k, v in result.counts.items() if v)
    rate = f"; {result.requests} requests in {result.elapsed:.1f} s" if result.requests else ""
    print(f"{len(table)} targets x {len(bands)} bands -> {args.dest} ({counts}{rate})")
    for row in result.errors[:5]:
        print(f"  row {row['row']} {row['band']}: {row['error']} (attempts {row['attempts']})")
    return 0 if result.complete else 1
