"""Fetch one file: stream into ``.part``, resume with Range, verify, rename.

:func:`fetch` is the whole life of one transfer attempt:

1. bytes already in ``dest.part`` (from an interrupted attempt or a killed
   process) are kept, and the request asks for the rest with
   ``Range: bytes=<n>-`` (plus ``If-Range`` with the ETag the partial bytes came
   from, so a changed file restarts instead of being spliced);
2. a ``206`` answer is appended, a ``200`` answer (the server ignores Range,
   as ESO sometimes does) restarts the file from byte 0; a body of at most
   one chunk (:data:`MEMORY_BODY`) is read whole first, so the connection is
   handed on (``on_received``) before the disk is touched, a longer one
   streams into the file chunk by chunk;
3. the result is verified: expected size, expected SHA-256, no HTML page
   (whatever the kind: a login page is never data), and for ``kind="fits"``
   a successful open with astropy;
4. only then is it renamed to its final name (``os.replace``, atomic).

A failed attempt raises :class:`~latentsky.exceptions.DownloadError` whose
``retryable`` says whether to try again and ``retry_after`` what the server
asked for.  Nothing but the ``.part`` file is ever incomplete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Callable

import requests

from latentsky.download.items import DownloadItem
from latentsky.download.names import filename_from_content_disposition
from latentsky.download.policy import HTML_SNIFF, answer_error
from latentsky.download.policy import looks_like_html as _looks_like_html
from latentsky.download.verify import _html_error, verify
from latentsky.exceptions import DownloadError

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
"""Bytes read from the network per write, in bytes."""

MEMORY_BODY = CHUNK
"""Bodies announced at most this long (bytes) are read whole, in one chunk, before anything
is written: the connection is handed on before the disk and the manifest are touched.  (A
body of one chunk never had bytes on disk before it had all arrived, so a crash loses no
more than it did.)  Longer bodies stream into the ``.part`` file chunk by chunk."""

_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


class StorageError(DownloadError):
    """The destination cannot take the file: disk full, quota exceeded, read-only file system.

    Every other file of the run would meet the same fate, so a manager stops
    the run (what arrived stays in the ``.part`` file, resumed by the next run).
    """


def _write_error(item: DownloadItem, part: Path, err: OSError) -> DownloadError:
    cls = StorageError if err.errno in _STORAGE_ERRNOS else DownloadError
    return cls(item.key, item.url, f"cannot write {part} ({err.strerror or err})", retryable=False)


@dataclasses.dataclass(frozen=True)
class TransferResult:
    """What one successful :func:`fetch` did.

    Attributes
    ----------
    path : Path
        The verified file, under its final name.
    nbytes : int
        Its size, bytes.
    sha256 : str
        Its SHA-256 hex digest.
    received : int
        Bytes received over the network in this attempt (less than ``nbytes``
        when resumed).
    resumed_from : int
        Offset the transfer resumed from (0: from the start).
    server_name : str or None
        The sanitised ``Content-Disposition`` name, if the server sent one (it
        never decides where the file goes).
    """

    path: Path
    nbytes: int
    sha256: str
    received: int
    resumed_from: int
    server_name: str | None = None


def fetch(item: DownloadItem, session: requests.Session, *, verify_gate=None, **options) -> TransferResult:
    """Download ``item`` into place, resuming a partial ``.part`` file.

    In two steps: :func:`_start_fetch` asks and checks the answer (reading a
    small body whole), :meth:`_Transfer.finish` stores, verifies and renames.
    The connection is given back (``on_received``)
    as soon as the body is in, so a manager's connection slot serves the next
    file while this thread writes and verifies this one.

    Parameters
    ----------
    item : DownloadItem
        What to fetch and where it goes.
    session : requests.Session
        The HTTP session (connection pool) to use.
    **options
        The keywords of :func:`_start_fetch`:

    timeout : float or (float, float)
        Seconds to wait to connect and between bytes (requests' semantics).
    headers : dict, optional
        Extra request headers (credentials); never logged.
    etag : str, optional
        ETag of the source of the existing ``.part`` bytes; sent as ``If-Range``.
    on_etag : callable, optional
        Called with the response's ETag before the first byte is written, so the
        caller can record it (the manifest does) for a later resume; not called
        for a small body that arrived whole (it is written, verified and renamed
        at once, never resumed from).
    on_bytes : callable, optional
        Called with the number of bytes of each chunk written (progress).
    on_received : callable, optional
        Called once the connection is no longer needed (the body has arrived,
        before it is written and verified), so a manager can give the
        connection slot to another file while this one is checked.
    fsync : bool
        Flush the file to disk before renaming it, so a power cut cannot leave
        a truncated file under the final name.
    sync_folder : bool
        With ``fsync``, also flush the folder after the rename, so the new name
        itself survives a power cut.  A manager fetching many files into one
        folder flushes it once at the end instead (a name lost to a power cut
        only means that file is fetched again: the manifest is checked against
        the files on disk).
    proxies : dict, optional
        Passed to requests (the manager reads them from the environment once per host).
    part_size : int, optional
        Bytes in the ``.part`` file, when the caller knows (0: there is none);
        None: look.
    verify_gate : context manager, optional
        Held while the file is verified (a manager's semaphore bounding how
        many threads parse FITS headers at once).

    Returns
    -------
    TransferResult

    Raises
    ------
    DownloadError
        On any failure; the ``.part`` file keeps what arrived intact.
    """
    return _start_fetch(item, session, **options).finish(verify_gate)


def _start_fetch(
    item: DownloadItem,
    session: requests.Session,
    *,
    timeout: float | tuple = 60.0,
    headers: dict | None = None,
    etag: str | None = None,
    on_etag: Callable[[str | None], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
    on_received: Callable[[], None] | None = None,
    fsync: bool = True,
    sync_folder: bool = True,
    proxies: dict | None = None,
    part_size: int | None = None,
) -> "_Transfer":
    """The first part of :func:`fetch` (same parameters): ask, check the answer, read a small body.

    Returns a :class:`_Transfer` whose body is in memory already (the
    connection is free, ``on_received`` has been called) or still to be
    streamed from the connection by :meth:`_Transfer.receive`.

    Raises
    ------
    DownloadError
        When the request fails or the answer is unusable (an error status, an
        HTML page...).
    """
    part = item.part
    # No more file-system calls than needed before the request: each lets other threads
    # take the interpreter, which this transfer then waits to get back.
    if part_size is not None:
        start = int(part_size)
    else:
        try:
            start = os.stat(part).st_size
        except FileNotFoundError:
            start = 0
        except NotADirectoryError as err:
            raise _write_error(item, part, err) from None
    if item.size is not None and start > item.size:
        start = 0  # longer than the file can be: the bytes are not ours
    req_headers = dict(headers or {})
    if start:
        req_headers["Range"] = f"bytes={start}-"
        if etag and not etag.startswith("W/"):  # If-Range needs a strong validator (RFC 9110, 13.1.5)
            req_headers["If-Range"] = etag
    try:
        # None, not {}: requests merges a given mapping with the session's at some CPU cost
        resp = session.get(item.url, headers=req_headers or None, stream=True, timeout=timeout, proxies=proxies)
    except requests.RequestException as err:
        raise DownloadError(item.key, item.url, f"request failed ({_describe(err)})") from None
    t = _Transfer(
        item, on_etag=on_etag, on_bytes=on_bytes, on_received=on_received, fsync=fsync, sync_folder=sync_folder
    )
    try:
        status = resp.status_code
        if status not in (200, 206):
            _drain(resp)
        if status == 416 and start:
            total = _content_range(resp.headers.get("Content-Range"))[1]
            if total == start:  # everything had already arrived
                t.start, t.complete = start, True
                t._received()
                return t
            part.unlink(missing_ok=True)
            raise DownloadError(item.key, item.url, "server refused the resume range; restarting the file")
        if status not in (200, 206):  # retryable (429, 5xx...) or final (404...): the policy decides
            raise answer_error(item.key, item.url, status, resp.reason, resp.headers)
        ctype = resp.headers.get("Content-Type", "").lower()
        if ctype.startswith(("text/html", "application/xhtml")):  # whatever the kind: never a data product
            _drain(resp)
            raise _html_error(item)
        if status == 206:
            offset = _content_range(resp.headers.get("Content-Range"))[0]
            if offset != start:
                part.unlink(missing_ok=True)  # cannot splice: start the file again
                raise DownloadError(
                    item.key, item.url, f"server resumed at byte {offset}, asked for {start}; restarting the file"
                )
            t.mode = "ab"
        else:
            if start:
                log.debug("%s: server ignored Range, restarting from byte 0", item.key)
            start, t.mode = 0, "wb"
        t.start = start
        t.etag = resp.headers.get("ETag")
        expected = resp.headers.get("Content-Length")
        t.expected = int(expected) if expected and expected.isdigit() else None
        t.server_name = filename_from_content_disposition(resp.headers.get("Content-Disposition"))
        if t.expected is not None and t.expected <= MEMORY_BODY:
            # A small body is read whole before anything is written: the connection is free
            # (on_received) before the manifest, the disk and the verification are touched.
            t.chunks, t.lost = _read_body(item, resp, start)
            resp, done = None, resp
            done.close()  # the connection goes back to the pool before the slot is given back
            t._received()
        else:
            t._resp, resp = resp, None  # streamed by receive(), on this connection
        return t
    finally:
        if resp is not None:
            resp.close()


class _Transfer:
    """A transfer under way: the answer has come, its body is to be stored and checked.

    Made by :func:`_start_fetch`; :meth:`receive` streams a long body into the
    ``.part`` file (holding the connection), :meth:`finish` writes a body
    held in memory, verifies the file and renames it into place.
    """

    def __init__(
        self, item: DownloadItem, *, on_etag=None, on_bytes=None, on_received=None, fsync=True, sync_folder=True
    ):
        self.item, self.part = item, item.part
        self.on_etag, self.on_bytes, self.on_received = on_etag, on_bytes, on_received
        self.fsync, self.sync_folder = fsync, sync_folder
        self.start, self.mode, self.etag, self.expected, self.server_name = 0, "wb", None, None, None
        self.chunks: list[bytes] | None = None  # the body, when read whole
        self.lost: Exception | None = None  # what cut the body short
        self.complete = False  # the .part file already held everything (416)
        self._resp: requests.Response | None = None
        self._hasher = None
        self._received_bytes = 0
        self._streamed = False

    def _received(self) -> None:
        if self.on_received is not None:
            self.on_received()

    def _open(self):
        try:
            return open(self.part, self.mode)
        except FileNotFoundError:  # the destination folder does not exist yet
            self.part.parent.mkdir(parents=True, exist_ok=True)
            return open(self.part, self.mode)

    def _start_hash(self):
        hasher = hashlib.sha256()
        if self.start:
            with open(self.part, "rb") as fh:  # the digest must cover the bytes kept
                while block := fh.read(1 << 20):
                    hasher.update(block)
        return hasher

    def receive(self) -> None:
        """Stream a long body into the ``.part`` file (nothing to do for one read whole)."""
        resp, self._resp = self._resp, None
        if resp is None:
            return
        item, part = self.item, self.part
        self._streamed = True
        try:
            if self.on_etag is not None:  # before the first byte lands in the .part file
                self.on_etag(self.etag)
            hasher = self._start_hash()
            received = 0
            try:
                with self._open() as out:
                    first = True
                    for chunk in resp.iter_content(CHUNK):
                        if first and self.start == 0 and _looks_like_html(chunk[:HTML_SNIFF], item.kind):
                            raise _html_error(item)
                        first = False
                        out.write(chunk)
                        hasher.update(chunk)
                        received += len(chunk)
                        if self.on_bytes is not None:
                            self.on_bytes(len(chunk))
                    # the body is in: the connection can serve another file while this one is flushed
                    self._received()
                    out.flush()
                    if self.fsync:
                        os.fsync(out.fileno())
            except requests.RequestException as err:
                self.lost = err
            except OSError as err:
                raise _write_error(item, part, err) from None
            self._hasher, self._received_bytes = hasher, received
        finally:
            resp.close()

    def finish(self, verify_gate=None) -> TransferResult:
        """Write a body held in memory, check the file and rename it into place.

        ``verify_gate`` (a context manager, optional) is held while the file is verified.

        Raises
        ------
        DownloadError
            The body was cut short (what arrived stays in ``.part`` for a
            resume) or the file does not verify (the ``.part`` is removed).
        """
        if self._resp is not None:
            self.receive()
        item, part, start = self.item, self.part, self.start
        if self.complete:
            return _finish(
                item, part, start, 0, None, self.fsync, sync_folder=self.sync_folder, verify_gate=verify_gate
            )
        body = None
        if not self._streamed:
            hasher = self._start_hash()
            chunks = self.chunks or []
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)  # what arrived, even if cut short
            # A whole body is written, verified and renamed at once: its ETag is needed only when
            # the .part file stays for a resume (a body cut short), so only then is it recorded,
            # before the first byte lands (one manifest write less per file).  A whole body
            # left in .part by a crash is complete: the next run's resume gets a 416 and keeps it.
            cut_short = self.lost is not None or (self.expected is not None and len(body) != self.expected)
            if self.on_etag is not None and cut_short:
                self.on_etag(self.etag)
            try:
                with self._open() as out:
                    out.write(body)
                    out.flush()
                    if self.fsync and not cut_short:
                        os.fsync(out.fileno())
            except OSError as err:
                if not cut_short and not start:  # a whole body's start, ETag unrecorded: no resume from it
                    with contextlib.suppress(OSError):
                        part.unlink(missing_ok=True)
                raise _write_error(item, part, err) from None
            hasher.update(body)
            received = len(body)
            if self.on_bytes is not None and received:
                self.on_bytes(received)
        else:
            hasher, received = self._hasher, self._received_bytes
        if self.lost is not None:
            raise DownloadError(
                item.key, item.url, f"connection lost after {start + received} bytes ({_describe(self.lost)})"
            ) from None
        if self.expected is not None and received != self.expected:
            raise DownloadError(item.key, item.url, f"body ended after {received} of {self.expected} bytes")
        return _finish(
            item,
            part,
            start + received,
            received,
            hasher.hexdigest(),
            self.fsync,
            self.server_name,
            resumed_from=start,
            data=body if body is not None and start == 0 else None,
            sync_folder=self.sync_folder,
            verify_gate=verify_gate,
        )


def _drain(resp: requests.Response, limit: int = 64 * 1024) -> None:
    """Read a short unwanted body (an error page), so its connection can be kept alive."""
    length = resp.headers.get("Content-Length")
    if length and length.isdigit() and int(length) <= limit:
        try:
            _ = resp.content
        except requests.RequestException:
            pass  # the connection is closed with the response instead


def _read_body(item: DownloadItem, resp: requests.Response, start: int) -> tuple[list, Exception | None]:
    """The chunks of a body and the error that cut it short (None when it arrived whole)."""
    chunks: list[bytes] = []
    try:
        for chunk in resp.iter_content(CHUNK):
            if not chunks and start == 0 and _looks_like_html(chunk[:HTML_SNIFF], item.kind):
                raise _html_error(item)
            chunks.append(chunk)
    except requests.RequestException as err:
        return chunks, err
    return chunks, None


def _finish(
    item,
    part,
    nbytes,
    received,
    digest,
    fsync,
    server_name=None,
    resumed_from=0,
    data=None,
    sync_folder=True,
    verify_gate=None,
) -> TransferResult:
    try:
        with verify_gate if verify_gate is not None else contextlib.nullcontext():
            digest = verify(item, part, digest, data=data)
    except DownloadError:
        # bad bytes must not be resumed from: the next attempt starts clean
        part.unlink(missing_ok=True)
        raise
    os.replace(part, item.dest)
    if fsync and sync_folder:
        fsync_folder(item.dest.parent)
    return TransferResult(item.dest, nbytes, digest, received, resumed_from, server_name)


def fsync_folder(folder: str | Path) -> None:
    """Flush a folder's entries (renames into it) to disk; quietly nothing where folders cannot be synced."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """First byte and total size of a ``Content-Range: bytes 100-199/1000`` header (None where unreadable)."""
    parts = re.fullmatch(r"\s*bytes\s+(\d+)-\d+(?:/(\d+|\*))?\s*", value or "")
    if parts is None:
        return None, None
    return int(parts[1]), int(parts[2]) if parts[2] not in (None, "*") else None


def _describe(err: Exception) -> str:
    """A short description of a requests error, without its repr chains or headers."""
    root = err
    while root.__context__ is not None and root.__context__ is not root:
        root = root.__context__
    text = f"{type(err).__name__}"
    if root is not err:
        text += f": {type(root).__name__}"
    detail = str(root)
    return f"{text}: {detail[:160]}" if detail else text
