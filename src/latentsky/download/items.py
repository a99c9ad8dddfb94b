"""What to download: the :class:`DownloadItem` record.

Archive clients turn query results into lists of :class:`DownloadItem` in
their ``plan()`` method, with no network call; the download manager
(:mod:`latentsky.download.manager`) fetches them.  The record is deliberately
small and stable: seven fields, all plain data, so plans can be tested offline,
stored in the manifest and compared between runs.

Examples
--------
>>> from pathlib import Path
>>> item = DownloadItem("HARPS.2012-04-14T09:01:09.658",
...                     "http://127.0.0.1:8000/files/HARPS.2012-04-14T09_01_09.658_s1d_A.fits",
...                     Path("/data/harps/HARPS.2012-04-14T09_01_09.658_s1d_A.fits"), kind="fits")
>>> item.host
'127.0.0.1:8000'
>>> item.part.name
'HARPS.2012-04-14T09_01_09.658_s1d_A.fits.part'
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from urllib.parse import urlsplit

KINDS = ("any", "fits")
"""Known values of :attr:`DownloadItem.kind`."""

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclasses.dataclass(frozen=True)
class DownloadItem:
    """One file to fetch.

    Parameters
    ----------
    key : str
        Identifier of the product, unique within a manifest (e.g. an ESO
        ``dp_id`` or ``"sdss/<plate>-<mjd>-<fiber>"``).  Enqueueing the same key
        twice is harmless.
    url : str
        ``http://`` or ``https://`` URL of the file.  Never put a credential in
        it: use ``auth`` instead.
    dest : Path
        Final location of the verified file.  The file only appears under this
        name once it is complete and verified; while it is being fetched the
        bytes live in ``dest`` + ``".part"``.
    size : int or None
        Expected size in bytes, when the archive tells it; checked on arrival.
    sha256 : str or None
        Expected SHA-256 hex digest (64 lower-case hex characters), when known.
    kind : {"any", "fits"}
        ``"fits"`` files must open with :func:`astropy.io.fits.open`, so an
        HTML login or error page saved as "data" is rejected.
    auth : str or None
        Name of a credential to send with the request (``"eso"`` for the ESO
        token, see :mod:`latentsky.download.credentials`); the secret itself is
        never stored in the item.
    """

    key: str
    url: str
    dest: Path
    size: int | None = None
    sha256: str | None = None
    kind: str = "any"
    auth: str | None = None

    def __post_init__(self) -> None:
        # frozen dataclass: normalise through object.__setattr__
        if not isinstance(self.key, str) or not self.key:
            raise ValueError(f"DownloadItem key must be a non-empty string, got {self.key!r}")
        scheme = urlsplit(self.url).scheme if isinstance(self.url, str) else ""
        if scheme not in ("http", "https"):
            raise ValueError(f"DownloadItem {self.key!r}: url must be http(s), got {self.url!r}")
        object.__setattr__(self, "dest", Path(self.dest))
        if self.size is not None:
            size = int(self.size)
            if size < 0:
                raise ValueError(f"DownloadItem {self.key!r}: size must be >= 0 bytes, got {self.size!r}")
            object.__setattr__(self, "size", size)
        if self.sha256 is not None:
            digest = str(self.sha256).lower()
            if not _SHA256.match(digest):
                raise ValueError(f"DownloadItem {self.key!r}: sha256 must be 64 hex digits, got {self.sha256!r}")
            object.__setattr__(self, "sha256", digest)
        if self.kind not in KINDS:
            raise ValueError(f"DownloadItem {self.key!r}: kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def host(self) -> str:
        """``host[:port]`` of the URL: the unit of per-host politeness limits."""
        return urlsplit(self.url).netloc.lower()

    @property
    def part(self) -> Path:
        """Where the incomplete bytes are kept: ``dest`` with ``".part"`` appended."""
        return self.dest.with_name(self.dest.name + ".part")

    def to_dict(self) -> dict:
        """Plain-data form (``dest`` as a string), e.g. for a table or JSON."""
        d = dataclasses.asdict(self)
        d["dest"] = str(self.dest)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DownloadItem":
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def check_unique(items: list[DownloadItem]) -> None:
    """Refuse (ValueError) two different items under one key, or two keys written to one file."""
    seen: dict[str, DownloadItem] = {}
    dests: dict[Path, str] = {}
    for item in items:
        other = seen.setdefault(item.key, item)
        if other != item:
            raise ValueError(f"two different download items share the key {item.key!r}: {other.url} and {item.url}")
        key = dests.setdefault(item.dest, item.key)
        if key != item.key:
            raise ValueError(f"download items {key!r} and {item.key!r} would both be written to {item.dest}")
