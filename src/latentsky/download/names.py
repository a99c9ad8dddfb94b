"""Safe local file names from names a server or a table supplies.

A name that comes from outside (the last segment of a URL, a
``Content-Disposition`` header, a column of a downloaded table) must never
choose where a file lands: ``../``, absolute paths, drive letters, NUL and
control characters are all neutralised, so the result is always one plain
file name inside the destination folder.

Examples
--------
>>> safe_name("../../etc/passwd")
'passwd'
>>> safe_name("/abs/path/HARPS.2012-04-14T09:01:09.658_s1d_A.fits")
'HARPS.2012-04-14T09_01_09.658_s1d_A.fits'
>>> safe_name("..")
'download'
>>> filename_from_content_disposition('attachment; filename="../../../evil.fits"')
'evil.fits'
"""

from __future__ import annotations

import re
from email.message import Message
from pathlib import Path
from urllib.parse import unquote, urlsplit

MAX_NAME_BYTES = 200
"""Longest name produced, in UTF-8 bytes (file systems allow 255)."""

# Keep what is portable across Linux, macOS and Windows file systems.
_UNSAFE = re.compile(r"[^A-Za-z0-9._+\-=@,]")
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                     *(f"LPT{i}" for i in range(1, 10))}


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
        ``._+-=@,`` replaced by ``_``, no leading dots, at most
        :data:`MAX_NAME_BYTES` bytes (the extension is kept when shortening).
    """
    if not name:
        return default
    name = str(name).replace("\x00", "")
    # both separators: a Windows-style name must not climb either
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE.sub("_", name).lstrip(".")
    if not name.strip("._") or name.split(".")[0].upper() in _WINDOWS_RESERVED:
        return default if not name.strip("._") else "_" + name
    if len(name.encode()) > MAX_NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        ext = dot + ext if dot and len(ext) <= 16 else ""
        name = name[: MAX_NAME_BYTES - len(ext)] + ext
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
