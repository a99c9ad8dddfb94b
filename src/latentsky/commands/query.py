"""``latentsky query ARCHIVE ... --out TABLE``: find products and write them as a table.

ARCHIVE is ``eso`` (TAP/ObsCore, reduced spectra) or ``sdss`` (SkyServer
spectra, through astroquery.sdss).  Give a target name, a position, a catalog
of positions, or only filters (collection, dates, class).  ``sdss --class QSO``
alone lists every quasar of the data release (``conf.sdss_data_release``),
page after page past SkyServer's row limit; ``sdss --catalog`` with a catalog
of spectra (``plate, mjd, fiberid`` columns, e.g. DR16Q) looks them up by
identifier, any other catalog by position.  The table has one row per product, with
``access_url``, ``key`` and ``filename`` columns that ``latentsky download
TABLE --dest DIR`` uses.  ``--base-url`` points the archive's URLs at a
latentsky local archive (``latentsky archive serve``) or a mirror with its
layout.

Examples::

    latentsky query eso --collection HARPS --start 2012-01-01 --out harps.ecsv
    latentsky query eso --target "alf Cen B" --radius 1arcmin --out acb.ecsv
    latentsky query sdss --catalog quasars.csv --radius 2arcsec --out spectra.parquet
    latentsky query sdss --class QSO --out quasars.parquet        # every quasar of the release
    latentsky query sdss --catalog DR16Q_v4.fits --out dr16q.parquet
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "query",
        help="query an archive and write the products as a table",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("archive", choices=("eso", "sdss"), help="which archive")
    p.add_argument("--target", help="object name (resolved with conf.name_table, then Sesame unless offline)")
    p.add_argument("--coords", help='one position, e.g. "219.9 -60.83" (deg) or "14h39m -60d50m"')
    p.add_argument("--catalog", type=Path, help="table of positions (ra, dec columns in degrees; any astropy format)")
    p.add_argument("--radius", help="search radius, e.g. 2arcsec, 1arcmin (bare numbers: degrees)")
    p.add_argument("--collection", help="ESO obs_collection (default HARPS; 'any' for all)")
    p.add_argument("--instrument", help="ESO instrument_name")
    p.add_argument("--start", help="earliest observation start (ISO date or MJD)")
    p.add_argument("--end", help="latest observation start, exclusive (ISO date or MJD)")
    p.add_argument("--class", dest="spec_class", choices=("QSO", "GALAXY", "STAR"), help="SDSS spectral class")
    p.add_argument("--top", type=int, help="SDSS: at most this many rows (whole-table searches)")
    p.add_argument("--maxrec", type=int, help="ESO: rows per TAP request (overflowing answers are split)")
    p.add_argument("--base-url", help="base URL of a latentsky local archive (or a mirror with its layout)")
    p.add_argument(
        "--dest",
        type=Path,
        default=Path("."),
        help="folder the 'filename' column is planned for (default: current folder)",
    )
    p.add_argument("--out", type=Path, required=True, help="output table (.ecsv, .csv, .parquet, .fits, .xml)")
    p.set_defaults(func=run)


def point_at(base_url: str, archive: str) -> dict:
    """The conf settings sending ``archive``'s requests to a local archive at ``base_url``."""
    base = base_url.rstrip("/")
    if archive == "eso":
        return {"eso_tap_url": f"{base}/tap", "eso_data_url": f"{base}/eso/file/"}
    return {"sdss_skyserver_url": f"{base}/sdss/", "sdss_sas_url": f"{base}/sas/"}


def run(args) -> int:
    from astropy.table import Table

    from latentsky.archives import get_archive
    from latentsky.config import conf
    from latentsky.exceptions import LatentskyError

    if args.base_url:
        conf.set(**point_at(args.base_url, args.archive))
    client = get_archive(args.archive)
    coordinates = None
    if args.coords:
        coordinates = args.coords
    if args.catalog:
        if coordinates is not None:
            raise LatentskyError("query: give --coords or --catalog, not both")
        try:
            coordinates = Table.read(args.catalog)
        except Exception as err:  # astropy raises many kinds for unreadable files
            raise LatentskyError(f"query: --catalog {args.catalog}: cannot read a table ({err})") from err
    if args.archive == "eso":
        collection = None if (args.collection or "").lower() == "any" else (args.collection or "HARPS")
        table = client.query(
            args.target,
            coordinates=coordinates,
            radius=args.radius,
            collection=collection,
            instrument=args.instrument,
            start=args.start,
            end=args.end,
            maxrec=args.maxrec,
        )
    else:
        if args.target:
            from latentsky.archives.base import resolve_name

            coordinates = resolve_name(args.target, parameter="--target")
        if isinstance(coordinates, Table) and {"plate", "mjd", "fiberid"} <= {c.lower() for c in coordinates.colnames}:
            table = client.query_identifiers(coordinates)  # a catalog of spectra (DR16Q): by identifier
        else:
            table = client.query_spectra(coordinates, radius=args.radius, spec_class=args.spec_class, top=args.top)
    items = {item.key: item for item in client.plan(table, args.dest)}
    keys = [f"{args.archive}/{pid}" for pid in table["product_id"]]
    table["key"] = keys
    table["filename"] = [items[key].dest.name for key in keys]
    failed = table.meta.pop("failed", None)
    if failed:
        table.meta["failed_json"] = json.dumps(failed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.write(args.out, overwrite=True)
    print(
        f"{len(table)} products from {args.archive} written to {args.out}"
        + (f"; {len(failed)} positions failed (see meta failed_json)" if failed else "")
    )
    return 0
