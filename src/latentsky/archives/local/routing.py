"""Routes of the local archive's server: path patterns, the route a request matches, and the handler's answer.

A pattern is a path with ``{name}`` (one segment) or ``{name:path}`` (the
rest, slashes included) placeholders.  Routes are tried in the order they
were added; the first whose method and pattern match wins (405 when only the
method differs, 404 when nothing matches).  A handler that raises
:class:`~.messages.HTTPError` answers with its status; any other exception
becomes a 500 naming it, so a handler bug answers instead of hanging the client.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import re
from typing import Callable

from latentsky.archives.local.messages import HTTPError, Request, Response

log = logging.getLogger(__name__)


def compile_pattern(pattern: str) -> re.Pattern:
    """Route pattern -> regex: ``{name}`` matches one segment, ``{name:path}`` anything."""
    out, pos = [], 0
    for m in re.finditer(r"\{(\w+)(?::(path))?\}", pattern):
        out.append(re.escape(pattern[pos : m.start()]))
        out.append(f"(?P<{m.group(1)}>.+)" if m.group(2) else f"(?P<{m.group(1)}>[^/]+)")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("^" + "".join(out) + "$")


class Route:
    """One registered endpoint: method, path pattern, handler, and whether it runs on the event loop."""

    def __init__(self, method: str, pattern: str, handler: Callable[[Request], Response], inline: bool):
        self.method, self.pattern, self.handler, self.inline = method.upper(), pattern, handler, inline
        self.regex = compile_pattern(pattern)


async def dispatch(routes: list[Route], request: Request, pool: concurrent.futures.Executor) -> Response:
    """The answer of the first route matching ``request``: awaited when a coroutine, on the event loop
    when inline, else in ``pool``; 405 when only the method differs, 404 when no path matches."""
    method = "GET" if request.method == "HEAD" else request.method
    allowed = []
    for route in routes:
        m = route.regex.match(request.path)
        if m is None:
            continue
        if route.method != method:
            allowed.append(route.method)
            continue
        request.path_params = m.groupdict()
        if inspect.iscoroutinefunction(route.handler):
            return await _call_async(route, request)
        if route.inline:
            return _call(route, request)
        return await asyncio.get_running_loop().run_in_executor(pool, _call, route, request)
    if allowed:
        return Response.text(
            f"{request.method} not allowed on {request.path}",
            status=405,
            headers={"Allow": ", ".join(sorted(set(allowed)))},
        )
    return Response.text(f"no such path: {request.path}", status=404)


def _call(route: Route, request: Request) -> Response:
    """The handler's answer; an error status for HTTPError, a 500 naming any other exception."""
    try:
        return _checked(route, route.handler(request))
    except Exception as err:
        return _failure(err, request)


async def _call_async(route: Route, request: Request) -> Response:
    """:func:`_call` for a coroutine handler, awaited on the event loop."""
    try:
        return _checked(route, await route.handler(request))
    except Exception as err:
        return _failure(err, request)


def _checked(route: Route, response) -> Response:
    if not isinstance(response, Response):
        raise TypeError(
            f"the handler of {route.method} {route.pattern} returned {type(response).__name__}, not a Response"
        )
    return response


def _failure(err: Exception, request: Request) -> Response:
    if isinstance(err, HTTPError):
        return Response.text(err.message or str(err.status), status=err.status, headers=err.headers)
    # a handler bug must answer, not hang the client
    log.error("handler for %s %s failed", request.method, request.path, exc_info=err)
    return Response.text(f"{type(err).__name__}: {err}", status=500)
