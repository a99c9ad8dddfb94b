"""Fetch one file: stream into ``.part``, resume with Range, verify, rename.

:func:`fetch` is the whole life of one transfer attempt:

1. bytes already in ``dest.part`` (from an interrupted attempt or a killed
   process) are kept, and the request asks for the rest with
   ``Range: bytes=<n>-`` (plus ``If-Range`` with the ETag the partial bytes came
   from, so a changed file restarts instead of being spliced);
2. a ``206`` answer is appended, a ``200`` answer (the server ignores Range,
   as ESO sometimes does) restarts the file from byte 0;
3. the result is verified: expected size, expected SHA-256, and for
   ``kind="fits"`` no HTML page and a successful open with astropy;
4. only then is it renamed to its final name (``os.replace``, atomic).

A failed attempt raises :class:`~latentsky.exceptions.DownloadError` whose
``retryable`` says whether to try again and ``retry_after`` what the server
asked for.  Nothing but the ``.part`` file is ever incomplete.
"""

from __future__ import annotations

import dataclasses
import email.utils
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Callable

import requests

from latentsky.download.items import DownloadItem
from latentsky.download.names import filename_from_content_disposition
from latentsky.exceptions import DownloadError

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
"""Bytes read from the network per write, in bytes."""

FITS_BLOCK = 2880
"""FITS files are whole numbers of 2880-byte blocks (FITS standard, section 3.1)."""

_RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


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


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), or None."""
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


def file_sha256(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _looks_like_html(head: bytes) -> bool:
    start = head.lstrip()[:64].lower()
    return start.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body"))


def verify(item: DownloadItem, path: str | Path, sha256: str | None = None, *, deep: bool = False) -> str:
    """Check a complete file against ``item``; returns its SHA-256.

    Parameters
    ----------
    item : DownloadItem
        What the file should be (size, checksum, kind).
    path : path-like
        The file to check (usually ``item.part``).
    sha256 : str, optional
        The digest, when already computed while streaming.
    deep : bool
        For FITS: have astropy parse every HDU (tables included), not only the
        primary one.  The layout of every HDU is checked either way.

    Raises
    ------
    DownloadError
        Naming the item, URL and the check that failed; ``retryable`` is True
        (a fresh download may be good).

    Notes
    -----
    A FITS file must not be an HTML page; an uncompressed one must be whole
    2880-byte blocks, every HDU's header must end (``END``) and its data fit
    in the file (a fast scan of the headers, :func:`fits_extent`), and astropy
    must open it.  By default astropy parses the primary HDU only: parsing
    every table HDU costs 4x more CPU (about 1.5 ms per 100 kB SDSS spectrum)
    and, with the layout scan, catches little more.
    """
    path = Path(path)
    size = path.stat().st_size
    if item.size is not None and size != item.size:
        raise DownloadError(item.key, item.url, f"size {size} bytes, expected {item.size}")
    digest = sha256 or file_sha256(path)
    if item.sha256 is not None and digest != item.sha256:
        raise DownloadError(item.key, item.url, f"SHA-256 {digest} does not match the expected {item.sha256}")
    if item.kind == "fits":
        _verify_fits(item, path, size, deep)
    return digest


def fits_extent(path: str | Path) -> int:
    """Bytes spanned by the HDUs of an uncompressed FITS file, from its headers alone.

    Reads each header up to its ``END`` card and skips the data unit, whose
    size follows from ``BITPIX``, ``NAXISn``, ``PCOUNT`` and ``GCOUNT`` (FITS
    standard 4.0, section 4.4.1).  Stops at the end of the file or at blocks
    that do not start an extension (padding some writers append).

    Raises
    ------
    ValueError
        A header without ``END`` or with unreadable sizes.
    """
    size = os.path.getsize(path)
    pos, first = 0, True
    with open(path, "rb") as fh:
        while pos < size:
            fh.seek(pos)
            block = fh.read(FITS_BLOCK)
            if not first and not block.startswith(b"XTENSION="):
                break  # trailing padding, not an HDU
            cards: dict[bytes, bytes] = {}
            header_len = 0
            while True:
                if len(block) < FITS_BLOCK:
                    raise ValueError(f"header at byte {pos} has no END card before the end of the file")
                header_len += FITS_BLOCK
                ended = False
                for i in range(0, FITS_BLOCK, 80):
                    card = block[i:i + 80]
                    key = card[:8].rstrip()
                    if key == b"END":
                        ended = True
                        break
                    if card[8:10] == b"= " and key not in cards:
                        cards[key] = card[10:].split(b"/", 1)[0].strip()
                if ended:
                    break
                block = fh.read(FITS_BLOCK)
            try:
                bitpix = abs(int(cards[b"BITPIX"]))
                naxis = int(cards[b"NAXIS"])
                dims = [int(cards[b"NAXIS%d" % n]) for n in range(1, naxis + 1)]
                pcount = int(cards.get(b"PCOUNT", b"0"))
                gcount = int(cards.get(b"GCOUNT", b"1"))
            except (KeyError, ValueError) as err:
                raise ValueError(f"header at byte {pos}: unreadable data size ({err})") from None
            if first and dims and dims[0] == 0 and cards.get(b"GROUPS") == b"T":
                dims = dims[1:]  # random groups: NAXIS1 = 0 is not a dimension
            n = 0
            if dims:
                n = 1
                for d in dims:
                    n *= d
            data = bitpix // 8 * gcount * (pcount + n)
            pos += header_len + -(-data // FITS_BLOCK) * FITS_BLOCK
            first = False
    return pos


def _verify_fits(item: DownloadItem, path: Path, size: int, deep: bool = False) -> None:
    with open(path, "rb") as fh:
        head = fh.read(80)
    if _looks_like_html(head):
        raise DownloadError(item.key, item.url, "an HTML page arrived instead of a FITS file "
                                                "(expired login or archive error page?)")
    plain = head.startswith(b"SIMPLE  =")
    if plain:
        if size % FITS_BLOCK:
            raise DownloadError(item.key, item.url, f"{size} bytes is not a whole number of {FITS_BLOCK}-byte "
                                                    "FITS blocks (truncated?)")
        try:
            extent = fits_extent(path)
        except ValueError as err:
            raise DownloadError(item.key, item.url, f"not a complete FITS file ({err})") from None
        if extent > size:
            raise DownloadError(item.key, item.url, f"the FITS headers describe {extent} bytes but the file has "
                                                    f"{size}: truncated")
    from astropy.io import fits  # lazy: astropy.io.fits costs ~0.2 s to import

    # No warnings.catch_warnings() here: it swaps process-wide state, and this runs in many
    # threads at once.  Truncation was checked above (astropy only warns about it).
    try:
        with fits.open(path, memmap=False, lazy_load_hdus=not deep or not plain) as hdul:
            _ = hdul[0].header
            if deep or not plain:
                # compressed: decompressing all data is the only check
                for hdu in hdul:
                    _ = hdu.data
    except Exception as err:
        raise DownloadError(item.key, item.url, f"does not open as FITS ({type(err).__name__}: {err})") from err


def fetch(item: DownloadItem, session: requests.Session, *, timeout: float | tuple = 60.0,
          headers: dict | None = None, etag: str | None = None,
          on_etag: Callable[[str | None], None] | None = None,
          on_bytes: Callable[[int], None] | None = None, on_received: Callable[[], None] | None = None,
          fsync: bool = True, proxies: dict | None = None) -> TransferResult:
    """Download ``item`` into place, resuming a partial ``.part`` file.

    Parameters
    ----------
    item : DownloadItem
        What to fetch and where it goes.
    session : requests.Session
        The HTTP session (connection pool) to use.
    timeout : float or (float, float)
        Seconds to wait to connect and between bytes (requests' semantics).
    headers : dict, optional
        Extra request headers (credentials); never logged.
    etag : str, optional
        ETag of the source of the existing ``.part`` bytes; sent as ``If-Range``.
    on_etag : callable, optional
        Called with the response's ETag before the first byte is written, so the
        caller can record it (the manifest does) for a later resume.
    on_bytes : callable, optional
        Called with the number of bytes of each chunk written (progress).
    on_received : callable, optional
        Called once the connection is no longer needed (the body has arrived,
        before verification), so a manager can give the connection slot to
        another file while this one is checked.
    fsync : bool
        Flush the file to disk before renaming it, so a power cut cannot leave
        a truncated file under the final name.
    proxies : dict, optional
        Passed to requests (the manager reads them from the environment once per host).

    Returns
    -------
    TransferResult

    Raises
    ------
    DownloadError
        On any failure; the ``.part`` file keeps what arrived intact.
    """
    part = item.part
    part.parent.mkdir(parents=True, exist_ok=True)
    start = part.stat().st_size if part.exists() else 0
    if item.size is not None and start > item.size:
        start = 0  # longer than the file can be: the bytes are not ours
    req_headers = dict(headers or {})
    if start:
        req_headers["Range"] = f"bytes={start}-"
        if etag and not etag.startswith("W/"):  # If-Range needs a strong validator (RFC 9110, 13.1.5)
            req_headers["If-Range"] = etag
    try:
        resp = session.get(item.url, headers=req_headers, stream=True, timeout=timeout, proxies=proxies)
    except requests.RequestException as err:
        raise DownloadError(item.key, item.url, f"request failed ({_describe(err)})") from None
    with resp:
        status = resp.status_code
        if status == 416 and start:
            total = _content_range_total(resp.headers.get("Content-Range"))
            if total == start:  # everything had already arrived
                return _finish(item, part, start, 0, None, fsync)
            part.unlink(missing_ok=True)
            raise DownloadError(item.key, item.url, "server refused the resume range; restarting the file")
        if status in _RETRYABLE_STATUS:
            raise DownloadError(item.key, item.url, f"HTTP {status} {resp.reason}", retryable=True,
                                retry_after=parse_retry_after(resp.headers.get("Retry-After")))
        if status not in (200, 206):
            # 4xx: the archive says no (missing product, no permission); trying again will not help
            raise DownloadError(item.key, item.url, f"HTTP {status} {resp.reason}", retryable=False)
        ctype = resp.headers.get("Content-Type", "").lower()
        if item.kind == "fits" and ctype.startswith(("text/html", "application/xhtml")):
            raise DownloadError(item.key, item.url, "an HTML page arrived instead of a FITS file "
                                                    "(expired login or archive error page?)")
        if status == 206:
            offset = _content_range_start(resp.headers.get("Content-Range"))
            if offset != start:
                part.unlink(missing_ok=True)  # cannot splice: start the file again
                raise DownloadError(item.key, item.url, f"server resumed at byte {offset}, asked for {start}; "
                                                        "restarting the file")
            mode = "ab"
        else:
            if start:
                log.debug("%s: server ignored Range, restarting from byte 0", item.key)
            start, mode = 0, "wb"
        if on_etag is not None:
            on_etag(resp.headers.get("ETag"))
        expected = resp.headers.get("Content-Length")
        expected = int(expected) if expected and expected.isdigit() else None
        server_name = filename_from_content_disposition(resp.headers.get("Content-Disposition"))
        hasher = hashlib.sha256()
        if start:
            with open(part, "rb") as fh:  # the digest must cover the bytes kept
                while block := fh.read(1 << 20):
                    hasher.update(block)
        received = 0
        first = True
        try:
            with open(part, mode) as out:
                for chunk in resp.iter_content(CHUNK):
                    if first and start == 0 and item.kind == "fits" and _looks_like_html(chunk[:64]):
                        raise DownloadError(item.key, item.url, "an HTML page arrived instead of a FITS file "
                                                                "(expired login or archive error page?)")
                    first = False
                    out.write(chunk)
                    hasher.update(chunk)
                    received += len(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
                # the body is in: the connection can serve another file while this one is flushed
                if on_received is not None:
                    on_received()
                out.flush()
                if fsync:
                    os.fsync(out.fileno())
        except requests.RequestException as err:
            raise DownloadError(item.key, item.url, f"connection lost after {start + received} bytes "
                                                    f"({_describe(err)})") from None
        except OSError as err:
            raise DownloadError(item.key, item.url, f"cannot write {part} ({err})", retryable=False) from None
        if expected is not None and received != expected:
            raise DownloadError(item.key, item.url, f"body ended after {received} of {expected} bytes")
    return _finish(item, part, start + received, received, hasher.hexdigest(), fsync, server_name,
                   resumed_from=start)


def _finish(item, part, nbytes, received, digest, fsync, server_name=None, resumed_from=0) -> TransferResult:
    try:
        digest = verify(item, part, digest)
    except DownloadError:
        # bad bytes must not be resumed from: the next attempt starts clean
        part.unlink(missing_ok=True)
        raise
    os.replace(part, item.dest)
    if fsync:
        _fsync_dir(item.dest.parent)
    return TransferResult(item.dest, nbytes, digest, received, resumed_from, server_name)


def _fsync_dir(folder: Path) -> None:
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


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-199/1000"
    try:
        return int(value.split()[1].split("-")[0])
    except (AttributeError, IndexError, ValueError):
        return None


def _content_range_total(value: str | None) -> int | None:
    try:
        return int(value.rsplit("/", 1)[1])
    except (AttributeError, IndexError, ValueError):
        return None


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
