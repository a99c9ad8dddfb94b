"""The download manager: many files, bounded concurrency, retries, a manifest.

:class:`DownloadManager` fetches :class:`~latentsky.download.items.DownloadItem`
lists with a pool of threads (each with its own ``requests.Session``, so
connections are kept alive), at most ``max_connections`` transfers in all and
``max_connections_per_host`` to any one host.  A failed attempt is retried up
to ``max_retries`` times, after an exponential backoff with full jitter, or
after the ``Retry-After`` delay a 429/503 answer asks for, whichever is
longer; a waiting item does not hold a connection slot, other files proceed.

Every state change goes to the SQLite :class:`~latentsky.download.manifest.Manifest`,
so running the same download again after a crash or ``kill -9`` skips the
verified files, resumes the partial ones with HTTP Range and retries the rest.

Examples
--------
>>> from latentsky.download import DownloadManager            # doctest: +SKIP
>>> manager = DownloadManager("data/harps")                   # doctest: +SKIP
>>> results = manager.run(items)                              # doctest: +SKIP
>>> results.errors                                            # doctest: +SKIP
[]
>>> manager.run(results.errors)   # retry only what failed    # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import urlsplit

import requests
import requests.adapters
import requests.utils

from latentsky.config import conf
from latentsky.download import credentials
from latentsky.download.items import DownloadItem, check_unique
from latentsky.download.manifest import Manifest, ManifestWriteError
from latentsky.download.policy import USER_AGENT, RetryPolicy
from latentsky.download.results import DownloadFailure, Results
from latentsky.download.schedule import Job, Scheduler
from latentsky.download.transfer import StorageError, fetch, fsync_folder
from latentsky.download.verify import verify
from latentsky.exceptions import CredentialError, DownloadError, LatentskyError
from latentsky.progress import Progress, ProgressCallback

log = logging.getLogger(__name__)

STOP_WAIT = 5.0
"""Seconds an interrupted run waits for its transfers in flight before it returns, s."""

_HALTING = (StorageError, ManifestWriteError)
"""Errors that stop the whole run: the destination or its manifest cannot be written (disk full)."""

VERIFYING_THREADS = 2
"""Files verified at once by one manager (the other workers wait for a turn)."""


class DownloadManager:
    """Fetch many files reliably, recording everything in a manifest.

    Parameters
    ----------
    manifest : Manifest, path-like or None
        The manifest, its file, or a folder holding it (see
        :meth:`Manifest.for_folder`).  None keeps one in
        ``conf.cache_dir / "downloads"``.
    max_connections : int, optional
        Concurrent transfers in all (default ``conf.max_connections``).
    max_connections_per_host : int, optional
        Concurrent transfers per host (default ``conf.max_connections_per_host``).
    max_retries : int, optional
        Attempts per item and run before it is reported as failed (default
        ``conf.max_retries``).
    timeout : float, optional
        Seconds to wait to connect and between bytes (default ``conf.timeout``).
    backoff : float, optional
        Base of the exponential backoff, s: attempt n waits a random time in
        ``[0, backoff * 2**(n-1)]`` (full jitter), at least ``Retry-After``
        (default ``conf.retry_backoff``; see :class:`~latentsky.download.policy.RetryPolicy`).
    max_backoff : float, optional
        Cap of one backoff wait, s (default :data:`~latentsky.download.policy.MAX_BACKOFF`).
    progress : callable, optional
        Receives :class:`~latentsky.progress.ProgressEvent` objects: task
        ``"download"``, unit ``"files"`` (e.g. a
        :class:`~latentsky.progress.TqdmProgress` or the app's widget).
    fsync : bool
        Flush each file to disk before renaming it into place, and each
        destination folder once the run is over.
    seed : int, optional
        Seed of the backoff jitter (tests).
    """

    def __init__(
        self,
        manifest: Manifest | str | Path | None = None,
        *,
        max_connections: int | None = None,
        max_connections_per_host: int | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
        backoff: float | None = None,
        max_backoff: float | None = None,
        progress: ProgressCallback | None = None,
        fsync: bool = True,
        seed: int | None = None,
    ):
        if manifest is None:
            manifest = Path(conf.cache_dir) / "downloads"
        self.manifest = manifest if isinstance(manifest, Manifest) else Manifest(manifest)
        pick = lambda value, default: default if value is None else value  # noqa: E731 - 0 is not None
        self.max_connections = int(pick(max_connections, conf.max_connections))
        self.max_connections_per_host = int(pick(max_connections_per_host, conf.max_connections_per_host))
        self.max_retries = int(pick(max_retries, conf.max_retries))
        self.timeout = float(pick(timeout, conf.timeout))
        if self.max_connections < 1 or self.max_connections_per_host < 1 or self.max_retries < 1:
            raise ValueError(
                "max_connections, max_connections_per_host and max_retries must be >= 1, got "
                f"{self.max_connections}, {self.max_connections_per_host}, {self.max_retries}"
            )
        self._policy = RetryPolicy(max_attempts=self.max_retries, backoff=backoff, max_backoff=max_backoff)
        self.backoff, self.max_backoff = self._policy.backoff, self._policy.max_backoff
        self.progress, self.fsync = progress, fsync
        self._rng = random.Random(seed)
        self._local = threading.local()
        self._proxy_cache: dict = {}
        self._sched: Scheduler | None = None
        self._adapter: requests.adapters.HTTPAdapter | None = None
        # Verifying (astropy parsing headers) is CPU work under the interpreter lock: two
        # threads at a time keep up with the network, and leave the lock free more often for
        # the threads whose answers are arriving (each waits for it before reading on).
        self._verify_gate = threading.BoundedSemaphore(VERIFYING_THREADS)
        self._stop = threading.Event()

    def __repr__(self) -> str:
        return (
            f"DownloadManager({self.manifest!r}, max_connections={self.max_connections}, "
            f"max_connections_per_host={self.max_connections_per_host}, max_retries={self.max_retries})"
        )

    # ------------------------------------------------------------------ API
    def stop(self) -> None:
        """Ask a running :meth:`run` (in another thread) to end early.

        Transfers in flight finish (or keep their ``.part`` file for the next
        run); nothing new starts; ``run`` returns results with ``stopped=True``.
        """
        self._stop.set()
        sched = self._sched
        if sched is not None:
            sched.stop()

    def enqueue(self, items: Iterable[DownloadItem]) -> int:
        """Record items in the manifest (harmless when already there); returns how many are new."""
        return self.manifest.enqueue(items)

    def run(
        self, items: Iterable[DownloadItem | DownloadFailure] | None = None, *, verify_existing: bool = False
    ) -> Results:
        """Fetch ``items`` (enqueueing them), or every unfinished item of the manifest.

        Parameters
        ----------
        items : iterable of DownloadItem or DownloadFailure, optional
            What to fetch; failures of an earlier run are accepted, so
            ``run(results.errors)`` retries them alone.  None: every item of
            the manifest not yet done.
        verify_existing : bool
            Re-check (size, checksum, FITS open) files the manifest says are
            done, instead of only checking they exist with the recorded size.

        Notes
        -----
        A file already under its final name that the manifest does not know
        as done (a run killed between the rename and the manifest update) is
        verified and, when it passes, kept without being fetched again.

        Returns
        -------
        Results

        A run that cannot write the destination or the manifest (disk
        full) stops and says so in :attr:`Results.halted`; nothing is lost
        and the next run goes on.

        Raises
        ------
        StoreError
            When another run is using the same manifest.
        """
        t0 = time.monotonic()
        self._stop.clear()
        if items is not None:
            todo = [x.item if isinstance(x, DownloadFailure) else x for x in items]
            check_unique(todo)
            todo = list({item.key: item for item in todo}.values())  # the same item twice: once
        with self.manifest.exclusive():
            try:
                if items is None:
                    todo = self.manifest.items()
                else:
                    self.manifest.enqueue(todo)
                return self._run(todo, verify_existing, t0)
            except ManifestWriteError as err:  # before any transfer (triage): nothing to report but this
                log.warning("download stopped: %s", err)
                return Results(stopped=True, halted=str(err), elapsed=time.monotonic() - t0)

    def _run(self, todo: list[DownloadItem], verify_existing: bool, t0: float) -> Results:
        results = Results()
        jobs = self._triage(todo, results, verify_existing)
        progress = Progress("download", total=len(todo), unit="files", callback=self.progress)
        progress.done = len(results.skipped)
        with progress:
            if jobs:
                self._run_jobs(jobs, results, progress)
        results.elapsed = time.monotonic() - t0
        log.info("download: %s", results.summary())
        return results

    # ------------------------------------------------------------ internals
    def _triage(self, todo: list[DownloadItem], results: Results, verify_existing: bool) -> list[Job]:
        """Skip what is already in place; jobs for the rest."""
        rows = {r["key"]: r for r in self.manifest.rows()}
        is_file = _file_test([item.dest for item in todo])  # also answers for the .part files beside them
        jobs, lost = [], []
        for item in todo:
            row = rows.get(item.key, {})
            in_place = is_file(item.dest)
            if row.get("state") == "done" and in_place:
                if not verify_existing and item.dest.stat().st_size == row.get("bytes"):
                    results.skipped.append(item.dest)
                    continue
                try:
                    verify(item, item.dest, deep=True)
                    results.skipped.append(item.dest)
                    continue
                except DownloadError as err:
                    log.warning("%s: file in place no longer verifies (%s); fetching it again", item.key, err.problem)
            elif in_place:
                # in place but not recorded: a run killed between rename and manifest update
                try:
                    digest = verify(item, item.dest)
                except DownloadError:
                    pass
                else:
                    self.manifest.mark_done(item.key, digest, item.dest.stat().st_size)
                    results.skipped.append(item.dest)
                    continue
            if row.get("state") == "done":
                lost.append(item.key)
            jobs.append(Job(item, row.get("etag"), no_part=not is_file(item.part)))
        if lost:
            self.manifest.mark_pending(lost)
        return jobs

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # One adapter (urllib3's thread-safe pool manager) for every worker: a connection
            # kept alive by one worker serves the next file of any other, and no more
            # connections per host are opened than transfers may run at once.
            adapter = self._adapter
            if adapter is None:
                raise RuntimeError("DownloadManager._session outside a run")
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers["User-Agent"] = USER_AGENT
            # requests re-reads the proxy variables for every request (~0.3 ms of CPU each, a
            # tenth of a file's budget here): read them once per host instead (see _proxies)
            session.trust_env = False
            session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
            self._local.session = session
        return session

    def _proxies(self, item: DownloadItem) -> dict:
        """Proxies for ``item``'s host from the environment (honours NO_PROXY), cached per host."""
        key = (urlsplit(item.url).scheme, item.host)
        proxies = self._proxy_cache.get(key)
        if proxies is None:
            proxies = requests.utils.get_environ_proxies(item.url)
            self._proxy_cache[key] = proxies
        return proxies

    def _run_jobs(self, jobs: list[Job], results: Results, progress: Progress) -> None:
        sched = Scheduler(jobs, self.max_connections, self.max_connections_per_host)
        self._sched = sched
        if self._stop.is_set():  # stop() came before the scheduler existed
            sched.stop()
        lock = threading.Lock()
        n_workers = min(_workers(self.max_connections), len(jobs))
        # retries are ours (with the manifest and backoff); urllib3 must not add its own
        self._adapter = requests.adapters.HTTPAdapter(
            pool_connections=max(10, len({job.item.host for job in jobs})),
            pool_maxsize=min(self.max_connections, self.max_connections_per_host),
            max_retries=0,
        )
        errors: list[BaseException] = []

        def worker():
            try:
                while (job := sched.get()) is not None:
                    slot = [True]

                    def release(slot=slot, host=job.item.host):
                        if slot[0]:
                            slot[0] = False
                            sched.release_slot(host)

                    try:
                        finished, delay = self._attempt(job, results, lock, release)
                    except _HALTING as err:  # disk full: every other file would fail the same way
                        self._halt(results, lock, err)
                        break
                    finally:
                        release()
                    if finished:
                        with lock:
                            progress.advance(1, f"failed: {job.item.key}" if job.last_error else job.item.key)
                    sched.done(job, finished=finished, delay=delay)
            except BaseException as err:  # never die silently: the run would hang
                errors.append(err)
                sched.stop()
            finally:
                # the adapter is shared: closed once, after the last worker
                self._local.session = None

        threads = [
            threading.Thread(target=worker, name=f"latentsky-download-{i}", daemon=True) for i in range(n_workers)
        ]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(timeout=0.5)  # short joins keep Ctrl-C responsive
        except BaseException:  # Ctrl-C: transfers in flight keep their .part files for the next run
            sched.stop()
            deadline = time.monotonic() + min(self.timeout, STOP_WAIT)
            for t in threads:
                t.join(timeout=max(0.0, deadline - time.monotonic()))
            raise
        finally:
            self._sched = None
            adapter, self._adapter = self._adapter, None
            adapter.close()
            if self.fsync:  # the renames of this run, made durable
                for folder in {path.parent for path in results.done}:
                    fsync_folder(folder)
        results.stopped = self._stop.is_set() or bool(results.halted)
        if errors:
            raise errors[0]

    def _halt(self, results: Results, lock: threading.Lock, err: Exception) -> None:
        """Stop the run because the destination or the manifest cannot be written."""
        with lock:
            first = not results.halted
            if first:
                results.halted = str(err.problem if isinstance(err, StorageError) else err)
        if first:
            log.warning("download stopped: %s", results.halted)
        sched = self._sched
        if sched is not None:
            sched.stop()

    def _attempt(
        self, job: Job, results: Results, lock: threading.Lock, release: Callable[[], None]
    ) -> tuple[bool, float]:
        """One attempt at ``job``; returns (finished, delay before the next attempt in s)."""
        job.attempts += 1
        job.unrecorded += 1
        # counted after the transfer, not before it: the connection slot is held until then
        try:
            return self._transfer(job, results, lock, release)
        finally:
            with lock:
                results.requests += 1
                if job.attempts > 1:
                    results.retries += 1

    def _transfer(
        self, job: Job, results: Results, lock: threading.Lock, release: Callable[[], None]
    ) -> tuple[bool, float]:
        item = job.item
        part_size = 0 if job.no_part else None
        job.no_part = False  # this attempt may leave one
        try:
            # looked up at every attempt: a token renewed during a long run is used at once
            headers = credentials.auth_headers(item.auth, item.url)
            res = fetch(
                item,
                self._session(),
                timeout=self.timeout,
                headers=headers,
                etag=job.etag,
                part_size=part_size,
                proxies=self._proxies(item),
                on_etag=lambda etag: self._remember_etag(job, etag),
                on_received=release,
                fsync=self.fsync,
                sync_folder=False,  # folders: flushed once, after the run
                verify_gate=self._verify_gate,
            )
        except _HALTING:
            release()
            raise
        except CredentialError as err:
            release()
            return self._give_up(job, results, lock, str(err))
        except DownloadError as err:
            release()  # the answer is in: another file may use the connection while this one waits
            message = credentials.redact(str(err), _auth_names(item))
            job.last_error = message
            if not self._policy.again(err, job.attempts):
                return self._give_up(job, results, lock, message)
            self.manifest.mark_error(item.key, message, failed=False, attempts=job.take_unrecorded())
            with lock:  # full jitter, at least Retry-After (the policy's rule)
                delay = self._policy.delay(job.attempts, err.retry_after, self._rng)
            log.debug("%s: attempt %d failed (%s); retrying in %.2f s", item.key, job.attempts, message, delay)
            return False, delay
        except LatentskyError as err:
            release()
            return self._give_up(job, results, lock, credentials.redact(str(err), _auth_names(item)))
        self.manifest.mark_done(item.key, res.sha256, res.nbytes, attempts=job.take_unrecorded())
        with lock:
            results.done.append(res.path)
            results.bytes += res.received
        job.last_error = ""
        return True, 0.0

    def _remember_etag(self, job: Job, etag: str | None) -> None:
        """Before the first byte is written: the ETag the bytes come from, for a later If-Range."""
        if etag != job.etag:
            job.etag = etag
            self.manifest.start_attempt(job.item.key, etag, attempts=job.take_unrecorded())

    def _give_up(self, job: Job, results: Results, lock: threading.Lock, message: str) -> tuple[bool, float]:
        job.last_error = message
        self.manifest.mark_error(job.item.key, message, failed=True, attempts=job.take_unrecorded())
        log.warning("download failed: %s (after %d attempt(s))", message, job.attempts)
        with lock:
            results.errors.append(DownloadFailure(job.item, message, job.attempts))
        return True, 0.0


def _workers(connections: int) -> int:
    """Worker threads for ``connections`` transfers at once: more, so some write and verify
    files while the others download."""
    return 3 * connections


def _file_test(paths: list[Path]) -> Callable[[Path], bool]:
    """``is_file(path)`` for many paths in few folders: one listing per folder, not one stat per file."""
    folders = {path.parent for path in paths}
    if len(folders) > max(8, len(paths) // 16):
        return Path.is_file
    names: dict[Path, set[str]] = {}
    for folder in folders:
        try:
            with os.scandir(folder) as entries:
                names[folder] = {e.name for e in entries if e.is_file()}
        except (FileNotFoundError, NotADirectoryError):
            names[folder] = set()
        except OSError:
            return Path.is_file  # unreadable folder: ask file by file
    return lambda path: path.name in names[path.parent]


def _auth_names(item: DownloadItem) -> tuple[str, ...]:
    """Credentials whose values must not appear in ``item``'s error messages.

    The one the item sends (an echo of its header), and the ESO token when it is
    in the environment; the keyring is not asked for items sending no credential
    (a look-up costs milliseconds and a token never sent cannot be echoed).
    """
    names = [item.auth] if item.auth else []
    if "eso" not in names and os.environ.get(credentials.env_var("eso")):
        names.append("eso")
    return tuple(names)


def download(items: Iterable[DownloadItem], dest_manifest: str | Path, **kwargs) -> Results:
    """Fetch ``items`` with a :class:`DownloadManager` keeping its manifest in ``dest_manifest``.

    A convenience for one-off calls; keyword arguments go to the manager.
    """
    return DownloadManager(dest_manifest, **kwargs).run(items)
