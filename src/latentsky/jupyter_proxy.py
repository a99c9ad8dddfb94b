"""The latentsky app beside JupyterLab, through jupyter-server-proxy.

jupyter-server-proxy finds :func:`setup_latentsky` through the
``jupyter_serverproxy_servers`` entry point (pyproject.toml), puts a
"latentsky explorer" tile in the JupyterLab launcher and, on the first request
to ``{base_url}latentsky/``, starts::

    python -m latentsky.jupyter_proxy --port {port} --prefix {base_url}latentsky

which serves the app (the same page as ``latentsky app``) on 127.0.0.1 under
that prefix.  The proxy forwards the full path (``absolute_url``), so the
page's scripts, styles and websocket carry the prefix and work behind Binder's
or a JupyterHub's URL.  Authentication is the notebook server's: the app
listens on the loopback interface only and is reached through the proxy.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

#: URL path (under the notebook server's base URL) of the proxied app.
PROXY_NAME = "latentsky"
#: Title of the JupyterLab launcher tile.
LAUNCHER_TITLE = "latentsky explorer"
#: Icon of the launcher tile (shipped with the package).
ICON = Path(__file__).with_name("jupyter_proxy.svg")
#: Seconds jupyter-server-proxy waits for the app to answer (imports, Datashader's compilation, data loading).
START_TIMEOUT = 120


def setup_latentsky() -> dict:
    """The jupyter-server-proxy configuration of the latentsky app.

    Returns
    -------
    dict
        ``command`` (with jupyter-server-proxy's ``{port}`` and ``{base_url}``
        placeholders), ``absolute_url``, ``timeout`` and ``launcher_entry``, as
        documented by jupyter-server-proxy's server-process settings.
    """
    return {
        "command": [sys.executable, "-m", "latentsky.jupyter_proxy", "--port", "{port}",
                    "--prefix", "{base_url}" + PROXY_NAME],
        "absolute_url": True,
        "timeout": START_TIMEOUT,
        "new_browser_tab": True,
        "launcher_entry": {"enabled": True, "title": LAUNCHER_TITLE, "category": "Notebook",
                           "icon_path": str(ICON)},
    }


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m latentsky.jupyter_proxy``."""
    parser = argparse.ArgumentParser(prog="python -m latentsky.jupyter_proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="port to listen on (given by the proxy)")
    parser.add_argument("--prefix", default="", help="URL prefix the proxy forwards, e.g. /user/ada/latentsky")
    parser.add_argument("--address", default="127.0.0.1", help="interface (default: the loopback one)")
    parser.add_argument("--data", type=Path, default=None,
                        help="results to open (default: $LATENTSKY_APP_DATA, else the bundled sample's)")
    return parser


def serve(port: int, *, prefix: str = "", address: str = "127.0.0.1", data=None) -> None:
    """Serve the latentsky app at ``http://{address}:{port}{prefix}/`` until interrupted.

    Parameters
    ----------
    port : int
        TCP port.
    prefix : str
        URL path prefix of every page, script and websocket (the proxied path).
    address : str
        Interface to bind.
    data : path-like, optional
        What the map opens on (see :func:`latentsky.ui.app.load_data`).
    """
    import panel as pn

    from latentsky.ui.app import App, load_data
    from latentsky.viz.latent import warm_up

    pn.extension("tabulator", notifications=True)
    log.info("warming up Datashader (%.2f s)", warm_up())
    loaded = load_data(data)

    def page():
        app = App(loaded)
        app.sync_url()
        return app

    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    log.info("serving the latentsky app on http://%s:%d%s/", address, port, prefix)
    # The browser's Origin is the Hub's or Binder's host, which only the proxy knows; the app itself
    # listens on the loopback interface and is reachable through the authenticated proxy only.
    pn.serve(page, port=port, address=address, prefix=prefix, websocket_origin="*", show=False,
             title="latentsky explorer")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m latentsky.jupyter_proxy``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    serve(args.port, prefix=args.prefix, address=args.address, data=args.data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
