"""The HTTP policy of every request latentsky sends, in one place.

Who latentsky says it is (:data:`USER_AGENT`), which answers are worth
another try (:data:`RETRYABLE_STATUS`, an HTML page where data was
expected), how long to wait before it (:class:`RetryPolicy`: exponential
backoff with full jitter, at least what ``Retry-After`` asks,
:func:`parse_retry_after`) and how many tries a request gets
(``conf.max_retries``) are decided here, and applied in three ways:

- the archive clients' shared session
  (:func:`latentsky.archives.base.session`, which pyvo and astroquery send
  through) mounts a :class:`PolicyAdapter`: urllib3's ``Retry``, deciding by
  this policy, asks again after a retryable status or a dropped connection;
  :meth:`RetryPolicy.call` asks again when an answer arrives broken (an HTML
  page, a cut body, an unreadable table);
- :class:`~latentsky.download.manager.DownloadManager` schedules each file's
  next attempt :meth:`RetryPolicy.delay` seconds later, without holding a
  connection slot;
- :class:`~latentsky.download.pool.RequestPool` does the same for many small
  answers (cutouts).

A failure of a transfer is a :class:`~latentsky.exceptions.DownloadError`;
its ``retryable`` and ``retry_after`` carry the decision, so no caller ever
reads an error message to decide.
"""

from __future__ import annotations

import dataclasses
import email.utils
import logging
import random
import time
from collections.abc import Callable
from itertools import takewhile
from typing import TypeVar

import requests.adapters
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError, ReadTimeoutError
from urllib3.util.retry import Retry

from latentsky import __version__
from latentsky.exceptions import DownloadError

log = logging.getLogger(__name__)

__all__ = [
    "RETRYABLE_STATUS",
    "USER_AGENT",
    "PolicyAdapter",
    "RetryPolicy",
    "answer_error",
    "attempts_of",
    "check_answer",
    "looks_like_html",
    "parse_retry_after",
]

USER_AGENT = f"latentsky/{__version__} (+https://github.com/latentsky)"
"""The ``User-Agent`` of every request latentsky sends (archive queries, downloads, cutouts)."""

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
"""HTTP statuses worth another try: throttling (429), server errors (5xx but 501), and 408 and 425,
whose definitions ask the client to send the request again (RFC 9110 15.5.9, RFC 8470 5.2)."""

HTML_SNIFF = 1024
"""Bytes at the start of a body looked at for an HTML page, bytes."""

MAX_BACKOFF = 60.0
"""Longest backoff wait, s (a ``Retry-After`` may ask up to ten times this)."""

T = TypeVar("T")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), or None.

    Fractional seconds are accepted (the local archive sends them to keep tests short);
    a date in the past is 0; anything unreadable is None (the backoff decides).
    """
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How many attempts a request gets and how long to wait between them.

    Attributes
    ----------
    max_attempts : int, optional
        Attempts before a retryable failure is final (default ``conf.max_retries``,
        read when the policy is made).
    backoff : float, optional
        Base of the exponential backoff, s (default ``conf.retry_backoff``):
        after the n-th failed attempt the wait is a random time in
        ``[0, backoff * 2**(n-1)]`` (full jitter: retries of many clients
        spread apart), and at least what ``Retry-After`` asked for.
    max_backoff : float, optional
        Cap of one backoff wait, s (default :data:`MAX_BACKOFF`); a
        ``Retry-After`` is honoured up to ten times this.
    """

    max_attempts: int | None = None
    backoff: float | None = None
    max_backoff: float | None = None

    def __post_init__(self):
        from latentsky.config import conf

        if self.max_attempts is None:
            object.__setattr__(self, "max_attempts", int(conf.max_retries))
        if self.backoff is None:
            object.__setattr__(self, "backoff", float(conf.retry_backoff))
        if self.max_backoff is None:
            object.__setattr__(self, "max_backoff", MAX_BACKOFF)
        if int(self.max_attempts) < 1 or self.backoff < 0 or self.max_backoff < 0:
            raise ValueError(f"RetryPolicy: max_attempts must be >= 1 and the waits >= 0, got {self}")

    def delay(self, attempts: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (``retry_after``: what the server asked)."""
        rng = rng or random
        wait = rng.uniform(0, min(self.max_backoff, self.backoff * 2 ** max(0, attempts - 1)))
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_backoff * 10))
        return wait

    def again(self, error: DownloadError, attempts: int) -> bool:
        """True when a request that failed with ``error`` after ``attempts`` attempts is to be sent again."""
        return bool(error.retryable) and attempts < self.max_attempts

    def call(self, fn: Callable[[], T], *, what: str = "request") -> T:
        """Run ``fn()``, again after :meth:`delay` while it raises an error whose ``retryable`` is true.

        The last error is raised when it is not retryable or the attempts are spent;
        ``retry_after`` on an error (seconds) is honoured.
        """
        attempts = 0
        while True:
            attempts += 1
            try:
                return fn()
            except Exception as err:
                if not getattr(err, "retryable", False) or attempts >= self.max_attempts:
                    raise
                wait = self.delay(attempts, getattr(err, "retry_after", None))
                log.info("%s failed (%s); attempt %d of %d in %.2f s", what, err, attempts + 1, self.max_attempts, wait)
                time.sleep(wait)

    def urllib3_retry(self) -> _PolicyRetry:
        """urllib3's ``Retry`` deciding as this policy does (statuses, connection errors, waits).

        Every method is retried: the requests sent through it are archive
        queries (TAP, SkyServer SQL, SkyView's form), which change nothing on
        the server.  Timeouts are not retried (the caller already waited its
        timeout), and once the attempts are spent the last answer is returned
        (``raise_on_status=False``) for the caller to report.
        """
        return _PolicyRetry(
            total=int(self.max_attempts) - 1,
            status_forcelist=RETRYABLE_STATUS,
            allowed_methods=None,
            raise_on_status=False,
            policy=self,
        )


class _PolicyRetry(Retry):
    """urllib3's ``Retry`` with :class:`RetryPolicy`'s waits, statuses and ``Retry-After`` parsing."""

    RETRY_AFTER_STATUS_CODES = RETRYABLE_STATUS

    def __init__(self, *args, policy: RetryPolicy, **kwargs):
        super().__init__(*args, **kwargs)
        self.policy = policy

    def new(self, **kwargs) -> _PolicyRetry:
        kwargs.setdefault("policy", self.policy)
        return super().new(**kwargs)

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        # a hung service is not asked again: the caller already waited its timeout
        if isinstance(error, ReadTimeoutError):
            raise error  # requests reports it as ReadTimeout
        if isinstance(error, ConnectTimeoutError) and not isinstance(error, NewConnectionError):
            raise MaxRetryError(_pool, url, error) from error  # requests reports it as ConnectTimeout
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def _failures(self) -> int:
        return len(list(takewhile(lambda h: h.redirect_location is None, reversed(self.history))))

    def get_backoff_time(self) -> float:
        return self.policy.delay(self._failures())

    def sleep(self, response=None) -> None:
        retry_after = parse_retry_after(response.headers.get("Retry-After")) if response is not None else None
        failures = self._failures()
        wait = self.policy.delay(failures, retry_after)
        last = self.history[-1] if self.history else None
        log.info(
            "%s failed (%s); attempt %d of %d in %.2f s",
            last.url if last else "request",
            (last.status or last.error) if last else "?",
            failures + 1,
            self.policy.max_attempts,
            wait,
        )
        if wait > 0:
            time.sleep(wait)


class PolicyAdapter(requests.adapters.HTTPAdapter):
    """A requests adapter whose retries follow :class:`RetryPolicy` as configured when each request is sent.

    ``conf.max_retries`` and ``conf.retry_backoff`` are read per request, so a
    change to ``conf`` applies to a session made before it.
    """

    @property
    def max_retries(self) -> Retry:
        return RetryPolicy().urllib3_retry()

    @max_retries.setter
    def max_retries(self, value) -> None:
        pass  # HTTPAdapter.__init__ sets it; the policy is read per request instead


def attempts_of(response) -> int:
    """How many attempts a :class:`requests.Response` from a :class:`PolicyAdapter` took (1: the first)."""
    retries = getattr(getattr(response, "raw", None), "retries", None)
    return 1 + len(getattr(retries, "history", ()) or ())


def looks_like_html(head: bytes, kind: str = "fits") -> bool:
    """Whether a body starting with ``head`` is an HTML page (a login or error page), never a data product.

    For ``kind="fits"`` any markup start counts (a FITS file starts with
    ``SIMPLE``); for other kinds an XML document counts only when it is XHTML
    (a VOTable is data).
    """
    start = head.lstrip()[:HTML_SNIFF].lower()
    if start.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return True
    if start.startswith(b"<?xml"):
        return kind == "fits" or b"<html" in start or b"<!doctype html" in start
    return False


def answer_error(key: str, url: str, status: int, reason: str, headers) -> DownloadError:
    """The :class:`DownloadError` an unusable HTTP status deserves: retryable (with ``Retry-After``) or final."""
    if status in RETRYABLE_STATUS:
        return DownloadError(
            key,
            url,
            f"HTTP {status} {reason}",
            retryable=True,
            retry_after=parse_retry_after(headers.get("Retry-After")),
        )
    # the archive says no (bad request, missing product, no permission): asking again will not help
    return DownloadError(key, url, f"HTTP {status} {reason}", retryable=False)


def check_answer(
    key: str,
    url: str,
    status: int,
    reason: str,
    headers,
    head: bytes = b"",
    expect_data: bool = True,
    kind: str = "fits",
) -> None:
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
        A data product is expected: an HTML page sent with a success status
        (a login or error page) is a retryable failure.
    kind : str
        What the data are (see :func:`looks_like_html`).
    """
    if not 200 <= status < 300:
        raise answer_error(key, url, status, reason, headers)
    if expect_data:
        ctype = (headers.get("Content-Type") or "").lower()
        if ctype.startswith(("text/html", "application/xhtml")) or looks_like_html(head[:HTML_SNIFF], kind):
            raise DownloadError(
                key, url, "an HTML page arrived instead of data (expired login or archive error page?)", retryable=True
            )
