"""The local archive on the wire: tornado's asynchronous HTTP/1.1 server under :class:`LocalServer`.

One event loop accepts connections, reads requests and writes answers; route
handlers run in a bounded thread pool (or on the loop when they are quick), so
idle or slow clients cost no thread.  What a classroom of clients, or a hostile
one, can do is bounded by :class:`Limits`:

- at most ``max_connections`` open connections (more are answered ``503`` and closed);
- a request's headers must arrive within ``header_timeout`` seconds of the
  connection's last answer (this closes idle keep-alive connections and
  slowloris clients), its body within ``body_timeout`` seconds;
- a body is refused from its ``Content-Length`` alone, before any of it is
  read: ``400`` when the header is not a number, ``413`` beyond ``max_body_bytes``.

Answers get ``Content-Length``, an ``ETag`` and byte ranges (206, 416), and the
server's ``latency``, ``bandwidth`` and the delivery faults (``reset``,
``truncate``) are applied here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.parser
import email.policy
import hashlib
import logging
import re
import socket
import struct
import time
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from tornado import httputil, iostream
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

from latentsky.archives.local.faults import REPLACING, fault_response, label_hostile
from latentsky.archives.local.messages import HTTPError, Request, RequestRecord, Response, parse_range

log = logging.getLogger(__name__)

SERVER = "latentsky-local/1"
"""The ``Server`` header of every answer."""

_CHUNK = 64 * 1024
_SMALL_BODY = 4 * 1024 * 1024
"""Files up to this size (bytes) are read whole and sent with their headers in one write."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one server accepts from its clients.

    Attributes
    ----------
    max_connections : int
        Open TCP connections at once; one more is answered ``503`` and closed.
    header_timeout : float
        Seconds a connection may take to send a request's headers, counted from
        its opening or its previous answer (idle keep-alive connections close then).
    body_timeout : float
        Seconds to receive a request body.
    max_body_bytes : int
        Largest request body (a TAP upload is a few MB); checked against
        ``Content-Length`` before reading.
    max_header_bytes : int
        Largest request line plus headers.
    workers : int
        Threads running route handlers; further requests wait for one.
    """

    max_connections: int = 512
    header_timeout: float = 15.0
    body_timeout: float = 60.0
    max_body_bytes: int = 16 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    workers: int = 8


def make_http_server(app) -> HTTPServer:
    """A tornado server answering for ``app`` (a :class:`LocalServer`) with its limits."""
    limits = app.limits
    server = _HTTPServer(
        _Delegate(app),
        idle_connection_timeout=limits.header_timeout,
        body_timeout=limits.body_timeout,
        max_body_size=limits.max_body_bytes,
        max_header_size=limits.max_header_bytes,
    )
    server.app = app
    return server


class _HTTPServer(HTTPServer):
    app = None

    def handle_stream(self, stream: iostream.IOStream, address: tuple) -> None:
        app = self.app
        with app._lock:
            app.connections += 1
        if len(self._connections) >= app.limits.max_connections:
            IOLoop.current().spawn_callback(
                answer_and_close,
                stream,
                503,
                f"this server has its {app.limits.max_connections} connections open; try again later",
                {"Retry-After": "1"},
            )
            return
        super().handle_stream(stream, address)


class _Delegate(httputil.HTTPServerConnectionDelegate):
    def __init__(self, app):
        self.app = app

    def start_request(self, server_conn, request_conn) -> httputil.HTTPMessageDelegate:
        return _Exchange(self.app, request_conn)

    def on_close(self, server_conn) -> None:
        pass


def _body_problem(headers: httputil.HTTPHeaders, limit: int) -> tuple[int, str] | None:
    """Status and message for a request body refused from its headers alone, or None."""
    value = headers.get("Content-Length")
    if value is None:
        return None
    pieces = {p.strip() for p in value.split(",")}
    if len(pieces) != 1 or not re.fullmatch(r"\d+", next(iter(pieces))):
        return 400, f"Content-Length {value[:40]!r} is not a number of bytes"
    digits = next(iter(pieces)).lstrip("0") or "0"
    if len(digits) > 15 or int(digits) > limit:
        shown = digits if len(digits) <= 20 else f"a {len(digits)}-digit number of"
        return 413, f"a request body of {shown} bytes is over this server's limit of {limit} bytes"
    return None


class _Exchange(httputil.HTTPMessageDelegate):
    """One request and its answer on a connection."""

    def __init__(self, app, connection):
        self.app, self.connection = app, connection
        self.chunks: list[bytes] = []
        self.arrived = time.monotonic()
        self.entered = self.left = self.responding = False

    # ---------------------------------------------------------------- reading
    def headers_received(self, start_line, headers):
        self.arrived = time.monotonic()
        self.start_line, self.headers = start_line, headers
        problem = _body_problem(headers, self.app.limits.max_body_bytes)
        if problem is not None:
            self.app._record(
                RequestRecord(
                    self.arrived,
                    start_line.method,
                    unquote(urlsplit(start_line.path).path),
                    _lower(headers),
                    problem[0],
                    None,
                )
            )
            stream = self.connection.detach()
            IOLoop.current().spawn_callback(answer_and_close, stream, *problem)
            return None
        self.entered = True
        self.app._enter()
        return None

    def data_received(self, chunk: bytes):
        self.chunks.append(chunk)

    def finish(self) -> None:
        self.responding = True
        IOLoop.current().spawn_callback(self._respond)

    def on_connection_close(self) -> None:
        if not self.responding:
            self._leave()

    def _leave(self) -> None:
        if self.entered and not self.left:
            self.left = True
            self.app._leave()

    def _request(self) -> Request:
        split = urlsplit(self.start_line.path)
        body = b"".join(self.chunks)
        req = Request(
            self.start_line.method,
            unquote(split.path),
            parse_qs(split.query, keep_blank_values=True),
            self.headers,
            body,
            server=self.app,
        )
        ctype = self.headers.get("Content-Type", "")
        if body and ctype.startswith("application/x-www-form-urlencoded"):
            req.form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        elif body and ctype.startswith("multipart/form-data"):
            req.form, req.files = _multipart(ctype, body)
        return req

    # ---------------------------------------------------------------- answering
    async def _respond(self) -> None:
        app, status, fault = self.app, 0, None
        req = problem = None
        try:
            try:
                req = self._request()
            except HTTPError as err:  # a malformed body: the request with no body, answered with the error
                req = Request(self.start_line.method, unquote(urlsplit(self.start_line.path).path), {}, self.headers)
                problem = err
            fault = app._faults.choose(req.path)
            if fault in REPLACING:
                resp = fault_response(fault, app.retry_after)
            elif problem is not None:
                resp = Response.text(problem.message, status=problem.status)
            else:
                resp = await app._dispatch(req)
                if fault == "hostile_name":
                    label_hostile(resp)
            answer = _Answer(req, resp, fault, app.ignore_range)
            # the answer's first byte leaves ``latency`` s after the request arrived (a far-away
            # archive's round trip), the server's own work included, not added
            delay = app.latency + (app.fault_latency if fault == "latency" else 0.0)
            wait = self.arrived + delay - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            status = answer.status
            # recorded before the answer can be complete on the client's side, so a client
            # that has its answer always finds its request in ``server.log``
            app._record(RequestRecord(self.arrived, req.method, req.path, _lower(self.headers), status, fault))
            if fault in ("reset", "truncate"):
                await self._write_broken(answer, fault)
            else:
                await self._write(answer)
        except (iostream.StreamClosedError, ConnectionError, TimeoutError):
            log.debug("client went away during %s", self.start_line.path)
        except Exception:  # a bug here must not leave the client waiting
            log.exception("error while answering %s %s", self.start_line.method, self.start_line.path)
            self.connection.close()
        finally:
            if status == 0 and req is not None:
                app._record(RequestRecord(self.arrived, req.method, req.path, _lower(self.headers), 0, fault))
            self._leave()

    async def _write(self, answer: "_Answer") -> None:
        conn = self.connection
        start_line = httputil.ResponseStartLine("HTTP/1.1", answer.status, httputil.responses.get(answer.status, ""))
        headers = httputil.HTTPHeaders(answer.headers)
        if answer.path is None and not self.app.bandwidth:
            # headers and body in one write: one system call, no partial segment waiting
            await conn.write_headers(start_line, headers, answer.body[answer.start : answer.limit])
        else:
            await conn.write_headers(start_line, headers)
            async for chunk in self._chunks(answer):
                await conn.write(chunk)
        conn.finish()

    async def _write_broken(self, answer: "_Answer", fault: str) -> None:
        """Headers promising the whole body, about half of it, then a close (``truncate``) or a TCP reset."""
        stream = self.connection.detach()
        try:
            await stream.write(_head_bytes(answer.status, {**answer.headers, "Connection": "close"}))
            async for chunk in self._chunks(answer):
                await stream.write(chunk)
            if fault == "reset" and not answer.bodyless:
                stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            stream.close()

    async def _chunks(self, answer: "_Answer"):
        bandwidth = self.app.bandwidth
        size = _CHUNK if not bandwidth else max(1, min(_CHUNK, int(bandwidth / 20)))
        t0, sent = time.monotonic(), 0
        for data in answer.read(size):
            yield data
            sent += len(data)
            if bandwidth:
                ahead = sent / bandwidth - (time.monotonic() - t0)
                if ahead > 0:
                    await asyncio.sleep(ahead)


class _Answer:
    """Status, headers and the byte span of a body to send (a file's bytes read now when small)."""

    def __init__(self, req: Request, resp: Response, fault: str | None, ignore_range: bool):
        path: Path | None = resp.file
        if path is not None:
            st = path.stat()
            total, body = st.st_size, b""
            etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
        else:
            body = resp.body.encode("utf-8") if isinstance(resp.body, str) else bytes(resp.body)
            total = len(body)
            etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
        status, start, stop = resp.status, 0, total
        headers = {"Server": SERVER, "Content-Type": resp.content_type}
        if status == 200:
            headers["ETag"] = etag
            if resp.accept_ranges and not ignore_range:
                headers["Accept-Ranges"] = "bytes"
                rng, if_range = req.headers.get("Range"), req.headers.get("If-Range")
                if rng and (if_range is None or if_range == etag):
                    parsed = parse_range(rng, total)
                    if parsed == "unsatisfiable":
                        status, path, body, start, stop = 416, None, b"", 0, 0
                        headers["Content-Range"] = f"bytes */{total}"
                    elif parsed is not None:
                        start, stop = parsed
                        status = 206
                        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{total}"
        headers.update(resp.headers)
        headers["Content-Length"] = str(stop - start)
        limit = stop
        if fault in ("reset", "truncate"):
            limit = start + max(0, (stop - start) // 2)  # about half, at least one byte short
        self.bodyless = req.method == "HEAD" or stop <= start
        if self.bodyless:
            limit = start
        if path is not None and limit - start <= _SMALL_BODY:
            with open(path, "rb") as fh:  # small: read now, sent with the headers in one write
                fh.seek(start)
                body = fh.read(limit - start)
            path, start, limit = None, 0, len(body)
        self.status, self.headers, self.path, self.body = status, headers, path, body
        self.start, self.limit = start, limit

    def read(self, size: int):
        """The body's bytes from ``start`` to ``limit`` in pieces of ``size``."""
        if self.path is None:
            view = memoryview(self.body)
            for pos in range(self.start, self.limit, size):
                yield bytes(view[pos : min(pos + size, self.limit)])
            return
        with open(self.path, "rb") as fh:
            fh.seek(self.start)
            pos = self.start
            while pos < self.limit:
                data = fh.read(min(size, self.limit - pos))
                if not data:
                    break
                pos += len(data)
                yield data


def _multipart(ctype: str, body: bytes) -> tuple[dict, dict]:
    """Text fields and file parts of a ``multipart/form-data`` body (a part with a file name is a file).

    Split by hand on the boundary, because Python's e-mail parser mangles boundaries
    in angle brackets (STILTS sends ``"<<<---...--->>>"``).
    """
    m = re.search(r'boundary=(?:"([^"]+)"|([^;\s]+))', ctype, re.I)
    if m is None:
        raise HTTPError(400, "the multipart/form-data body has no boundary")
    delimiter = b"--" + (m.group(1) or m.group(2)).encode("latin-1")
    pieces = body.split(delimiter)
    if len(pieces) < 3:
        raise HTTPError(400, "the multipart/form-data body has no parts")
    form, files = {}, {}
    for piece in pieces[1:-1]:
        head, sep, payload = piece.partition(b"\r\n\r\n")
        if not sep:
            raise HTTPError(400, "a part of the multipart/form-data body has no headers")
        if payload.endswith(b"\r\n"):
            payload = payload[:-2]
        headers = email.parser.BytesHeaderParser(policy=email.policy.HTTP).parsebytes(head.lstrip(b"\r\n"))
        name = headers.get_param("name", header="content-disposition")
        if name is None:
            continue
        if headers.get_param("filename", header="content-disposition") is not None:
            files[name] = payload
        else:
            form.setdefault(name, []).append(payload.decode(headers.get_content_charset() or "utf-8", "replace"))
    return form, files


def _lower(headers) -> dict:
    return {k.lower(): v for k, v in headers.get_all()}


def _head_bytes(status: int, headers: dict) -> bytes:
    lines = [f"HTTP/1.1 {status} {httputil.responses.get(status, '')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def answer_and_close(stream: iostream.IOStream, status: int, message: str, headers: dict | None = None) -> None:
    """Answer ``status`` with a one-line text ``message`` on a bare stream, then close it.

    What the client still sends is read and dropped for up to a second first, so
    that closing does not reset the connection before the client reads the answer.
    """
    body = (message + "\n").encode("utf-8")
    head = {
        "Content-Type": "text/plain; charset=utf-8",
        "Content-Length": str(len(body)),
        "Connection": "close",
        **(headers or {}),
    }
    try:
        await stream.write(_head_bytes(status, head) + body)
        stream.socket.shutdown(socket.SHUT_WR)

        async def drain():
            while True:
                await stream.read_bytes(_CHUNK, partial=True)

        await asyncio.wait_for(drain(), 1.0)
    except (iostream.StreamClosedError, OSError, asyncio.TimeoutError):
        pass
    finally:
        stream.close()
