"""``latentsky cutouts TABLE --dest DIR``: image cutouts of every position of a table, in one Zarr array.

TABLE is any table astropy reads with ``ra``/``dec`` columns in degrees (for
example what ``latentsky query sdss --class QSO`` writes).  DIR receives
``cutouts.zarr`` (N x bands x size x size) and ``index.parquet`` (a status per
target and band).  Running the same command again resumes: finished and
off-footprint cells are not requested again; errors are retried until
``--max-attempts``.

Exit status: 0 when every cell is done (ok or off the footprint), 1 when some
are still in error, 2 on bad input.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("cutouts", help="fetch image cutouts for a table of positions (resumable)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", type=Path, help="table with ra, dec columns (degrees)")
    p.add_argument("--dest", type=Path, required=True, help="output folder (cutouts.zarr + index.parquet)")
    p.add_argument("--bands", default="SDSS-g,SDSS-r,SDSS-i",
                   help="comma-separated bands (default SDSS-g,SDSS-r,SDSS-i; also FIRST, UKIDSS-K...)")
    p.add_argument("--size", type=int, default=28, help="cutout width and height, pixels (default 28)")
    p.add_argument("--pixel-scale", type=float, help="arcsec per pixel for every band (default: native)")
    p.add_argument("--max-attempts", type=int, default=3, help="requests per cell over all runs (default 3)")
    p.add_argument("--base-url", help="base URL of a latentsky local archive (its /hips2fits endpoint)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from astropy.table import Table

    from latentsky.archives.cutouts import fetch_cutouts
    from latentsky.config import conf
    from latentsky.exceptions import LatentskyError
    from latentsky.progress import TqdmProgress

    if args.base_url:
        conf.set(hips2fits_url=args.base_url.rstrip("/") + "/hips2fits")
    try:
        table = Table.read(args.table)
    except Exception as err:  # astropy raises many kinds for unreadable files
        raise LatentskyError(f"cutouts: TABLE {args.table}: cannot read a table ({err})") from err
    bands = [b.strip() for b in args.bands.split(",") if b.strip()]
    result = fetch_cutouts(table, args.dest, bands=bands, size=args.size, pixel_scale=args.pixel_scale,
                           max_attempts=args.max_attempts, progress=None if args.no_progress else TqdmProgress())
    counts = ", ".join(f"{k}: {v}" for k, v in result.counts.items() if v)
    print(f"{len(table)} targets x {len(bands)} bands -> {args.dest} ({counts})")
    for row in result.errors[:5]:
        print(f"  row {row['row']} {row['band']}: {row['error']} (attempts {row['attempts']})")
    return 0 if result.complete else 1
