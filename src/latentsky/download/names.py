"""Safe local file names from names a server, a table or an archive identifier supplies.

:func:`safe_name` is latentsky's one file-name sanitiser: every name that
comes from outside (the last segment of a URL, a ``Content-Disposition``
header, a column of a downloaded table, an archive's product identifier)
goes through it before it names a file.  ``../``, absolute paths, drive
letters, NUL and control characters are neutralised, so the result is always
one plain file name inside the destination folder, and one that every common
file system accepts: no Windows device name (``CON``, ``PRN``, ``AUX``,
``NUL``, ``COM0``-``COM9``, ``LPT0``-``LPT9``, with or without an extension),
no trailing dot or space, at most :data:`MAX_NAME_BYTES` bytes (a longer name
is cut and given a hash of the original, so two long names stay distinct).

Examples
--------
>>> safe_name("../../etc/passwd")
'passwd'
>>> safe_name("/abs/path/HARPS.2012-04-14T09:01:09.658_s1d_A.fits")
'HARPS.2012-04-14T09_01_09.658_s1d_A.fits'
>>> safe_name("..")
'download'
>>> safe_name("con.fits")
'_con.fits'
>>> filename_from_content_disposition('attachment; filename="../../../evil.fits"')
'evil.fits'
"""

from __future__ import annotations

import hashlib
import re
from email.message import Message
from pathlib import Path
from urllib.parse import unquote, urlsplit

MAX_NAME_BYTES = 200
"""Longest name produced, in UTF-8 bytes (file systems allow 255; room is left for suffixes such as ``.part``)."""

# Keep what is portable across Linux, macOS and Windows file systems.
_UNSAFE = re.compile(r"[^A-Za-z0-9._+\-=@,]")
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}
_HASH_CHARS = 8
_MAX_EXT = 16


def safe_name(name: str | None, default: str = "download") -> str:
    """Reduce ``name`` to a single, portable file name.

    Parameters
    ----------
    name : str or None
        A name from an untrusted source.
    default : str
        Returned when nothing usable is left (``""``, ``".."``, ``"/"``...).

    Returns
    -------
    str
        The last path component, with anything but letters, digits and
        ``._+-=@,`` replaced by ``_``; no leading or trailing dots; ``_``
        before a Windows device name; at most :data:`MAX_NAME_BYTES` bytes,
        a longer name cut (its extension kept) and made unique with the
        first 8 hex digits of the SHA-256 of the original.
    """
    if not name:
        return default
    original = str(name)
    name = original.replace("\x00", "")
    # both separators: a Windows-style name must not climb either
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE.sub("_", name.strip(" .\t\r\n")).strip(".")
    if not name.strip("._"):
        return default
    if name.split(".")[0].upper() in _WINDOWS_RESERVED:
        name = "_" + name
    if len(name.encode()) > MAX_NAME_BYTES:
        _, dot, ext = name.rpartition(".")
        ext = dot + ext if dot and len(ext) <= _MAX_EXT else ""
        tag = "-" + hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
        name = name[: MAX_NAME_BYTES - len(ext) - len(tag)] + tag + ext
    return name


def safe_join(folder: str | Path, name: str | None, default: str = "download") -> Path:
    """``folder / safe_name(name)``, checked to lie directly inside ``folder``.

    Raises
    ------
    ValueError
        Never for names passed through :func:`safe_name`; kept as a last guard.
    """
    folder = Path(folder)
    path = folder / safe_name(name, default)
    if path.resolve().parent != folder.resolve():
        raise ValueError(f"file name {name!r} would escape the destination folder {folder}")
    return path


def filename_from_content_disposition(header: str | None) -> str | None:
    """The sanitised file name of a ``Content-Disposition`` header, or None.

    Understands ``filename="..."`` and RFC 6266 ``filename*=UTF-8''...``
    (preferred when both are present).
    """
    if not header:
        return None
    msg = Message()
    msg["Content-Disposition"] = header
    raw = msg.get_filename()  # decodes filename* (RFC 2231) too
    if raw is None:
        return None
    return safe_name(raw)


def name_from_url(url: str, default: str = "download") -> str:
    """A sanitised file name from the last segment of a URL's path."""
    path = unquote(urlsplit(url).path)
    return safe_name(path.rstrip("/").rsplit("/", 1)[-1], default)
