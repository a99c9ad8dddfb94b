"""``latentsky app [PATH]``: serve the latentsky app in the browser (``panel serve widgets/app.py``).

PATH is a ``latentsky pipeline`` or ``latentsky synth`` folder, a spectrum
store, or a latent Parquet table; without it the app opens on the bundled
sample's results.  Datashader is compiled and the data loaded before the
server answers, so the first page shows the map without a pause.

The app answers websockets from its own origin only (``http://127.0.0.1:PORT``;
add a host name the browser uses with ``--allow-origin``).  On a machine other
people log in to, a TCP port on 127.0.0.1 is open to every local account: serve
on a private Unix socket instead (``--unix-socket ~/.latentsky/app.sock``, its
folder mode 0700) and reach it through ``ssh -L 5006:SOCKET host``, or use the
JupyterLab launcher tile, which does that for you.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "app",
        help="serve the interactive app (latent map, query, download...)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", nargs="?", type=Path, help="results to open (default: the bundled sample)")
    p.add_argument("--port", type=int, default=5006, help="port (default 5006; 0 picks a free one)")
    p.add_argument("--address", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="another origin the page may be opened from (e.g. this machine's name with "
        "--address 0.0.0.0); repeatable; no wildcards",
    )
    p.add_argument(
        "--unix-socket",
        type=Path,
        default=None,
        help="listen on this Unix socket instead of a TCP port (its folder must be mode 0700)",
    )
    p.add_argument("--show", action="store_true", help="open a browser tab")
    p.add_argument(
        "--dask",
        action="store_true",
        help="keep the latent table as a Dask DataFrame (10^7-10^8 rows aggregated in parallel)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    import logging

    import panel as pn

    from latentsky.exceptions import LatentskyError
    from latentsky.ui.app import App, load_data
    from latentsky.ui.serve import check_socket_folder, own_origins, serve_app
    from latentsky.viz.latent import warm_up

    log = logging.getLogger("latentsky.app")
    if args.path is not None and not args.path.exists():
        raise LatentskyError(f"path: {args.path} does not exist")
    try:
        if args.unix_socket is not None:
            check_socket_folder(args.unix_socket)
        own_origins(args.address, args.port or 1, args.allow_origin)
    except (ValueError, OSError) as err:
        raise LatentskyError(f"app: {err}") from None
    pn.extension("tabulator", notifications=True)
    log.info("warming up Datashader (%.2f s)", warm_up())
    data = load_data(args.path, dask=args.dask or None)

    def page():
        app = App(data)
        app.sync_url()
        return app

    serve_app(
        {"app": page},
        port=args.port,
        address=args.address,
        unix_socket=args.unix_socket,
        allowed_origins=args.allow_origin,
        show=args.show,
        title="latentsky",
    )
    return 0
