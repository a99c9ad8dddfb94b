"""Is a downloaded file what its item promised?  Size, SHA-256, no HTML page, and for FITS a whole layout.

:func:`verify` is what a transfer runs before the rename to the final name; :func:`fits_extent` reads the
bytes an uncompressed FITS file's headers describe (BITPIX/NAXISn/PCOUNT/GCOUNT per HDU) without decoding
any data, so a truncated file is caught in microseconds.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Callable

from latentsky.download.items import DownloadItem
from latentsky.download.policy import HTML_SNIFF
from latentsky.download.policy import looks_like_html as _looks_like_html
from latentsky.exceptions import DownloadError

FITS_BLOCK = 2880
"""FITS files are whole numbers of 2880-byte blocks (FITS standard, section 3.1)."""


def file_sha256(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(
    item: DownloadItem, path: str | Path, sha256: str | None = None, *, deep: bool = False, data: bytes | None = None
) -> str:
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
        For FITS: also have astropy open the file and parse every HDU (tables
        included).  The layout of every HDU is checked either way.
    data : bytes, optional
        The file's bytes, when they are still in memory (a small download just
        written): the checks read them instead of the file.  The file's size
        must match.

    Raises
    ------
    DownloadError
        Naming the item, URL and the check that failed; ``retryable`` is True
        (a fresh download may be good).

    Notes
    -----
    A FITS file must not be an HTML page; an uncompressed one must be whole
    2880-byte blocks, every HDU's header must end (``END``) and its data fit
    in the file (a fast scan of the headers, :func:`fits_extent`, about 0.05
    ms per 100 kB SDSS spectrum).  A compressed one (gzip...) must open and
    decompress with astropy.  ``deep=True`` adds astropy's parse of every HDU
    of an uncompressed file (about 2 ms per spectrum, under the interpreter
    lock).  Opening the primary HDU with astropy by default caught no damage
    the layout scan misses (docs/decisions/download-verify.md) and was more
    than half of a download's CPU time.
    """
    path = Path(path)
    size = path.stat().st_size
    if data is not None and len(data) != size:
        raise DownloadError(item.key, item.url, f"{path} holds {size} bytes, {len(data)} were written")
    if item.size is not None and size != item.size:
        raise DownloadError(item.key, item.url, f"size {size} bytes, expected {item.size}")
    digest = sha256 or (hashlib.sha256(data).hexdigest() if data is not None else file_sha256(path))
    if item.sha256 is not None and digest != item.sha256:
        raise DownloadError(item.key, item.url, f"SHA-256 {digest} does not match the expected {item.sha256}")
    if item.kind == "fits":
        _verify_fits(item, path, size, deep, data)
    else:  # whatever the kind, a table row promised a data product, not a login page
        if data is not None:
            head = data[:HTML_SNIFF]
        else:
            with open(path, "rb") as fh:
                head = fh.read(HTML_SNIFF)
        if _looks_like_html(head, item.kind):
            raise _html_error(item)
    return digest


_SIZE_KEYS = frozenset((b"BITPIX", b"NAXIS", b"PCOUNT", b"GCOUNT", b"GROUPS"))
_SIZE_KEY_INITIALS = frozenset(b"BNPGE")  # first letters of the keys above and of END


def fits_extent(source: str | Path | bytes) -> int:
    """Bytes spanned by the HDUs of an uncompressed FITS file, from its headers alone.

    Reads each header up to its ``END`` card and skips the data unit, whose
    size follows from ``BITPIX``, ``NAXISn``, ``PCOUNT`` and ``GCOUNT`` (FITS
    standard 4.0, section 4.4.1).  Stops at the end of the file or at blocks
    that do not start an extension (padding some writers append).

    Written by hand because astropy finds this layout only by opening every
    HDU (``fits.open(..., lazy_load_hdus=False)``: 60 to 300 times the CPU of
    this scan on SDSS and HARPS files) and only warns about a truncated file.

    Parameters
    ----------
    source : path-like or bytes
        The file, or its bytes.

    Raises
    ------
    ValueError
        A header without ``END`` or with unreadable sizes.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source)
        return _fits_extent(len(view), lambda pos: bytes(view[pos : pos + FITS_BLOCK]))
    with open(source, "rb") as fh:

        def read(pos: int) -> bytes:
            fh.seek(pos)
            return fh.read(FITS_BLOCK)

        return _fits_extent(os.fstat(fh.fileno()).st_size, read)


def _fits_extent(size: int, read: Callable[[int], bytes]) -> int:
    pos, first = 0, True
    while pos < size:
        block = read(pos)
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
                if block[i] not in _SIZE_KEY_INITIALS:
                    continue  # not a card this scan needs (most of them): skipped cheaply
                key = block[i : i + 8].rstrip()
                if key == b"END":
                    ended = True
                    break
                if (
                    block[i + 8 : i + 10] == b"= "
                    and key not in cards
                    and (key in _SIZE_KEYS or key.startswith(b"NAXIS"))
                ):
                    cards[key] = block[i + 10 : i + 80].split(b"/", 1)[0].strip()
            if ended:
                break
            block = read(pos + header_len)
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


def _verify_fits(item: DownloadItem, path: Path, size: int, deep: bool = False, data: bytes | None = None) -> None:
    if data is not None:
        head = data[:80]
    else:
        with open(path, "rb") as fh:
            head = fh.read(80)
    if _looks_like_html(head):
        raise _html_error(item)
    plain = head.startswith(b"SIMPLE  =")
    if plain:
        if size % FITS_BLOCK:
            raise DownloadError(
                item.key, item.url, f"{size} bytes is not a whole number of {FITS_BLOCK}-byte FITS blocks (truncated?)"
            )
        try:
            extent = fits_extent(path if data is None else data)
        except ValueError as err:
            raise DownloadError(item.key, item.url, f"not a complete FITS file ({err})") from None
        if extent > size:
            raise DownloadError(
                item.key, item.url, f"the FITS headers describe {extent} bytes but the file has {size}: truncated"
            )
        if not deep:
            return
    from astropy.io import fits  # lazy: astropy.io.fits costs ~0.2 s to import

    # No warnings.catch_warnings() here: it swaps process-wide state, and this runs in many
    # threads at once.  Truncation was checked above (astropy only warns about it).
    # The bytes just written, when at hand, spare reopening the file (compressed files: the file).
    source = io.BytesIO(data) if data is not None and plain else path
    try:
        # compressed: decompressing all data is the only check; deep: every HDU parsed
        with fits.open(source, memmap=False, lazy_load_hdus=not plain) as hdul:
            for hdu in hdul:
                _ = hdu.data
    except Exception as err:
        raise DownloadError(item.key, item.url, f"does not open as FITS ({type(err).__name__}: {err})") from err


def _html_error(item: DownloadItem) -> DownloadError:
    what = "a FITS file" if item.kind == "fits" else "the data product"
    return DownloadError(
        item.key, item.url, f"an HTML page arrived instead of {what} (expired login or archive error page?)"
    )
