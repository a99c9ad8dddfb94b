"""``latentsky archive serve ROOT``: the local archive over a folder of FITS files.

Serves, on 127.0.0.1, an ESO-like TAP service (ObsCore table built from the
files' headers), ESO and SDSS file endpoints, a SkyServer-like SQL search and
hips2fits/cutout endpoints cut from the images, until Ctrl-C.  It prints its
base URL and the ``LATENTSKY_*`` settings that point the clients at it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "archive",
        help="run the local archive",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    s = sub.add_parser("serve", help="serve a folder of FITS spectra and images on 127.0.0.1")
    s.add_argument("root", type=Path, help="folder of FITS files (searched recursively)")
    s.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    s.add_argument("--latency-ms", type=float, default=0.0, help="delay before every answer, milliseconds")
    s.add_argument("--fault-rate", type=float, default=0.0, help="probability in [0, 1] of a fault per request")
    s.add_argument(
        "--faults",
        default=None,
        help="comma-separated fault kinds drawn from (default: all): "
        "latency,500,503,429,reset,truncate,html,hostile_name",
    )
    s.add_argument("--tap-maxrec", type=int, default=100_000, help="TAP row limit (answers beyond it: OVERFLOW)")
    s.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    s.set_defaults(func=run)


def run(args) -> int:
    from latentsky.archives.local.archive import LocalArchive
    from latentsky.archives.local.server import FAULT_KINDS
    from latentsky.exceptions import LatentskyError

    if not args.root.is_dir():
        raise LatentskyError(f"archive serve: ROOT {args.root} is not a folder")
    faults = tuple(k.strip() for k in args.faults.split(",") if k.strip()) if args.faults else FAULT_KINDS
    unknown = sorted(set(faults) - set(FAULT_KINDS))
    if unknown:
        raise LatentskyError(f"archive serve: --faults: unknown kind(s) {unknown}; known: {', '.join(FAULT_KINDS)}")
    if not 0.0 <= args.fault_rate <= 1.0:
        raise LatentskyError(f"archive serve: --fault-rate must be in [0, 1], got {args.fault_rate}")
    try:
        archive = LocalArchive(
            args.root,
            host=args.host,
            port=args.port,
            latency=args.latency_ms / 1000.0,
            fault_rate=args.fault_rate,
            faults=faults,
            seed=args.seed,
            tap_maxrec=args.tap_maxrec,
        )
    except OSError as err:
        if err.filename is not None:  # a file, not the socket
            raise
        raise LatentskyError(
            f"archive serve: cannot listen on {args.host}:{args.port}: "
            f"{err.strerror or err} (choose another --port, or 0 for a free one)"
        ) from None
    cat = archive.catalog
    print(f"latentsky local archive: {archive.base_url}")
    print(
        f"  {len(cat.obscore)} ESO spectra, {len(cat.specobj)} SDSS spectra, {len(cat.images)} images "
        f"({', '.join(cat.surveys()) or 'no surveys'}) from {archive.root}"
    )
    for name, url in archive.urls().items():
        print(f"  export LATENTSKY_{name.upper()}={url}")
    if cat.skipped:
        print(f"  {len(cat.skipped)} file(s) skipped:")
        for rel, reason in cat.skipped:
            print(f"    {rel}: {reason}")
    sys.stdout.flush()
    try:
        archive.server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0
