"""Fixtures of the archive tests: the local archive over real FITS files, on 127.0.0.1.

Nothing here mocks the network: clients talk HTTP to a real loopback server
(:class:`latentsky.archives.local.archive.LocalArchive`) that reads the bundled
sample and the real images in ``tests/archives/data``.
"""

from __future__ import annotations

import pytest
from _support.archives import DATA, settled_log


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
