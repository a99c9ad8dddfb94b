"""Reliable downloads: plan items, record them in a SQLite manifest, fetch them.

- :class:`~latentsky.download.items.DownloadItem`: one file to fetch (what
  archive clients' ``plan()`` returns).
- :class:`~latentsky.download.manifest.Manifest`: the persistent state, so a
  crash or ``kill -9`` loses nothing.
- :func:`~latentsky.download.transfer.fetch`: one file, resumed with HTTP
  Range, verified, then renamed into place.
- :class:`~latentsky.download.manager.DownloadManager`: bounded concurrency,
  per-host limits, retries with backoff; returns
  :class:`~latentsky.download.manager.Results`.
"""

from latentsky.download.items import DownloadItem
from latentsky.download.manager import DownloadFailure, DownloadManager, Results, download
from latentsky.download.manifest import Manifest
from latentsky.download.names import safe_join, safe_name

__all__ = [
    "DownloadItem",
    "DownloadManager",
    "DownloadFailure",
    "Results",
    "Manifest",
    "download",
    "safe_name",
    "safe_join",
]
