"""The loopback HTTP server at the heart of the local archive.

:class:`LocalServer` is a real HTTP/1.1 server (``http.server.ThreadingHTTPServer``)
bound to 127.0.0.1, on a free port by default.  It serves folders of files
with HEAD, byte ranges (206), ``Content-Length`` and ``ETag``, lets other
modules register endpoints, and injects faults on request, deterministically.

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
folder)`` adds more (``server.mount("/sdss/", sdss_dir)``).  ``ignore_range=True``
(also settable later) makes the server answer every Range request with the
whole file and status 200, as some archives do.

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

Answers: ``Response(body_bytes, status, content_type, headers)``,
``Response.text(...)``, ``Response.json(obj)``, and ``Response.from_file(path,
filename=None)`` (streamed, with ranges; ``filename`` adds a
``Content-Disposition``).  Uploaded tables arrive in ``request.files``, form
fields in ``request.form``.

Routes are tried in the order they were added; the first whose method and
path pattern match wins (405 when only the method differs, 404 when nothing
matches).  A route for GET also answers HEAD (same headers, no body).  Every
response, whether from a file or a handler, gets ``Content-Length``, an
``ETag``, and byte-range support (disable it per response with
``Response(..., accept_ranges=False)``).  A handler that raises gets a 500 whose
text names the exception; ``raise HTTPError(404, "no such product")`` answers
with that status.

Fault injection
---------------
Faults hit any path that matches ``fault_paths`` (a glob, default ``"*"``):

==================  =========================================================
kind                what the client sees
==================  =========================================================
``latency``         ``fault_latency`` extra seconds before the answer
``500``             ``500 Internal Server Error``
``503``             ``503 Service Unavailable`` with ``Retry-After``
``429``             ``429 Too Many Requests`` with ``Retry-After: retry_after``
``reset``           headers and half the body, then a TCP reset
``truncate``        ``Content-Length`` of the whole body, half of it sent, closed
``html``            ``200 text/html``: a login page instead of the data
                    (ESO's expired session)
``hostile_name``    the right data with ``Content-Disposition: attachment;
                    filename="../../../evil.fits"``
==================  =========================================================

``fault_rate`` (probability per request) with ``faults`` (the kinds drawn
from) injects faults at random, but deterministically: the decision for the
n-th request of a path depends only on ``seed``, the path and n, never on
thread timing.  ``server.fail_first(pattern, k, kind)`` makes the first ``k``
requests of every path matching the glob fail with ``kind``, so tests know
exactly what happens.  ``latency`` (seconds from each request's arrival to
its answer's first byte, the server's own work included) and ``bandwidth``
(bytes/s per response) slow the server down as a whole.  Answers go out with
``TCP_NODELAY``, a small one in a single write.
``server.require_token(prefix, token)`` answers requests under ``prefix``
without ``Authorization: Bearer <token>`` with the HTML login page.

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

import dataclasses
import email.parser
import email.policy
import fnmatch
import hashlib
import html
import http.server
import json
import logging
import mimetypes
import re
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import parse_qs, quote, unquote, urlsplit

log = logging.getLogger(__name__)

FAULT_KINDS = ("latency", "500", "503", "429", "reset", "truncate", "html", "hostile_name")
"""Names of the faults :class:`LocalServer` can inject."""

HOSTILE_FILENAME = "../../../evil.fits"
"""The file name sent by the ``hostile_name`` fault."""

LOGIN_PAGE = b"""<!DOCTYPE html>
<html><head><title>ESO Single Sign On</title></head>
<body><h1>Login</h1><p>Your session has expired. Please log in again.</p>
<form method="post" action="/sso/login"><input name="username"><input name="password" type="password">
</form></body></html>
"""
"""What the ``html`` fault and :meth:`LocalServer.require_token` send instead of data."""

_CHUNK = 64 * 1024
_SMALL_BODY = 4 * 1024 * 1024
"""Files up to this size (bytes) are read whole and sent with their headers in one write."""


class HTTPError(Exception):
    """Raise from a handler to answer with an HTTP error status.

    Parameters
    ----------
    status : int
        HTTP status code, e.g. 400 or 404.
    message : str
        Plain-text body explaining the problem.
    headers : dict, optional
        Extra response headers.
    """

    def __init__(self, status: int, message: str = "", headers: dict | None = None):
        super().__init__(f"{status} {message}")
        self.status, self.message, self.headers = status, message, dict(headers or {})


@dataclasses.dataclass
class Request:
    """What a route handler receives.

    Attributes
    ----------
    method : str
        ``"GET"``, ``"HEAD"``, ``"POST"``...
    path : str
        Decoded URL path, without the query string.
    query : dict of str to list of str
        Parsed query string.
    headers : email.message.Message
        Request headers; look-ups are case-insensitive (``headers.get("range")``).
    body : bytes
        The request body (empty for GET).
    path_params : dict of str to str
        Values of the ``{name}`` placeholders of the route pattern.
    form : dict of str to list of str
        Fields of an ``application/x-www-form-urlencoded`` or
        ``multipart/form-data`` body (text fields only).
    files : dict of str to bytes
        File parts of a ``multipart/form-data`` body (e.g. a TAP ``UPLOAD`` table).
    server : LocalServer
        The server, e.g. to build URLs with :meth:`LocalServer.url_for`.
    """

    method: str
    path: str
    query: dict
    headers: object
    body: bytes = b""
    path_params: dict = dataclasses.field(default_factory=dict)
    form: dict = dataclasses.field(default_factory=dict)
    files: dict = dataclasses.field(default_factory=dict)
    server: "LocalServer | None" = None

    def param(self, name: str, default: str | None = None) -> str | None:
        """First value of parameter ``name`` from the query string or the form body.

        The look-up ignores case, as TAP requires (``QUERY``, ``query``...).
        """
        wanted = name.lower()
        for source in (self.query, self.form):
            for key, values in source.items():
                if key.lower() == wanted and values:
                    return values[0]
        return default


@dataclasses.dataclass
class Response:
    """What a route handler returns.

    Parameters
    ----------
    body : bytes or str
        Content (``str`` is encoded as UTF-8).  Ignored when ``file`` is set.
    status : int
        HTTP status code.
    content_type : str
        Value of the ``Content-Type`` header.
    headers : dict
        Extra headers (``Content-Length`` and ``ETag`` are added for you).
    file : Path or None
        Serve this file (streamed, with byte ranges) instead of ``body``.
    accept_ranges : bool
        Honour ``Range`` requests on a 200 answer.
    """

    body: bytes | str = b""
    status: int = 200
    content_type: str = "application/octet-stream"
    headers: dict = dataclasses.field(default_factory=dict)
    file: Path | None = None
    accept_ranges: bool = True

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str = "text/plain; charset=utf-8",
             **kw) -> "Response":
        """A text answer."""
        return cls(text.encode("utf-8"), status, content_type, **kw)

    @classmethod
    def json(cls, obj, status: int = 200, **kw) -> "Response":
        """A JSON answer."""
        return cls(json.dumps(obj).encode("utf-8"), status, "application/json", **kw)

    @classmethod
    def from_file(cls, path: str | Path, content_type: str | None = None,
                  filename: str | None = None, **kw) -> "Response":
        """Serve a file; ``filename`` adds a ``Content-Disposition`` header."""
        path = Path(path)
        if content_type is None:
            content_type = _guess_type(path)
        resp = cls(status=200, content_type=content_type, file=path, **kw)
        if filename is not None:
            resp.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
        return resp


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it (see ``LocalServer.log``).

    Attributes
    ----------
    time : float
        ``time.monotonic()`` when the request arrived, in seconds.
    method, path : str
        Request method and decoded path.
    headers : dict
        Request headers (names lower-cased).
    status : int
        Status code sent (0 when the connection was reset before a status line).
    fault : str or None
        The injected fault, if any.
    """

    time: float
    method: str
    path: str
    headers: dict
    status: int
    fault: str | None


def _guess_type(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".fits", ".fit", ".fts", ".fits.gz", ".fits.fz")):
        return "application/fits"
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _compile(pattern: str) -> re.Pattern:
    """Route pattern -> regex: ``{name}`` matches one segment, ``{name:path}`` anything."""
    out, pos = [], 0
    for m in re.finditer(r"\{(\w+)(?::(path))?\}", pattern):
        out.append(re.escape(pattern[pos:m.start()]))
        out.append(f"(?P<{m.group(1)}>.+)" if m.group(2) else f"(?P<{m.group(1)}>[^/]+)")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("^" + "".join(out) + "$")


def _unit_float(*parts) -> float:
    """A number in [0, 1) that depends only on ``parts`` (deterministic fault draws)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _parse_range(header: str, total: int) -> tuple[int, int] | None | str:
    """``bytes=a-b`` -> (start, stop) with stop exclusive; None when not a single
    byte range we understand (serve the whole body); "unsatisfiable" for 416."""
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None
    if m.group(1) == "":  # suffix range: the last n bytes
        n = int(m.group(2))
        if n == 0:
            return "unsatisfiable"
        return max(0, total - n), total
    start = int(m.group(1))
    stop = total if m.group(2) == "" else min(total, int(m.group(2)) + 1)
    if start >= total or stop <= start:
        return "unsatisfiable"
    return start, stop


class _Route:
    def __init__(self, method: str, pattern: str, handler: Callable[[Request], Response]):
        self.method, self.pattern, self.handler = method.upper(), pattern, handler
        self.regex = _compile(pattern)


class LocalServer:
    """A loopback HTTP server for files and registered endpoints, with fault injection.

    Parameters
    ----------
    root : path-like or None
        Folder served under ``/files/`` (sub-folders included).  More with :meth:`mount`.
    host : str
        Interface to bind; keep the default, 127.0.0.1, unless you mean to share it.
    port : int
        TCP port; 0 picks a free one (see :attr:`base_url`).
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

    Examples
    --------
    >>> server = LocalServer(port=0).start()       # or ``with LocalServer(...) as server:``
    >>> server.base_url.startswith("http://127.0.0.1:")
    True
    >>> server.stop()
    """

    def __init__(self, root: str | Path | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 latency: float = 0.0, bandwidth: float | None = None, ignore_range: bool = False,
                 fault_rate: float = 0.0, faults: Iterable[str] = FAULT_KINDS, seed: int = 0,
                 retry_after: float = 1.0, fault_latency: float = 1.0, fault_paths: str = "*"):
        self.latency = float(latency)
        self.bandwidth = bandwidth
        self.ignore_range = bool(ignore_range)
        self.seed = int(seed)
        self.retry_after = float(retry_after)
        self.fault_latency = float(fault_latency)
        self.fault_paths = fault_paths
        self.set_faults(fault_rate, faults)
        self.log: list[RequestRecord] = []
        self._routes: list[_Route] = []
        self._mounts: list[tuple[str, Path]] = []
        self._fail_first: list[tuple[str, int, str, dict]] = []
        self._tokens: list[tuple[str, str]] = []
        self._counts: dict[str, int] = {}
        self.in_flight = 0
        """Requests being answered now."""
        self.max_in_flight = 0
        """Most requests answered at once since start (or :meth:`clear`): checks concurrency limits."""
        self.connections = 0
        """TCP connections accepted since start (or :meth:`clear`): checks that clients keep them alive."""
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._httpd = _HTTPServer((host, int(port)), _Handler)
        self._httpd.app = self
        if root is not None:
            self.mount("/files/", root)

    # ------------------------------------------------------------------ setup
    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, without a trailing slash."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def add_route(self, method: str, pattern: str, handler: Callable[[Request], Response]) -> None:
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
            ``handler(request: Request) -> Response``; it runs in a server thread.
        """
        self._routes.append(_Route(method, pattern, handler))

    def mount(self, prefix: str, folder: str | Path) -> None:
        """Serve the files of ``folder`` (recursively) under the URL ``prefix``."""
        folder = Path(folder).resolve()
        if not folder.is_dir():
            raise NotADirectoryError(f"LocalServer.mount: {folder} is not a folder")
        prefix = "/" + prefix.strip("/") + "/"
        self._mounts.append((prefix, folder))

        def serve(request: Request) -> Response:
            rel = request.path_params["relpath"]
            target = (folder / rel).resolve()
            # never serve outside the mounted folder, whatever the URL says
            if not target.is_relative_to(folder) or not target.is_file():
                raise HTTPError(404, f"no such file: {request.path}")
            return Response.from_file(target)

        self.add_route("GET", prefix + "{relpath:path}", serve)

    def url_for(self, path: str | Path) -> str:
        """URL of a file inside one of the mounted folders."""
        path = Path(path).resolve()
        for prefix, folder in self._mounts:
            if path.is_relative_to(folder):
                return self.base_url + prefix + quote(path.relative_to(folder).as_posix())
        raise ValueError(f"LocalServer.url_for: {path} is not inside a mounted folder "
                         f"({[str(f) for _, f in self._mounts]})")

    def files(self) -> list[tuple[str, Path]]:
        """``(url, path)`` of every file served from the mounted folders, sorted."""
        out = []
        for _, folder in self._mounts:
            out += [(self.url_for(p), p) for p in sorted(folder.rglob("*")) if p.is_file()]
        return out

    def set_faults(self, rate: float = 0.0, kinds: Iterable[str] = FAULT_KINDS) -> None:
        """Change the random fault rate (in [0, 1]) and the kinds drawn from."""
        kinds = tuple(kinds)
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
        if not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"fault_rate must be in [0, 1], got {rate!r}")
        if rate and not kinds:
            raise ValueError("fault_rate > 0 needs at least one fault kind")
        self.fault_rate, self.fault_kinds = float(rate), kinds

    def fail_first(self, pattern: str, k: int, kind: str) -> None:
        """Make the first ``k`` requests of every path matching glob ``pattern`` fail with ``kind``.

        Each rule counts the requests of each path from the moment it is added;
        several rules matching one path apply one after another.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {FAULT_KINDS}")
        with self._lock:
            self._fail_first.append((pattern, int(k), kind, {}))

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
            self._counts.clear()
            self._fail_first.clear()
            self.max_in_flight = self.in_flight
            self.connections = 0

    # -------------------------------------------------------------- lifecycle
    def start(self) -> "LocalServer":
        """Serve in a daemon thread; returns ``self``."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                            name=f"LocalServer{self.base_url[6:]}", daemon=True)
            self._thread.start()
            log.info("local archive serving on %s", self.base_url)
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (for a command line)."""
        log.info("local archive serving on %s", self.base_url)
        try:
            self._httpd.serve_forever(poll_interval=0.2)
        finally:
            self._httpd.server_close()

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalServer({self.base_url}, mounts={[p for p, _ in self._mounts]})"

    # ---------------------------------------------------------------- faults
    def _choose_fault(self, path: str) -> str | None:
        with self._lock:
            n = self._counts.get(path, 0)
            self._counts[path] = n + 1
            for pattern, k, kind, counts in self._fail_first:
                if counts.get(path, 0) < k and fnmatch.fnmatchcase(path, pattern):
                    counts[path] = counts.get(path, 0) + 1
                    return kind
        if self.fault_rate and fnmatch.fnmatchcase(path, self.fault_paths):
            if _unit_float(self.seed, path, n, "rate") < self.fault_rate:
                kinds = self.fault_kinds
                return kinds[int(_unit_float(self.seed, path, n, "kind") * len(kinds))]
        return None

    def _record(self, rec: RequestRecord) -> None:
        with self._lock:
            self.log.append(rec)

    def _dispatch(self, request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        for prefix, token in self._tokens:
            if request.path.startswith(prefix):
                if request.headers.get("Authorization", "") != f"Bearer {token}":
                    return Response(LOGIN_PAGE, 200, "text/html; charset=utf-8")
        allowed = []
        for route in self._routes:
            m = route.regex.match(request.path)
            if m is None:
                continue
            if route.method != method:
                allowed.append(route.method)
                continue
            request.path_params = m.groupdict()
            try:
                response = route.handler(request)
                if not isinstance(response, Response):
                    raise TypeError(f"the handler of {route.method} {route.pattern} returned "
                                    f"{type(response).__name__}, not a Response")
                return response
            except HTTPError as err:
                return Response.text(err.message or str(err.status), status=err.status, headers=err.headers)
            except Exception as err:  # a handler bug must answer, not hang the client
                log.exception("handler for %s %s failed", request.method, request.path)
                return Response.text(f"{type(err).__name__}: {err}", status=500)
        if allowed:
            return Response.text(f"{request.method} not allowed on {request.path}", status=405,
                                 headers={"Allow": ", ".join(sorted(set(allowed)))})
        return Response.text(f"no such path: {request.path}", status=404)


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    app: LocalServer

    def process_request(self, request, client_address):
        with self.app._lock:
            self.app.connections += 1
        super().process_request(request, client_address)

    def handle_error(self, request, client_address):
        # clients hanging up (timeouts, killed downloads) are normal here, not tracebacks on stderr
        import sys

        err = sys.exc_info()[1]
        if isinstance(err, (ConnectionError, TimeoutError)):
            log.debug("client %s went away: %s", client_address, err)
        else:
            log.exception("error while serving %s", client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real archives do
    # TCP_NODELAY, as real web servers do: with Nagle's algorithm the last partial segment of
    # a body waits for the client's delayed ACK (up to 40 ms on Linux) before it is sent
    disable_nagle_algorithm = True
    server_version = "latentsky-local/1"
    server: _HTTPServer

    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
        if log.isEnabledFor(logging.DEBUG):  # called for every request: format only when shown
            log.debug("%s %s", self.address_string(), format % args)

    def parse_request(self) -> bool:
        # called as soon as the request line is in, before its headers are parsed: the
        # request's arrival, from which the latency runs
        self._arrived = time.monotonic()
        return super().parse_request()

    def do_GET(self):
        self._serve()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    # ------------------------------------------------------------------------
    def _read_request(self) -> Request:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        req = Request(self.command, unquote(split.path), parse_qs(split.query, keep_blank_values=True),
                      self.headers, body, server=self.server.app)
        ctype = self.headers.get("Content-Type", "")
        if body and ctype.startswith("application/x-www-form-urlencoded"):
            req.form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        elif body and ctype.startswith("multipart/form-data"):
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + body)
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if name is None:
                    continue
                payload = part.get_payload(decode=True) or b""
                if part.get_filename() is not None:
                    req.files[name] = payload
                else:
                    req.form.setdefault(name, []).append(payload.decode("utf-8", "replace"))
        return req

    def _serve(self):
        app = self.server.app
        with app._lock:
            app.in_flight += 1
            app.max_in_flight = max(app.max_in_flight, app.in_flight)
        try:
            self._serve_one(app)
        finally:
            with app._lock:
                app.in_flight -= 1

    def _serve_one(self, app: LocalServer):
        arrived = getattr(self, "_arrived", None) or time.monotonic()
        req = self._read_request()
        headers = {k.lower(): v for k, v in self.headers.items()}
        fault = app._choose_fault(req.path)
        if fault in ("500", "503", "429"):
            extra = {} if fault == "500" else {"Retry-After": f"{app.retry_after:g}"}
            resp = Response.text(f"injected fault {fault}", status=int(fault), headers=extra)
        elif fault == "html":
            resp = Response(LOGIN_PAGE, 200, "text/html; charset=utf-8")
        else:
            resp = app._dispatch(req)
            if fault == "hostile_name":
                resp.headers["Content-Disposition"] = f'attachment; filename="{HOSTILE_FILENAME}"'
        recorded = []

        def record(status: int) -> None:
            # logged before the response can be complete on the client's side, so a client
            # that has its answer always finds its request in ``server.log``
            if not recorded:
                recorded.append(status)
                app._record(RequestRecord(arrived, req.method, req.path, headers, status, fault))

        try:
            answer = self._prepare(req, resp, fault)
            # The answer is ready; its first byte leaves ``latency`` s after the request arrived
            # (a far-away archive's round trip), the server's own work included, not added.
            delay = app.latency + (app.fault_latency if fault == "latency" else 0.0)
            wait = arrived + delay - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._send(answer, fault, record)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        finally:
            record(0)  # 0: the client was gone before the status line

    def _prepare(self, req: Request, resp: Response, fault: str | None) -> tuple:
        """Status, headers and body of the answer (the bytes of a small file read here)."""
        app = self.server.app
        path = resp.file
        if path is not None:
            st = path.stat()
            total = st.st_size
            etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
            body = None
        else:
            body = resp.body.encode("utf-8") if isinstance(resp.body, str) else bytes(resp.body)
            total = len(body)
            etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
        status, start, stop = resp.status, 0, total
        headers = {"Content-Type": resp.content_type}
        if status == 200:
            headers["ETag"] = etag
            if resp.accept_ranges and not app.ignore_range:
                headers["Accept-Ranges"] = "bytes"
                rng = req.headers.get("Range")
                if_range = req.headers.get("If-Range")
                if rng and (if_range is None or if_range == etag):
                    parsed = _parse_range(rng, total)
                    if parsed == "unsatisfiable":
                        status, body, start, stop = 416, b"", 0, 0
                        headers["Content-Range"] = f"bytes */{total}"
                    elif parsed is not None:
                        start, stop = parsed
                        status = 206
                        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{total}"
        headers.update(resp.headers)
        headers["Content-Length"] = str(stop - start)
        if fault in ("reset", "truncate"):
            headers["Connection"] = "close"
        limit = stop
        if fault in ("reset", "truncate"):
            # send about half, at least one byte short of the announced length
            limit = start + max(0, (stop - start) // 2)
        bodyless = req.method == "HEAD" or stop <= start
        if bodyless:
            limit = start
        if path is not None and limit - start <= _SMALL_BODY and not app.bandwidth:
            with open(path, "rb") as fh:  # small: read now, sent with the headers in one write
                fh.seek(start)
                body = fh.read(limit - start)
            path, start, limit = None, 0, len(body)
        return status, headers, path, body, start, limit, bodyless

    def _send(self, answer: tuple, fault: str | None, record) -> int:
        status, headers, path, body, start, limit, bodyless = answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        record(status)
        try:
            if path is None and not self.server.app.bandwidth:
                # headers and body in one write: one system call, no partial segment waiting
                self._headers_buffer.append(b"\r\n")
                head = b"".join(self._headers_buffer)
                self._headers_buffer = []
                self.wfile.write(head + body[start:limit] if limit > start else head)
            else:
                self.end_headers()
                if limit > start:
                    self._write_body(path, body, start, limit)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up; nothing to do
            self.close_connection = True
            return status
        if bodyless:
            return status
        if fault == "reset":
            self._reset()
        elif fault == "truncate":
            self.close_connection = True
        return status

    def _write_body(self, path: Path | None, body: bytes | None, start: int, stop: int) -> None:
        bandwidth = self.server.app.bandwidth
        chunk = _CHUNK if not bandwidth else max(1, min(_CHUNK, int(bandwidth / 20)))
        t0, sent = time.monotonic(), 0

        def pace(n):
            nonlocal sent
            sent += n
            if bandwidth:
                ahead = sent / bandwidth - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)

        if path is None:
            view = memoryview(body)
            pos = start
            while pos < stop:
                n = min(chunk, stop - pos)
                self.wfile.write(view[pos:pos + n])
                pos += n
                pace(n)
            return
        with open(path, "rb") as fh:
            fh.seek(start)
            pos = start
            while pos < stop:
                data = fh.read(min(chunk, stop - pos))
                if not data:
                    break
                self.wfile.write(data)
                pos += len(data)
                pace(len(data))

    def _reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0), mid-body."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass


def error_page(status: int, message: str) -> Response:
    """An HTML error page, as archives send, for handlers that want one."""
    text = f"<html><body><h1>{status}</h1><p>{html.escape(message)}</p></body></html>"
    return Response.text(text, status=status, content_type="text/html; charset=utf-8")
