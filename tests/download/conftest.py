"""Fixtures of the download tests: real FITS files served by the real loopback server."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from latentsky.archives.local.server import LocalServer
from latentsky.download import DownloadItem

# A mix of real files: a FIRST image (14 kB), a UKIDSS image (386 kB), two small SDSS
# spectra and two HARPS s1d spectra (~1.4 MB, several 256 kB chunks: room to resume).
SOURCES = [
    "images/first/first_J105007+304037_astroquery_test.fits",
    "images/ukidss/ukidss_wfcam_K_TaurusAuriga_astroquery_test.fits",
    "sdss/spectra/spec-1931-53358-0251.fits",
    "sdss/spectra/spec-2577-54086-0091.fits",
    "harps/alfCenB_s1d/HARPS.2012-04-14T09_01_09.658_s1d_A.fits",
    "harps/alfCenB_s1d/HARPS.2012-05-31T00_20_46.272_s1d_A.fits",
]


@pytest.fixture(scope="session")
def fits_dir(tmp_path_factory, shared_data) -> Path:
    """A folder of copies of six real FITS files (read-only for the tests: never modify it)."""
    folder = tmp_path_factory.mktemp("archive_files")
    for rel in SOURCES:
        shutil.copyfile(shared_data / rel, folder / Path(rel).name)
    return folder


@pytest.fixture
def archive(fits_dir):
    """The loopback server serving ``fits_dir`` under /files/, stopped after the test."""
    with LocalServer(fits_dir) as server:
        yield server


def _plan(server: LocalServer, dest: Path, **kw) -> list[DownloadItem]:
    return [DownloadItem(path.name, url, dest / path.name, kind="fits", **kw) for url, path in server.files()]


@pytest.fixture
def plan():
    """``plan(server, dest, **item_fields)``: one FITS item per file the server serves, into ``dest``."""
    return _plan


@pytest.fixture
def assert_identical(fits_dir):
    """``assert_identical(items)``: every file in place, byte-identical to its source, no .part left."""

    def check(items) -> None:
        assert items
        for item in items:
            assert item.dest.is_file(), f"{item.dest} missing"
            assert item.dest.read_bytes() == (fits_dir / item.dest.name).read_bytes(), f"{item.dest} differs"
            assert not item.part.exists(), f"{item.part} left over"
        leftovers = [p for p in items[0].dest.parent.iterdir() if p.name.endswith(".part")]
        assert not leftovers, leftovers

    return check
