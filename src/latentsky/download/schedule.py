"""Which transfer a download worker runs next: per-host ready queues, delayed retries, connection slots."""

from __future__ import annotations

import collections
import heapq
import itertools
import threading
import time

from latentsky.download.items import DownloadItem


class Job:
    __slots__ = ("item", "attempts", "unrecorded", "etag", "last_error", "no_part")

    def __init__(self, item: DownloadItem, etag: str | None, no_part: bool = False):
        self.item, self.attempts, self.etag, self.last_error = item, 0, etag, ""
        # known to have no .part file (seen at triage; no attempt since): no need to look
        self.no_part = no_part
        # attempts not yet written to the manifest: they ride along with the next write,
        # which saves one SQLite write per request while a connection slot is held
        self.unrecorded = 0

    def take_unrecorded(self) -> int:
        n, self.unrecorded = self.unrecorded, 0
        return n


class Scheduler:
    """Ready queues per host, a heap of delayed retries, connection slots in all and per host.

    A worker holds a slot only while it talks to the server: it gives it back
    (:meth:`release_slot`) as soon as the body has arrived, and verifies the
    file while another worker uses the connection.
    """

    def __init__(self, jobs: list[Job], total: int, per_host: int):
        self.total, self.per_host = total, per_host
        self.ready: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        for job in jobs:
            self.ready[job.item.host].append(job)
        self.delayed: list = []  # (due time, seq, job)
        self.active: collections.Counter = collections.Counter()
        self.active_total = 0
        self.outstanding = len(jobs)
        self.stopped = False
        self._seq = itertools.count()
        self._rr = 0
        self.cond = threading.Condition()

    def get(self) -> Job | None:
        """The next job a worker may start, with a slot held; waits as needed; None when all is over."""
        with self.cond:
            while True:
                if self.stopped or self.outstanding == 0:
                    return None
                now = time.monotonic()
                while self.delayed and self.delayed[0][0] <= now:
                    _, _, job = heapq.heappop(self.delayed)
                    # retries first: left at the back, they would all meet their next fault
                    # (and its Retry-After wait) at the very end of the run, with the slots idle
                    self.ready[job.item.host].appendleft(job)
                job = self._take()
                if job is not None:
                    if self._startable():
                        self.cond.notify()  # more can start (several retries came due at once)
                    return job
                wait = self.delayed[0][0] - now if self.delayed else None
                self.cond.wait(timeout=wait)

    def _startable(self) -> bool:
        if self.active_total >= self.total:
            return False
        return any(q and self.active[h] < self.per_host for h, q in self.ready.items())

    def _take(self) -> Job | None:
        if self.active_total >= self.total:
            return None
        hosts = [h for h, q in self.ready.items() if q and self.active[h] < self.per_host]
        if not hosts:
            return None
        # round robin over hosts, so one big archive cannot starve the others
        host = hosts[self._rr % len(hosts)]
        self._rr += 1
        self.active[host] += 1
        self.active_total += 1
        return self.ready[host].popleft()

    def release_slot(self, host: str) -> None:
        """Give back the connection slot taken by :meth:`get`."""
        with self.cond:
            self.active[host] -= 1
            self.active_total -= 1
            # one waiting worker is enough for one slot (waking them all costs CPU that the
            # transfers in flight are waiting for); it wakes the next if more can start
            self.cond.notify()

    def done(self, job: Job, *, finished: bool, delay: float = 0.0) -> None:
        """Finished with ``job``, or retry it after ``delay`` s."""
        with self.cond:
            if finished:
                self.outstanding -= 1
                if self.outstanding == 0:
                    self.cond.notify_all()  # the end: every worker leaves
            elif delay > 0:
                heapq.heappush(self.delayed, (time.monotonic() + delay, next(self._seq), job))
                self.cond.notify()  # a waiter sets its timer by the earliest due retry
            else:
                self.ready[job.item.host].appendleft(job)
                self.cond.notify()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
