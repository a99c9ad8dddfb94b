"""Serving the app so that it answers only its user.

Two ways, one function (:func:`serve_app`):

- **a TCP port** (``latentsky app``): pages and websockets are answered only
  under the app's own names (``127.0.0.1:PORT`` and ``localhost:PORT``, plus
  hosts named with ``allowed_origins``), and a websocket only from a page of
  that origin: another web site the user visits is refused, also one whose name
  resolves to 127.0.0.1 (DNS rebinding).  Any account on the machine can still
  connect to a TCP port: use a Unix socket on a shared machine.
- **a Unix socket** (the JupyterLab launcher, through jupyter-server-proxy):
  the socket is created with mode 0600 in a folder the caller made 0700, so
  another account on the machine cannot connect at all; the only way in is the
  user's own, authenticated notebook server.  The public host name is then
  known only to the proxy, which forwards the browser's ``Host`` and
  ``Origin`` headers: a websocket is accepted when its origin is the page's
  own host (same-origin, as Jupyter itself checks).

In both, Bokeh session ids are signed with a secret made for this process, so
a session can only be opened with a token that this server issued in a page.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import stat
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger(__name__)


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port free on ``address`` now (the OS picks it)."""
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def own_origins(address: str, port: int, extra=()) -> list[str]:
    """``host:port`` origins a TCP-served app accepts websockets from: its own address (and both
    ``localhost`` and ``127.0.0.1`` for a loopback or all-interfaces one), plus ``extra`` (``HOST`` or
    ``HOST:PORT``; never a wildcard)."""
    hosts = {address}
    if address in ("127.0.0.1", "localhost", "", "0.0.0.0", "::", "::1"):
        hosts = (hosts - {"", "0.0.0.0", "::"}) | {"localhost", "127.0.0.1"}
    origins = {f"[{h}]:{port}" if ":" in h else f"{h}:{port}" for h in hosts}
    for entry in extra:
        host = entry.strip().lower()
        host = urlparse(host).netloc if "://" in host else host
        if not host or "*" in host:
            raise ValueError(f"allowed origin {entry!r}: name one host (HOST or HOST:PORT); wildcards are refused")
        origins.add(host if ":" in host.rsplit("]", 1)[-1] else f"{host}:{port}")
    return sorted(origins)


def same_origin(origin: str | None, host: str | None) -> bool:
    """True when a browser ``Origin`` names the same host and port as the request's ``Host`` header."""
    if not origin or not host:
        return False
    parsed = urlparse(origin)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        return False
    default = {"http": "80", "https": "443"}[parsed.scheme]

    def norm(netloc: str) -> str:
        netloc = netloc.lower()
        return netloc if ":" in netloc.rsplit("]", 1)[-1] else f"{netloc}:{default}"

    return norm(parsed.netloc) == norm(host)


def _guarded(view, allowed_hosts: frozenset | None):
    """``view`` (a Bokeh/Panel handler class) refusing, with 403, a request whose ``Host`` is not in
    ``allowed_hosts`` (None: any host) and, for the websocket, an ``Origin`` other than the page's own."""

    class Guarded(view):
        async def prepare(self):
            host = self.request.host.lower()
            if allowed_hosts is not None and host not in allowed_hosts:
                # a page reached under a foreign name (DNS rebinding): same-origin for the browser, not ours
                log.warning("refused a request for host %r (this app answers %s)", host, ", ".join(allowed_hosts))
                self.set_status(403)
                self.finish("this latentsky app answers only its own address")
                return
            result = super().prepare()
            if result is not None:
                await result

        def check_origin(self, origin: str) -> bool:  # used by the websocket handler only
            if same_origin(origin, self.request.host) or (
                allowed_hosts is not None and urlparse(origin).netloc.lower() in allowed_hosts
            ):
                return True
            log.warning("refused a websocket from origin %r (the page's host is %r)", origin, self.request.host)
            return False

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{view.__name__}"
    return Guarded


@contextlib.contextmanager
def _guarded_routes(allowed_hosts=None):
    """While a server is built, route every app's page, scripts and websocket through :func:`_guarded`
    handlers (Bokeh reads its ``per_app_patterns`` then; Panel rewrites them the same way at import)."""
    import panel.io.server  # noqa: F401 - Panel's handlers first
    from bokeh.server.urls import per_app_patterns

    hosts = None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)
    saved = list(per_app_patterns)
    per_app_patterns[:] = [(route, _guarded(view, hosts)) for route, view in saved]
    try:
        yield
    finally:
        per_app_patterns[:] = saved


def check_socket_folder(path: Path) -> None:
    """Refuse a Unix socket in a folder that other accounts can enter (mode 0700 wanted)."""
    folder = Path(path).parent
    mode = stat.S_IMODE(folder.stat().st_mode)
    if mode & 0o077:
        raise PermissionError(f"{folder}: the app's socket folder must be private (mode 0700); it is {mode:04o}")


def serve_app(
    page,
    *,
    port: int | None = None,
    address: str = "127.0.0.1",
    unix_socket: str | Path | None = None,
    prefix: str = "",
    allowed_origins=(),
    title: str = "latentsky",
    show: bool = False,
    start: bool = True,
):
    """Serve ``page`` (a function returning the app) until interrupted.

    Parameters
    ----------
    page : callable or dict
        Builds one browser session's app (served at the prefix), or ``{"name": callable}`` (served at
        ``prefix/name``).
    port : int, optional
        TCP port (0 or None: a free one).  Ignored with ``unix_socket``.
    address : str
        TCP interface (default the loopback one).
    unix_socket : path-like, optional
        Listen on this Unix socket instead (mode 0600; its folder must be 0700).
    prefix : str
        URL path prefix of every page, script and websocket (``/user/ada/latentsky`` behind a proxy).
    allowed_origins : sequence of str
        Further ``HOST[:PORT]`` origins a TCP-served page may be opened from (e.g. the machine's name
        when ``address`` is 0.0.0.0).  Never a wildcard.
    title, show
        Page title; open a browser tab.
    start : bool
        Block serving (False: return the server, started, for tests).

    Returns
    -------
    bokeh.server.server.Server
    """
    import panel as pn

    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    path = f"{prefix}/{next(iter(page))}" if isinstance(page, dict) else f"{prefix}/"  # the page's URL path
    options = dict(
        prefix=prefix,
        show=False,
        verbose=False,
        title=title,
        sign_sessions=True,
        secret_key=secrets.token_urlsafe(32),
        generate_session_ids=True,
    )
    if unix_socket is not None:
        unix_socket = Path(unix_socket)
        check_socket_folder(unix_socket)
        # the public host is the proxy's: websockets must come from the page's own host, whatever it is
        with _guarded_routes(None):
            server = pn.serve(page, unix_socket=str(unix_socket), start=False, **options)
        os.chmod(unix_socket, 0o600)
        where = f"unix:{unix_socket}{path}"
    else:
        port = port or free_port(address)
        origins = own_origins(address, port, allowed_origins)
        with _guarded_routes(origins):  # pages and websockets only under the app's own names
            server = pn.serve(page, port=port, address=address, websocket_origin=origins, start=False, **options)
        shown_host = "127.0.0.1" if address in ("", "0.0.0.0", "::") else address
        where = f"http://{shown_host}:{port}{path} (websockets from {', '.join(origins)} only)"
    log.info("serving the latentsky app on %s", where)
    print(f"latentsky app: {where}", flush=True)
    server.start()
    if not start:
        return server
    if show and unix_socket is None:
        server.io_loop.add_callback(server.show, f"/{next(iter(page))}" if isinstance(page, dict) else "/")
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        if unix_socket is not None:
            unix_socket.unlink(missing_ok=True)
    return server
