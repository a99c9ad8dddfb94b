"""The latentsky app beside JupyterLab, through jupyter-server-proxy.

jupyter-server-proxy finds :func:`setup_latentsky` through the
``jupyter_serverproxy_servers`` entry point (pyproject.toml), puts a
"latentsky explorer" tile in the JupyterLab launcher and, on the first request
to ``{base_url}latentsky/``, starts::

    python -m latentsky.jupyter_proxy --unix-socket {unix_socket} --prefix {base_url}latentsky

which serves the app (the same page as ``latentsky app``) on a Unix socket in a
folder only this user can enter (jupyter-server-proxy makes it, mode 0700; the
socket is 0600), under that prefix.  No TCP port is opened, so on a shared
machine (a JupyterHub with local spawners, a login node) no other account can
reach the app or the ESO token in its environment: the only way in is the
user's own notebook server, which authenticates every request.  The proxy
forwards the full path (``absolute_url``), so the page's scripts, styles and
websocket carry the prefix and work behind Binder's or a JupyterHub's URL; a
websocket is accepted only from the page's own origin
(:mod:`latentsky.ui.serve`).
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
        ``command`` (with jupyter-server-proxy's ``{unix_socket}`` and ``{base_url}``
        placeholders), ``unix_socket`` (True: the proxy makes a private folder for the
        socket), ``absolute_url``, ``timeout`` and ``launcher_entry``, as documented by
        jupyter-server-proxy's server-process settings.
    """
    return {
        "command": [
            sys.executable,
            "-m",
            "latentsky.jupyter_proxy",
            "--unix-socket",
            "{unix_socket}",
            "--prefix",
            "{base_url}" + PROXY_NAME,
        ],
        "unix_socket": True,
        "absolute_url": True,
        "timeout": START_TIMEOUT,
        "new_browser_tab": True,
        "launcher_entry": {"enabled": True, "title": LAUNCHER_TITLE, "category": "Notebook", "icon_path": str(ICON)},
    }


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m latentsky.jupyter_proxy``."""
    parser = argparse.ArgumentParser(prog="python -m latentsky.jupyter_proxy", description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--unix-socket",
        type=Path,
        help="Unix socket to listen on (given by the proxy; its folder must be private, mode 0700)",
    )
    where.add_argument(
        "--port", type=int, help="TCP port on 127.0.0.1 instead (websockets from the page's own origin only)"
    )
    parser.add_argument("--prefix", default="", help="URL prefix the proxy forwards, e.g. /user/ada/latentsky")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="results to open (default: $LATENTSKY_APP_DATA, else the bundled sample's)",
    )
    return parser


def serve(*, unix_socket=None, port: int | None = None, prefix: str = "", data=None, start: bool = True):
    """Serve the latentsky app on ``unix_socket`` (or TCP ``port`` on 127.0.0.1) under ``prefix``.

    Parameters
    ----------
    unix_socket : path-like, optional
        Unix socket (the proxy's ``{unix_socket}``); its folder must be mode 0700.
    port : int, optional
        TCP port on the loopback interface instead.
    prefix : str
        URL path prefix of every page, script and websocket (the proxied path).
    data : path-like, optional
        What the map opens on (see :func:`latentsky.ui.app.load_data`).
    start : bool
        Block serving until interrupted (False: return the started server, for tests).
    """
    import panel as pn

    from latentsky.ui.app import App, load_data
    from latentsky.ui.serve import serve_app
    from latentsky.viz.latent import warm_up

    pn.extension("tabulator", notifications=True)
    log.info("warming up Datashader (%.2f s)", warm_up())
    loaded = load_data(data)

    def page():
        app = App(loaded)
        app.sync_url()
        return app

    return serve_app(page, unix_socket=unix_socket, port=port, prefix=prefix, title="latentsky explorer", start=start)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m latentsky.jupyter_proxy``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    serve(unix_socket=args.unix_socket, port=args.port, prefix=args.prefix, data=args.data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
