"""The HTTP retry policy of latentsky's transfers, in one place.

What is worth another try, and how long to wait before it, is decided here
for every request latentsky sends in bulk: the same statuses and the same
``Retry-After`` parsing as :mod:`latentsky.download.transfer`, and the
download manager's backoff (exponential with full jitter, at least what the
server asked for).  :class:`~latentsky.download.pool.RequestPool` applies it
to many small requests; :class:`~latentsky.download.manager.DownloadManager`
uses the same rule for files.

A failure is a :class:`~latentsky.exceptions.DownloadError`; its
``retryable`` and ``retry_after`` carry the decision, so no caller ever reads
an error message to decide.
"""

from __future__ import annotations

import dataclasses
import random

from latentsky.download.transfer import _RETRYABLE_STATUS, parse_retry_after
from latentsky.exceptions import DownloadError

RETRYABLE_STATUS = frozenset(_RETRYABLE_STATUS)
"""HTTP statuses worth another try (timeouts, throttling, server errors)."""

__all__ = ["RETRYABLE_STATUS", "RetryPolicy", "check_answer", "looks_like_html", "parse_retry_after"]


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How many attempts a request gets and how long to wait between them.

    Attributes
    ----------
    max_attempts : int
        Attempts before a retryable failure is final (``conf.max_retries`` by default).
    backoff : float
        Base of the exponential backoff, s: attempt n waits a random time in
        ``[0, backoff * 2**(n-1)]`` (full jitter), and at least what
        ``Retry-After`` asked for.
    max_backoff : float
        Cap of one backoff wait, s (a ``Retry-After`` may ask up to ten times this).
    """

    max_attempts: int = 5
    backoff: float = 0.5
    max_backoff: float = 60.0

    def __post_init__(self):
        if int(self.max_attempts) < 1 or self.backoff < 0 or self.max_backoff < 0:
            raise ValueError(f"RetryPolicy: max_attempts must be >= 1 and the waits >= 0, got {self}")

    @classmethod
    def from_conf(cls, **overrides) -> "RetryPolicy":
        """The policy with ``conf.max_retries`` attempts, unless overridden."""
        from latentsky.config import conf

        values = {"max_attempts": conf.max_retries}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def delay(self, attempts: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt."""
        rng = rng or random
        wait = rng.uniform(0, min(self.max_backoff, self.backoff * 2 ** max(0, attempts - 1)))
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_backoff * 10))
        return wait

    def again(self, error: DownloadError, attempts: int) -> bool:
        """True when a request that failed with ``error`` after ``attempts`` attempts is to be sent again."""
        return bool(error.retryable) and attempts < self.max_attempts


def looks_like_html(head: bytes) -> bool:
    """True when the first bytes of a body are an HTML (or XML) page rather than data."""
    start = head.lstrip()[:64].lower()
    return start.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body"))


def check_answer(key: str, url: str, status: int, reason: str, headers, head: bytes = b"",
                 expect_data: bool = True) -> None:
    """Raise the :class:`DownloadError` an answer deserves, or nothing when it is usable.

    Parameters
    ----------
    key, url : str
        Named in the error.
    status, reason : int, str
        The HTTP status line.
    headers : mapping
        Response headers (``Retry-After``, ``Content-Type``).
    head : bytes
        The first bytes of the body, for the HTML check.
    expect_data : bool
        A data file is expected: a ``200`` HTML page (a login or error page
        sent with a success status) is a retryable failure.
    """
    if status in RETRYABLE_STATUS:
        raise DownloadError(key, url, f"HTTP {status} {reason}", retryable=True,
                            retry_after=parse_retry_after(headers.get("Retry-After")))
    if not 200 <= status < 300:
        # the archive says no (bad request, missing product, no permission): asking again will not help
        raise DownloadError(key, url, f"HTTP {status} {reason}", retryable=False)
    if expect_data:
        ctype = (headers.get("Content-Type") or "").lower()
        if ctype.startswith(("text/html", "application/xhtml")) or looks_like_html(head[:64]):
            raise DownloadError(key, url, "an HTML page arrived instead of data (expired login or archive error "
                                          "page?)", retryable=True)
