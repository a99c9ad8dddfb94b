"""Fixtures of the download tests: real FITS files served by the real loopback server."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from _support.data import shared_data_dir

from latentsky.archives.local.server import LocalServer
from latentsky.download import DownloadItem

# A mix of real files: a FIRST image (14 kB), a UKIDSS image (386 kB), small SDSS spectra and
# HARPS s1d spectra (~1.4 MB: several 256 kB chunks, room to resume).  From ../shared/data when
# present, else from the bundled sample (decompressed), so the tests run everywhere.
SHARED = {
    "image": "images/first/first_J105007+304037_astroquery_test.fits",
    "image2": "images/ukidss/ukidss_wfcam_K_TaurusAuriga_astroquery_test.fits",
    "spectrum": "sdss/spectra/spec-1931-53358-0251.fits",
    "spectrum2": "sdss/spectra/spec-2577-54086-0091.fits",
    "harps": "harps/alfCenB_s1d/HARPS.2012-04-14T09_01_09.658_s1d_A.fits",
    "harps2": "harps/alfCenB_s1d/HARPS.2012-05-31T00_20_46.272_s1d_A.fits",
}
SAMPLE = {
    "image": "images/first_J105007+304037_astroquery_test.fits",
    "image2": "images/ukidss_wfcam_K_TaurusAuriga_astroquery_test.fits.gz",
    "spectrum": "sdss/spSpec-51630-0266-638.fit.gz",
    "spectrum2": "harps/HARPS.2012-04-04T02_34_43.941_s1d_A.fits.gz",
    "harps": "harps/HARPS.2012-04-08T10_03_16.278_s1d_A.fits.gz",
    "harps2": "harps/HARPS.2012-05-31T00_20_46.272_s1d_A.fits.gz",
}


@pytest.fixture(scope="session")
def fits_files(tmp_path_factory) -> dict[str, Path]:
    """Six real FITS files copied into one folder, by role ("image", "spectrum", "harps"...).

    Never modify them: the download tests compare against these bytes.
    """
    from latentsky.data import sample_path

    folder = tmp_path_factory.mktemp("archive_files")
    shared = shared_data_dir()
    if shared is not None and not all((shared / name).is_file() for name in SHARED.values()):
        shared = None  # a partial copy: the bundled sample serves every test the same way
    out = {}
    for role in SHARED:
        if shared is not None:
            src = shared / SHARED[role]
            data = src.read_bytes()
        else:
            src = sample_path() / SAMPLE[role]
            data = gzip.decompress(src.read_bytes()) if src.suffix == ".gz" else src.read_bytes()
        path = folder / (src.name[:-3] if src.suffix == ".gz" else src.name)
        path.write_bytes(data)
        out[role] = path
    return out


@pytest.fixture(scope="session")
def fits_dir(fits_files) -> Path:
    """The folder of :func:`fits_files`."""
    return next(iter(fits_files.values())).parent


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
