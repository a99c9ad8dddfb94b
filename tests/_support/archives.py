"""Helpers of the archive tests (tests/archives): the recorded data folder, served bytes, the request log."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "archives" / "data"
"""tests/archives/data: real images and recorded responses of the real services."""


def source_bytes(path: Path) -> bytes:
    """The bytes an archive serves for a source file (gzipped sample files are served plain)."""
    if path.name.endswith(".gz"):
        with gzip.open(path, "rb") as fh:
            return fh.read()
    return path.read_bytes()


def settled_log(server, quiet: float = 0.1, limit: float = 5.0) -> list:
    """The server's request log once no record arrived for ``quiet`` seconds.

    The server records a request just after sending its answer, so a client
    can see the answer a moment before the record exists.
    """
    deadline = time.monotonic() + limit
    n = -1
    while time.monotonic() < deadline:
        if len(server.log) == n:
            break
        n = len(server.log)
        time.sleep(quiet)
    return list(server.log)
