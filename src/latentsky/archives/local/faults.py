"""Fault injection for the local archive: which request fails, and how.

:class:`FaultPlan` decides, per request, whether a fault is injected and of
which kind; it is a thin layer in front of the routes.  Faults that replace the
answer (``500``, ``503``, ``429``, ``html``) never reach a handler
(:func:`fault_response`); the others change how the real answer is delivered
(``latency``, ``reset``, ``truncate``) or labelled (``hostile_name``), which
the transport does.

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

Draws are deterministic: the decision for the n-th request of a path depends
only on the seed, the path and n, never on thread or event-loop timing.
"""

from __future__ import annotations

import fnmatch
import hashlib
import threading
from typing import Iterable

from latentsky.archives.local.messages import Response

FAULT_KINDS = ("latency", "500", "503", "429", "reset", "truncate", "html", "hostile_name")
"""Names of the faults the local archive can inject."""

REPLACING = ("500", "503", "429", "html")
"""Faults whose answer replaces the handler's."""

HOSTILE_FILENAME = "../../../evil.fits"
"""The file name sent by the ``hostile_name`` fault."""

LOGIN_PAGE = b"""<!DOCTYPE html>
<html><head><title>ESO Single Sign On</title></head>
<body><h1>Login</h1><p>Your session has expired. Please log in again.</p>
<form method="post" action="/sso/login"><input name="username"><input name="password" type="password">
</form></body></html>
"""
"""What the ``html`` fault and ``LocalServer.require_token`` send instead of data."""


def check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    """``kinds`` as a tuple; ValueError naming the unknown ones."""
    kinds = tuple(kinds)
    unknown = set(kinds) - set(FAULT_KINDS)
    if unknown:
        raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
    return kinds


def unit_float(*parts) -> float:
    """A number in [0, 1) that depends only on ``parts`` (deterministic fault draws)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


class FaultPlan:
    """Random faults at ``rate`` drawn from ``kinds`` on paths matching ``paths``, plus ``fail_first`` rules.

    Parameters
    ----------
    rate : float
        Probability in [0, 1] that a request gets a fault.
    kinds : iterable of str
        Kinds drawn from; see :data:`FAULT_KINDS`.
    seed : int
        Seed of the draws.
    paths : str
        Glob of the paths that rate-drawn faults may hit.
    """

    def __init__(self, rate: float = 0.0, kinds: Iterable[str] = FAULT_KINDS, seed: int = 0, paths: str = "*"):
        self.seed, self.paths = int(seed), paths
        self.set_rate(rate, kinds)
        self._counts: dict[str, int] = {}
        self._fail_first: list[tuple[str, int, str, dict]] = []
        self._lock = threading.Lock()

    def set_rate(self, rate: float, kinds: Iterable[str] = FAULT_KINDS) -> None:
        """Change the random fault rate and the kinds drawn from."""
        kinds = check_kinds(kinds)
        if not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"fault_rate must be in [0, 1], got {rate!r}")
        if rate and not kinds:
            raise ValueError("fault_rate > 0 needs at least one fault kind")
        self.rate, self.kinds = float(rate), kinds

    def fail_first(self, pattern: str, k: int, kind: str) -> None:
        """The next ``k`` requests of every path matching glob ``pattern`` fail with ``kind``."""
        check_kinds([kind])
        with self._lock:
            self._fail_first.append((pattern, int(k), kind, {}))

    def clear(self) -> None:
        """Forget the per-path counters and the ``fail_first`` rules."""
        with self._lock:
            self._counts.clear()
            self._fail_first.clear()

    def choose(self, path: str) -> str | None:
        """The fault for this request of ``path`` (counted), or None."""
        with self._lock:
            n = self._counts.get(path, 0)
            self._counts[path] = n + 1
            for pattern, k, kind, counts in self._fail_first:
                if counts.get(path, 0) < k and fnmatch.fnmatchcase(path, pattern):
                    counts[path] = counts.get(path, 0) + 1
                    return kind
        if self.rate and fnmatch.fnmatchcase(path, self.paths):
            if unit_float(self.seed, path, n, "rate") < self.rate:
                return self.kinds[int(unit_float(self.seed, path, n, "kind") * len(self.kinds))]
        return None


def fault_response(kind: str, retry_after: float) -> Response:
    """The answer of a replacing fault (one of :data:`REPLACING`)."""
    if kind == "html":
        return login_page()
    extra = {} if kind == "500" else {"Retry-After": f"{retry_after:g}"}
    return Response.text(f"injected fault {kind}", status=int(kind), headers=extra)


def login_page() -> Response:
    """The HTML login page an archive sends when a session expired (status 200, as ESO does)."""
    return Response(LOGIN_PAGE, 200, "text/html; charset=utf-8")


def label_hostile(response: Response) -> Response:
    """The ``hostile_name`` fault: the right data under a file name climbing out of the folder."""
    response.headers["Content-Disposition"] = f'attachment; filename="{HOSTILE_FILENAME}"'
    return response
