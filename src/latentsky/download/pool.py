"""Many small GET requests, streamed: bounded concurrency, per-host limits, retries by the download policy.

:class:`RequestPool` is the download manager's way of working for answers
that are kept in memory instead of written as files (image cutouts, small
catalogue pages): at most ``max_connections`` requests in flight, at most
``max_connections_per_host`` to one host, every failure judged by
:mod:`latentsky.download.policy` (statuses, ``Retry-After``, HTML pages,
backoff with full jitter), credentials sent only where
:mod:`latentsky.download.credentials` allows.

Requests are pulled lazily from an iterable and at most ``window`` of them
are unresolved at any time (in flight, waiting for a retry, or answered but
not yet taken by the caller), so memory stays bounded for any number of
requests and no request waits for another: there is no barrier between
batches.  A request waiting for its retry holds no connection.

Examples
--------
>>> pool = RequestPool(max_connections=8)                               # doctest: +SKIP
>>> for outcome in pool.imap(requests, parse=lambda body, headers: body):  # doctest: +SKIP
...     print(outcome.request.key, outcome.ok)
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import itertools
import os
import random
import threading
import time
from typing import Callable, Hashable, Iterable, Iterator
from urllib.parse import urlsplit
from urllib.request import getproxies_environment, proxy_bypass_environment

import urllib3

from latentsky.download import credentials
from latentsky.download.policy import HTML_SNIFF, USER_AGENT, RetryPolicy, check_answer
from latentsky.download.transfer import _describe
from latentsky.exceptions import CredentialError, DownloadError

WORKERS_PER_CONNECTION = 2
"""Worker threads per connection slot: a worker parsing an answer holds no slot."""


@dataclasses.dataclass
class Request:
    """One GET request of a :class:`RequestPool`.

    Attributes
    ----------
    key : hashable
        The caller's name for it (e.g. a ``(row, band)`` cell).
    url : str
        The full URL, query string included.
    auth : str or None
        Name of a credential to send (see :mod:`latentsky.download.credentials`).
    attempts : int
        Attempts already made (in earlier runs); they count against the policy's budget.
    """

    key: Hashable
    url: str
    auth: str | None = None
    attempts: int = 0

    @property
    def host(self) -> str:
        """``host:port`` of the URL (the unit of the per-host limit)."""
        return urlsplit(self.url).netloc


@dataclasses.dataclass
class Outcome:
    """The end of one request: a parsed answer or a final failure.

    Attributes
    ----------
    request : Request
        The request (``request.attempts`` counts every attempt, earlier runs' included).
    value : object
        What ``parse`` returned (None on failure).
    error : DownloadError or None
        The last failure when no attempt succeeded.
    """

    request: Request
    value: object = None
    error: DownloadError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclasses.dataclass
class PoolStats:
    """Counters of a :class:`RequestPool` (all its runs): ``requests`` sent, ``retries``, ``bytes`` received."""

    requests: int = 0
    retries: int = 0
    bytes: int = 0


class _Flow:
    """The shared state of one :meth:`RequestPool.imap`: admission, per-host slots, delayed retries, results."""

    def __init__(self, source: Iterator[Request], total: int, per_host: int, window: int):
        self.source, self.total, self.per_host, self.window = source, total, per_host, window
        self.lock = threading.Lock()
        self.work = threading.Condition(self.lock)  # workers wait here for something to send
        self.done = threading.Condition(self.lock)  # the caller waits here for outcomes
        self.ready: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self.delayed: list = []  # (due, seq, request)
        self.active: collections.Counter = collections.Counter()
        self.active_total = 0
        self.unresolved = 0  # admitted and not yet handed to the caller
        self.results: collections.deque = collections.deque()
        self.exhausted = self.stopped = False
        self.failure: BaseException | None = None
        self._seq = itertools.count()

    def finished(self) -> bool:
        return self.stopped or (self.exhausted and self.unresolved == 0)

    def take(self) -> Request | None:
        """The next request a worker may send (its slot held), waiting as needed; None at the end."""
        with self.lock:
            while True:
                if self.finished():
                    return None
                now = time.monotonic()
                while self.delayed and self.delayed[0][0] <= now:
                    request = heapq.heappop(self.delayed)[2]
                    self.ready[request.host].appendleft(request)  # retries first: no tail of faults at the end
                request = self._startable()
                if request is not None:
                    return request
                if not self.exhausted and self.unresolved < self.window:
                    self._admit()
                    continue
                self.work.wait(self.delayed[0][0] - now if self.delayed else None)

    def _startable(self) -> Request | None:
        if self.active_total >= self.total:
            return None
        for host, queue in self.ready.items():
            if queue and self.active[host] < self.per_host:
                self.active[host] += 1
                self.active_total += 1
                return queue.popleft()
        return None

    def _admit(self) -> None:
        try:
            request = next(self.source)
        except StopIteration:
            self.exhausted = True
            self.done.notify_all()
            self.work.notify_all()
            return
        except BaseException as err:  # the caller's generator failed: end the run with its error
            self.failure, self.stopped = err, True
            self.done.notify_all()
            self.work.notify_all()
            return
        self.unresolved += 1
        self.ready[request.host].append(request)

    def free(self, request: Request) -> None:
        """Give back ``request``'s connection slot (its answer has arrived, or it failed)."""
        with self.lock:
            self.active[request.host] -= 1
            self.active_total -= 1
            self.work.notify()

    def settle(self, request: Request, outcome: Outcome | None, delay: float = 0.0) -> None:
        """``request``'s outcome is final, or it is sent again after ``delay`` s."""
        with self.lock:
            if outcome is not None:
                self.results.append(outcome)
                self.done.notify()
            else:
                heapq.heappush(self.delayed, (time.monotonic() + delay, next(self._seq), request))
                self.work.notify()

    def outcomes(self) -> list[Outcome]:
        """The outcomes ready now (waiting for some); empty at the end."""
        with self.lock:
            while not self.results and not self.finished():
                self.done.wait(0.5)
            batch = list(self.results)
            self.results.clear()
            self.unresolved -= len(batch)
            if batch:
                self.work.notify_all()  # room in the window: admit more
            return batch

    def stop(self, failure: BaseException | None = None) -> None:
        with self.lock:
            self.stopped = True
            self.failure = self.failure or failure
            self.work.notify_all()
            self.done.notify_all()


class RequestPool:
    """Send many GET requests with bounded concurrency and the download policy; stream their outcomes.

    Parameters
    ----------
    max_connections : int, optional
        Requests in flight in all (default ``conf.max_connections``).
    max_connections_per_host : int, optional
        Requests in flight to one host (default ``conf.max_connections_per_host``).
    policy : RetryPolicy, optional
        Attempts and backoff (default ``RetryPolicy()``: ``conf.max_retries``, ``conf.retry_backoff``).
    timeout : float, optional
        Seconds to wait to connect and between bytes (default ``conf.timeout``).
    window : int, optional
        Most requests unresolved at once (default ``8 * max_connections``):
        bounds memory, and how far ahead of the slowest request the others run.
    seed : int, optional
        Seed of the backoff jitter (tests).
    """

    def __init__(
        self,
        *,
        max_connections: int | None = None,
        max_connections_per_host: int | None = None,
        policy: RetryPolicy | None = None,
        timeout: float | None = None,
        window: int | None = None,
        seed: int | None = None,
    ):
        from latentsky.config import conf

        self.max_connections = int(conf.max_connections if max_connections is None else max_connections)
        self.per_host = int(
            conf.max_connections_per_host if max_connections_per_host is None else max_connections_per_host
        )
        if self.max_connections < 1 or self.per_host < 1:
            raise ValueError(
                f"max_connections and max_connections_per_host must be >= 1, got "
                f"{self.max_connections}, {self.per_host}"
            )
        self.policy = policy or RetryPolicy()
        self.timeout = float(conf.timeout if timeout is None else timeout)
        self.window = int(window or 8 * self.max_connections)
        self.stats = PoolStats()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._timeout = urllib3.Timeout(connect=self.timeout, read=self.timeout)
        self._managers: dict = {}
        self._direct: urllib3.PoolManager | None = None
        self._flow: _Flow | None = None

    def stop(self) -> None:
        """End a running :meth:`imap` early: requests in flight finish, nothing new is sent."""
        if self._flow is not None:
            self._flow.stop()

    def imap(self, requests_: Iterable[Request], parse: Callable[[bytes, object], object]) -> Iterator[Outcome]:
        """Send every request; yield one :class:`Outcome` per request, in completion order.

        Parameters
        ----------
        requests_ : iterable of Request
            Pulled lazily, as room frees in the window.
        parse : callable
            ``parse(body, headers)`` turns an answer into the outcome's value;
            it runs in a worker thread.  A :class:`ValueError` (or a
            :class:`DownloadError` with ``retryable=True``) says the answer
            is damaged: the request is sent again, as the policy allows.
        """
        for batch in self.batches(requests_, parse):
            yield from batch

    def batches(self, requests_: Iterable[Request], parse: Callable[[bytes, object], object]) -> Iterator[list]:
        """As :meth:`imap`, but yield the outcomes in lists: all those that arrived since the last list.

        A caller that records its progress once per list pays per list, not per
        request, and never holds an outcome longer than one list's handling.
        """
        flow = _Flow(iter(requests_), self.max_connections, self.per_host, self.window)
        self._flow = flow
        # more workers than slots: some parse answers while the others keep every connection busy
        workers = WORKERS_PER_CONNECTION * self.max_connections
        threads = [
            threading.Thread(target=self._worker, args=(flow, parse), daemon=True, name=f"latentsky-pool-{i}")
            for i in range(workers)
        ]
        for t in threads:
            t.start()
        try:
            while batch := flow.outcomes():
                yield batch
        finally:
            flow.stop()
            for t in threads:
                t.join(self.timeout + 5)
            self._flow = None
            for manager in set(self._managers.values()):
                manager.clear()
            self._managers.clear()
            self._direct = None
        if flow.failure is not None:
            raise flow.failure

    # ------------------------------------------------------------ internals
    def _worker(self, flow: _Flow, parse) -> None:
        try:
            while (request := flow.take()) is not None:
                held = [True]

                def free(request=request, held=held):
                    if held[0]:
                        held[0] = False
                        flow.free(request)

                try:
                    outcome = self._attempt(request, parse, free)
                except DownloadError as err:
                    free()
                    if self.policy.again(err, request.attempts):
                        with self._lock:
                            delay = self.policy.delay(request.attempts, err.retry_after, self._rng)
                        flow.settle(request, None, delay)
                        continue
                    outcome = Outcome(request, error=err)
                finally:
                    free()
                flow.settle(request, outcome)
        except BaseException as err:  # never die silently: the caller would wait forever
            flow.stop(err)

    def _attempt(self, request: Request, parse, free: Callable[[], None]) -> Outcome:
        """One attempt; ``free()`` gives the connection slot back as soon as the answer is in."""
        request.attempts += 1
        with self._lock:
            self.stats.requests += 1
            self.stats.retries += request.attempts > 1
        url, key = request.url, str(request.key)
        headers = {"User-Agent": USER_AGENT}
        try:
            headers.update(credentials.auth_headers(request.auth, url) if request.auth else {})
        except CredentialError as err:
            raise DownloadError(key, url, str(err), retryable=False) from None
        try:
            # urllib3, the transport under requests, without requests' per-call work (a third of the CPU of a
            # small answer); it checks Content-Length, so a cut body raises here
            resp = self._http_for(url).request(
                "GET", url, headers=headers, timeout=self._timeout, retries=False, redirect=True
            )
            body = resp.data
        except urllib3.exceptions.HTTPError as err:
            raise DownloadError(key, url, f"request failed ({_describe(err)})") from None
        free()  # the connection serves the next request while this answer is checked and parsed
        with self._lock:
            self.stats.bytes += len(body)
        check_answer(key, url, resp.status, resp.reason or "", resp.headers, body[:HTML_SNIFF])
        try:
            return Outcome(request, parse(body, resp.headers))
        except (ValueError, OSError) as err:  # a damaged answer: worth asking again
            raise DownloadError(key, url, f"unusable answer ({err})") from None

    def _http_for(self, url: str) -> urllib3.PoolManager:
        """The connection pool for ``url``: direct, or through the proxy the environment names (NO_PROXY honoured)."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        manager = self._managers.get(key)
        if manager is None:
            with self._lock:
                manager = self._managers.get(key)
                if manager is None:
                    ca = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                    options = {"maxsize": self.per_host, "block": False, **({"ca_certs": ca} if ca else {})}
                    proxy = getproxies_environment().get(parts.scheme)
                    if proxy and not proxy_bypass_environment(parts.hostname or ""):
                        manager = urllib3.ProxyManager(proxy, **options)
                    else:
                        manager = self._direct or urllib3.PoolManager(**options)
                        self._direct = manager
                    self._managers[key] = manager
        return manager
