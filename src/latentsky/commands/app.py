"""``latentsky app [PATH]``: serve the latentsky app in the browser (``panel serve widgets/app.py``).

PATH is a ``latentsky pipeline`` or ``latentsky synth`` folder, a spectrum
store, or a latent Parquet table; without it the app opens on the bundled
sample's results.  Datashader is compiled and the data loaded before the
server answers, so the first page shows the map without a pause.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("app", help="serve the interactive app (latent map, query, download...)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", nargs="?", type=Path, help="results to open (default: the bundled sample)")
    p.add_argument("--port", type=int, default=5006, help="port (default 5006; 0 picks a free one)")
    p.add_argument("--address", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--show", action="store_true", help="open a browser tab")
    p.add_argument("--dask", action="store_true",
                   help="keep the latent table as a Dask DataFrame (10^7-10^8 rows aggregated in parallel)")
    p.set_defaults(func=run)


def run(args) -> int:
    import logging

    import panel as pn

    from latentsky.ui.app import App, load_data
    from latentsky.viz.latent import warm_up

    log = logging.getLogger("latentsky.app")
    if args.path is not None and not args.path.exists():
        from latentsky.exceptions import LatentskyError
        raise LatentskyError(f"path: {args.path} does not exist")
    pn.extension("tabulator", notifications=True)
    log.info("warming up Datashader (%.2f s)", warm_up())
    data = load_data(args.path, dask=args.dask or None)

    def page():
        app = App(data)
        app.sync_url()
        return app

    pn.serve({"app": page}, port=args.port, address=args.address, show=args.show, title="latentsky",
             websocket_origin=[f"{args.address}:{args.port}", f"localhost:{args.port}"] if args.port else "*")
    return 0
