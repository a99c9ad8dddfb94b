"""Fixtures of the archive tests: the local archive over real FITS files, on 127.0.0.1.

Nothing here mocks the network: clients talk HTTP to a real loopback server
(:class:`latentsky.archives.local.archive.LocalArchive`) that reads the bundled
sample and the real images in ``tests/archives/data``.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest


DATA = Path(__file__).parent / "data"


@pytest.fixture
def local(sample_archive):
    """``sample_archive`` with conf pointing at it and a clean request log and fault list."""
    settled_log(sample_archive.server)
    sample_archive.server.clear()
    sample_archive.configure()
    yield sample_archive
    sample_archive.server.clear()
    sample_archive.restore()


@pytest.fixture(scope="module")
def image_archive():
    """The local archive over the real FIRST and UKIDSS images of tests/archives/data/images."""
    from latentsky.archives.local.archive import LocalArchive

    archive = LocalArchive(DATA / "images", retry_after=0.05).start()
    yield archive
    archive.stop()


@pytest.fixture
def images(image_archive):
    settled_log(image_archive.server)
    image_archive.server.clear()
    image_archive.configure()
    yield image_archive
    image_archive.server.clear()
    image_archive.restore()


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
    import time

    deadline = time.monotonic() + limit
    n = -1
    while time.monotonic() < deadline:
        if len(server.log) == n:
            break
        n = len(server.log)
        time.sleep(quiet)
    return list(server.log)
