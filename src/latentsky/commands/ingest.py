"""``latentsky ingest SOURCE... --out STORE``: FITS spectra into a spectrum store."""

from __future__ import annotations

import sys
from pathlib import Path

from latentsky.distributed import add_cli_arguments, cli_options
from latentsky.io.grid import DEFAULT_NORMALISATION, NORMALISATIONS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "ingest", help="read FITS spectra into a store (Parquet catalog + Zarr arrays)", description=__doc__
    )
    p.add_argument("sources", nargs="+", type=Path, metavar="SOURCE", help="FITS files or folders")
    p.add_argument("--out", required=True, type=Path, metavar="STORE", help="store directory to write")
    p.add_argument("--wave-min", type=float, default=3800.0, help="first grid pixel, Angstrom (vacuum)")
    p.add_argument("--wave-max", type=float, default=9000.0, help="last grid pixel, Angstrom (vacuum)")
    resolution = p.add_mutually_exclusive_group()
    resolution.add_argument("--pixels", type=int, default=4096, help="grid pixels (log-lambda)")
    resolution.add_argument("--step-kms", type=float, help="grid pixel size in km/s instead of --pixels")
    p.add_argument(
        "--normalisation",
        choices=NORMALISATIONS,
        default=DEFAULT_NORMALISATION,
        help="how each spectrum is normalised (auto: by its median when flux-calibrated, e.g. SDSS; "
        "by its local continuum when in relative flux, e.g. HARPS)",
    )
    p.add_argument("--force", action="store_true", help="rewrite the store even if it is up to date")
    add_cli_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from latentsky.ingest import ingest
    from latentsky.io.grid import LogLambdaGrid
    from latentsky.progress import TqdmProgress

    try:
        if args.step_kms is not None:
            grid = LogLambdaGrid.from_velocity_step(args.wave_min, args.wave_max, args.step_kms)
        else:
            grid = LogLambdaGrid(args.wave_min, args.wave_max, args.pixels)
    except ValueError as err:
        print(f"latentsky ingest: error: {err}", file=sys.stderr)
        return 2
    result = ingest(
        args.sources,
        args.out,
        grid=grid,
        normalisation=args.normalisation,
        progress=TqdmProgress(),
        force=args.force,
        **cli_options(args),
    )
    if result.up_to_date:
        print(f"{result.store}: up to date ({result.n_spectra} spectra)")
    else:
        print(f"{result.store}: {result.n_spectra} spectra ingested")
    for err in result.errors:
        print(f"  not ingested: {err}", file=sys.stderr)
    return 1 if result.errors else 0
