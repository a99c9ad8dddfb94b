"""``latentsky synth --n N --out DIR``: a large synthetic latent table (and spectra) from the real sample.

Each row is a real template spectrum (default: the bundled sample) seen with a
Doppler shift, a continuum change and noise; its latent point sits near its
template's, moved by the shift and the tilt.  Writes ``DIR/latent.parquet``
(the pipeline's columns plus ``cluster, snr, rv, tilt, template``),
``DIR/templates.npz`` and, with ``--spectra M``, the first M rows' spectra as
the store ``DIR/store``.  ``latentsky app DIR`` (or ``panel serve
widgets/app.py --args DIR``) opens it; a tap regenerates the spectrum of any row.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth",
        help="write a large synthetic latent table derived from real spectra",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--n", type=float, default=1e6, help="rows of the latent table (e.g. 1e6, 1e7); default 1e6")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--spectra", type=int, default=0, metavar="M", help="also write the first M spectra as a store")
    p.add_argument("--store", type=Path, help="store of template spectra (default: the bundled sample)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--rv-sigma", type=float, default=30.0, help="spread of the Doppler shifts, km/s (default 30)")
    p.add_argument("--anomaly-fraction", type=float, default=0.002, help="fraction of anomalous rows")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from latentsky.exceptions import LatentskyError
    from latentsky.progress import TqdmProgress
    from latentsky.synth import write_synth

    n = int(args.n)
    if n < 1 or n != args.n:
        raise LatentskyError(f"--n: must be a positive whole number, got {args.n:g}")
    try:
        out = write_synth(
            args.out,
            n,
            store=args.store,
            n_spectra=args.spectra,
            seed=args.seed,
            rv_sigma=args.rv_sigma,
            anomaly_fraction=args.anomaly_fraction,
            progress=None if args.no_progress else TqdmProgress(),
        )
    except ValueError as err:
        raise LatentskyError(str(err)) from err
    print(
        f"wrote {n:,} rows to {out / 'latent.parquet'}"
        + (f" and {args.spectra} spectra to {out / 'store'}" if args.spectra else "")
    )
    return 0
