"""The loopback HTTP server at the heart of the local archive.

:class:`LocalServer` is a real asynchronous HTTP/1.1 server (tornado, see
:mod:`.transport`) bound to 127.0.0.1, on a free port by default.  It serves
folders of files with HEAD, byte ranges (206), ``Content-Length`` and
``ETag``, lets other modules register endpoints, and injects faults on
request, deterministically (:mod:`.faults`).  Its connections, time-outs and
request sizes are bounded (:class:`~.transport.Limits`), so a room of clients
(``latentsky classroom --host 0.0.0.0``) or a hostile one cannot exhaust it.

Serving files
-------------
>>> import tempfile, pathlib, requests
>>> folder = pathlib.Path(tempfile.mkdtemp()); _ = (folder / "a.fits").write_bytes(b"x" * 10)
>>> with LocalServer(folder) as server:            # mounted at /files/
...     url = server.url_for(folder / "a.fits")
...     r = requests.get(url, headers={"Range": "bytes=2-"}, timeout=5)
>>> url.endswith("/files/a.fits"), r.status_code, len(r.content)
(True, 206, 8)

``LocalServer(root)`` mounts one folder at ``/files/``; ``server.mount(prefix,
folder)`` adds more (``server.mount("/sdss/", sdss_dir)``).  Only files that
really lie inside the folder are served: a symbolic link pointing outside it
is not.  ``ignore_range=True`` (also settable later) makes the server answer
every Range request with the whole file and status 200, as some archives do.

Adding endpoints
----------------
A handler is a function taking a :class:`Request` and returning a
:class:`Response`::

    def tap_sync(request: Request) -> Response:
        query = request.param("QUERY")          # query string or form body, case-insensitive
        if query is None:
            return Response.text("QUERY is missing", status=400)
        return Response(votable_bytes, content_type="application/x-votable+xml")

    server.add_route("GET", "/tap/sync", tap_sync)
    server.add_route("POST", "/tap/sync", tap_sync)
    server.add_route("GET", "/cutout/{survey}", cutout)        # request.path_params["survey"]
    server.add_route("GET", "/data/{name:path}", data_file)    # {name:path} also matches "/"
    server.add_route("GET", "/tap/availability", quick, inline=True)   # answered on the event loop

Handlers run in a pool of ``limits.workers`` threads, so slow ones (an ADQL
query, a resampled image) never hold up the others; ``inline=True`` marks a
handler that answers at once (a fixed document, a file look-up) to run on the
event loop itself, never queued behind slow ones.

Answers: ``Response(body_bytes, status, content_type, headers)``,
``Response.text(...)``, ``Response.json(obj)``, and ``Response.from_file(path,
filename=None)`` (streamed, with ranges; ``filename`` adds a
``Content-Disposition``).  Uploaded tables arrive in ``request.files``, form
fields in ``request.form``; ``request.int_param`` and ``request.float_param``
check a parameter and answer 400 naming it when it is malformed.

Routes (:mod:`.routing`) are tried in the order they were added; the first whose method and
path pattern match wins (405 when only the method differs, 404 when nothing
matches).  A route for GET also answers HEAD (same headers, no body).  Every
response, whether from a file or a handler, gets ``Content-Length``, an
``ETag``, and byte-range support (disable it per response with
``Response(..., accept_ranges=False)``).  A handler that raises gets a 500 whose
text names the exception; ``raise HTTPError(404, "no such product")`` answers
with that status.

Fault injection
---------------
``fault_rate`` (probability per request) with ``faults`` (the kinds drawn
from, :data:`FAULT_KINDS`, described in :mod:`.faults`) injects faults at
random, but deterministically: the decision for the n-th request of a path
depends only on ``seed``, the path and n.  ``server.fail_first(pattern, k,
kind)`` makes the first ``k`` requests of every path matching the glob fail
with ``kind``, so tests know exactly what happens.  ``latency`` (seconds from
each request's arrival to its answer's first byte, the server's own work
included) and ``bandwidth`` (bytes/s per response) slow the server down as a
whole.  ``server.require_token(prefix, token)`` answers requests under
``prefix`` without ``Authorization: Bearer <token>`` with the HTML login page.

Every request is recorded in ``server.log`` (:class:`RequestRecord`: time,
method, path, headers, status, fault), so tests can check what a client did;
``server.max_in_flight`` is the most requests answered at once,
``server.connections`` the TCP connections accepted,
``server.wait_idle()`` waits for slow answers to finish and ``server.clear()``
resets the log, the counters and the ``fail_first`` rules.
``server.files()`` lists ``(url, path)`` of every served file and
``server.url_for(path)`` gives one file's URL.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import quote

from latentsky.archives.local.faults import FAULT_KINDS, HOSTILE_FILENAME, LOGIN_PAGE, FaultPlan, login_page
from latentsky.archives.local.messages import HTTPError, Request, RequestRecord, Response
from latentsky.archives.local.routing import Route, dispatch
from latentsky.archives.local.transport import Limits, make_http_server

__all__ = [
    "LocalServer",
    "Limits",
    "Request",
    "Response",
    "HTTPError",
    "RequestRecord",
    "FAULT_KINDS",
    "HOSTILE_FILENAME",
    "LOGIN_PAGE",
    "inside",
]

log = logging.getLogger(__name__)


def inside(path: str | Path, folder: Path) -> Path | None:
    """``path`` with every symbolic link resolved, when that lies inside ``folder`` (resolved); else None."""
    try:
        target = Path(path).resolve()
    except (OSError, RuntimeError):  # a link loop
        return None
    return target if target.is_relative_to(folder) else None


def lower_priority(niceness: int = 10) -> None:
    """Lower the calling thread's scheduling priority (Linux; elsewhere nothing).

    Handler threads run at a lower priority than the event loop, so that slow
    handlers busy on every core never keep it from accepting and answering
    (a quick request waits microseconds, not a scheduler round per busy thread).
    """
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
        except (OSError, AttributeError):
            pass


class LocalServer:
    """A loopback HTTP server for files and registered endpoints, with fault injection.

    Parameters
    ----------
    root : path-like or None
        Folder served under ``/files/`` (sub-folders included).  More with :meth:`mount`.
    host : str
        Interface to bind; keep the default, 127.0.0.1, unless you mean to share it.
    port : int
        TCP port; 0 picks a free one (see :attr:`base_url`).  A port in use raises OSError.
    latency : float
        Seconds from a request's arrival to the first byte of its answer (a
        far-away archive's round trip); the server's own work is done within
        this time, not added to it.
    bandwidth : float or None
        Bytes per second per response body; None sends as fast as possible.
    ignore_range : bool
        Answer Range requests with the whole body and status 200.
    fault_rate : float
        Probability in [0, 1] that a request gets a fault drawn from ``faults``.
    faults : iterable of str
        Kinds drawn from when ``fault_rate`` > 0; see :data:`FAULT_KINDS`.
    seed : int
        Seed of the deterministic fault draws.
    retry_after : float
        Seconds announced in ``Retry-After`` by the 429 and 503 faults.
    fault_latency : float
        Extra seconds of the ``latency`` fault.
    fault_paths : str
        Glob of the paths that rate-drawn faults may hit.
    limits : Limits, optional
        Connection, time-out, size and thread limits (:class:`~.transport.Limits`).

    Examples
    --------
    >>> server = LocalServer(port=0).start()       # or ``with LocalServer(...) as server:``
    >>> server.base_url.startswith("http://127.0.0.1:")
    True
    >>> server.stop()
    """

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        bandwidth: float | None = None,
        ignore_range: bool = False,
        fault_rate: float = 0.0,
        faults: Iterable[str] = FAULT_KINDS,
        seed: int = 0,
        retry_after: float = 1.0,
        fault_latency: float = 1.0,
        fault_paths: str = "*",
        limits: Limits | None = None,
    ):
        from tornado.netutil import bind_sockets

        self.latency = float(latency)
        self.bandwidth = bandwidth
        self.ignore_range = bool(ignore_range)
        self.retry_after = float(retry_after)
        self.fault_latency = float(fault_latency)
        self.limits = limits or Limits()
        self._faults = FaultPlan(fault_rate, faults, seed, fault_paths)
        self.log: list[RequestRecord] = []
        self._routes: list[Route] = []
        self._mounts: list[tuple[str, Path]] = []
        self._tokens: list[tuple[str, str]] = []
        self.in_flight = 0
        """Requests being answered now."""
        self.max_in_flight = 0
        """Most requests answered at once since start (or :meth:`clear`): checks concurrency limits."""
        self.connections = 0
        """TCP connections accepted since start (or :meth:`clear`): checks that clients keep them alive."""
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        if root is not None:
            self.mount("/files/", root)
        self._sockets = bind_sockets(int(port), address=host, backlog=128)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self.limits.workers, thread_name_prefix="LocalServer", initializer=lower_priority
        )

    # ------------------------------------------------------------------ setup
    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, without a trailing slash."""
        host, port = self._sockets[0].getsockname()[:2]
        return f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"

    @property
    def loopback_only(self) -> bool:
        """Whether only this machine can connect (the server listens on a loopback address)."""
        import ipaddress

        return all(ipaddress.ip_address(s.getsockname()[0].split("%")[0]).is_loopback for s in self._sockets)

    @property
    def seed(self) -> int:
        """Seed of the fault draws."""
        return self._faults.seed

    @property
    def fault_rate(self) -> float:
        """Probability of a random fault per request."""
        return self._faults.rate

    @property
    def fault_kinds(self) -> tuple[str, ...]:
        """Kinds random faults are drawn from."""
        return self._faults.kinds

    def add_route(
        self, method: str, pattern: str, handler: Callable[[Request], Response], *, inline: bool = False
    ) -> None:
        """Answer ``method`` requests whose path matches ``pattern`` with ``handler``.

        Parameters
        ----------
        method : str
            HTTP method; a GET route also answers HEAD.
        pattern : str
            Path, optionally with ``{name}`` (one segment) or ``{name:path}``
            (the rest, slashes included) placeholders, found in
            ``request.path_params``.
        handler : callable
            ``handler(request: Request) -> Response``; it runs in a worker thread.  An
            ``async def`` handler is awaited on the event loop instead (to wait without
            holding a thread; it must not compute).
        inline : bool
            The handler answers at once (no computation, no waiting): run it on the
            event loop, never queued behind slow handlers.
        """
        self._routes.append(Route(method, pattern, handler, inline))

    def mount(self, prefix: str, folder: str | Path) -> None:
        """Serve the files of ``folder`` (recursively) under the URL ``prefix``."""
        folder = Path(folder).resolve()
        if not folder.is_dir():
            raise NotADirectoryError(f"LocalServer.mount: {folder} is not a folder")
        prefix = "/" + prefix.strip("/") + "/"
        self._mounts.append((prefix, folder))

        def serve(request: Request) -> Response:
            # never serve outside the mounted folder, whatever the URL or a symbolic link says
            target = inside(folder / request.path_params["relpath"], folder)
            if target is None or not target.is_file():
                raise HTTPError(404, f"no such file: {request.path}")
            return Response.from_file(target)

        self.add_route("GET", prefix + "{relpath:path}", serve, inline=True)

    def url_for(self, path: str | Path) -> str:
        """URL of a file inside one of the mounted folders."""
        path = Path(path).resolve()
        for prefix, folder in self._mounts:
            if path.is_relative_to(folder):
                return self.base_url + prefix + quote(path.relative_to(folder).as_posix())
        raise ValueError(
            f"LocalServer.url_for: {path} is not inside a mounted folder ({[str(f) for _, f in self._mounts]})"
        )

    def files(self) -> list[tuple[str, Path]]:
        """``(url, path)`` of every file served from the mounted folders, sorted."""
        out = []
        for _, folder in self._mounts:
            for p in sorted(folder.rglob("*")):
                if p.is_file() and inside(p, folder) is not None:
                    out.append((self.url_for(p), p))
        return out

    def set_faults(self, rate: float = 0.0, kinds: Iterable[str] = FAULT_KINDS) -> None:
        """Change the random fault rate (in [0, 1]) and the kinds drawn from."""
        self._faults.set_rate(rate, kinds)

    def fail_first(self, pattern: str, k: int, kind: str) -> None:
        """Make the first ``k`` requests of every path matching glob ``pattern`` fail with ``kind``.

        Each rule counts the requests of each path from the moment it is added;
        several rules matching one path apply one after another.
        """
        self._faults.fail_first(pattern, k, kind)

    def require_token(self, prefix: str, token: str) -> None:
        """Answer requests under ``prefix`` lacking ``Authorization: Bearer <token>``
        with the HTML login page (status 200, as ESO does)."""
        self._tokens.append((prefix, token))

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no request is being answered (e.g. a slow fault outliving its
        client's timeout), up to ``timeout`` s; True when idle."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.in_flight == 0:
                    return True
            time.sleep(0.01)
        return False

    def clear(self) -> None:
        """Forget the request log, the per-path counters, ``max_in_flight``, ``connections`` and the
        ``fail_first`` rules."""
        with self._lock:
            self.log.clear()
            self.max_in_flight = self.in_flight
            self.connections = 0
        self._faults.clear()

    # -------------------------------------------------------------- lifecycle
    def start(self) -> "LocalServer":
        """Serve in a daemon thread; returns ``self``."""
        if self._thread is None:
            ready = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(ready,), name=f"LocalServer{self.base_url[6:]}", daemon=True
            )
            self._thread.start()
            ready.wait(10)
            log.info("local archive serving on %s", self.base_url)
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (for a command line)."""
        log.info("local archive serving on %s", self.base_url)
        try:
            self._run(threading.Event())
        finally:
            self._close_sockets()

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            http = loop.run_until_complete(self._listen())
            ready.set()
            loop.run_forever()
            http.stop()
            try:
                loop.run_until_complete(asyncio.wait_for(http.close_all_connections(), 2.0))
            except (asyncio.TimeoutError, Exception):  # connections of handlers still running
                pass
        finally:
            ready.set()
            loop.close()
            self._loop = None

    async def _listen(self):
        http = make_http_server(self)
        http.add_sockets(self._sockets)
        return http

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._thread is not None:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._thread = None
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalServer({self.base_url}, mounts={[p for p, _ in self._mounts]})"

    # ------------------------------------------------------- called by transport
    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _record(self, rec: RequestRecord) -> None:
        with self._lock:
            self.log.append(rec)

    async def _dispatch(self, request: Request) -> Response:
        """The answer to ``request``: the login page when it lacks a required token, else its route's."""
        for prefix, token in self._tokens:
            if request.path.startswith(prefix):
                if request.headers.get("Authorization", "") != f"Bearer {token}":
                    return login_page()
        return await dispatch(self._routes, request, self._pool)
