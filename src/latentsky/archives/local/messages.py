"""What the local archive's handlers receive and return: :class:`Request`, :class:`Response`, :class:`HTTPError`.

A handler is ``handler(request: Request) -> Response`` (the archive's handlers
take the archive first: ``handler(archive, request)``).  These classes know
nothing of the HTTP server under them (:mod:`.transport`); the server turns a
:class:`Response` into bytes on the wire, with ``Content-Length``, ``ETag`` and
byte ranges.
"""

from __future__ import annotations

import dataclasses
import json
import mimetypes
import re
from pathlib import Path


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
    headers : mapping
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
    server: object = None

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
    def text(cls, text: str, status: int = 200, content_type: str = "text/plain; charset=utf-8", **kw) -> "Response":
        """A text answer."""
        return cls(text.encode("utf-8"), status, content_type, **kw)

    @classmethod
    def json(cls, obj, status: int = 200, **kw) -> "Response":
        """A JSON answer."""
        return cls(json.dumps(obj).encode("utf-8"), status, "application/json", **kw)

    @classmethod
    def from_file(
        cls, path: str | Path, content_type: str | None = None, filename: str | None = None, **kw
    ) -> "Response":
        """Serve a file; ``filename`` adds a ``Content-Disposition`` header."""
        path = Path(path)
        if content_type is None:
            content_type = guess_type(path)
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


def guess_type(path: Path) -> str:
    """The ``Content-Type`` of a file, FITS included."""
    name = path.name.lower()
    if name.endswith((".fits", ".fit", ".fts", ".fits.gz", ".fits.fz")):
        return "application/fits"
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*")
_MAX_DIGITS = 18
"""Byte positions longer than this are beyond any file (and cost nothing to compare)."""


def parse_range(header: str, total: int) -> tuple[int, int] | None | str:
    """``bytes=a-b`` -> (start, stop) with stop exclusive.

    None when the header is not a single byte range (the whole body is sent, as
    RFC 9110 lets a server ignore a Range it does not understand);
    ``"unsatisfiable"`` for a range starting at or past the end (416).  Positions
    of any length are accepted: one with more than 18 digits lies past every file.
    """
    m = _RANGE.fullmatch(header)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None

    def number(digits: str) -> int:
        digits = digits.lstrip("0") or "0"
        return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS

    if m.group(1) == "":  # suffix range: the last n bytes
        n = number(m.group(2))
        if n == 0:
            return "unsatisfiable"
        return max(0, total - n), total
    start = number(m.group(1))
    stop = total if m.group(2) == "" else min(total, number(m.group(2)) + 1)
    if start >= total or stop <= start:
        return "unsatisfiable"
    return start, stop
