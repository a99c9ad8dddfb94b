"""The folder scan behind ``latentsky archive serve``: a bad file is reported, not fatal; only the folder is served."""

from __future__ import annotations

import gzip
import os
import socket
import warnings

import pytest
from astropy.io import fits

from latentsky.archives.local import catalog
from latentsky.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")


@pytest.fixture
def spectra(sample, tmp_path):
    """A folder with two real SDSS spectra from the sample, one of them stripped of its MJD."""
    folder = tmp_path / "archive"
    folder.mkdir()
    sources = sorted((sample / "sdss").glob("spec-*.fits.gz"))[:2]
    for src in sources:
        (folder / src.name[:-3]).write_bytes(gzip.decompress(src.read_bytes()))
    broken = folder / sources[1].name[:-3]
    with fits.open(broken, mode="update") as hdul:
        del hdul[0].header["MJD"]
    return folder, folder / sources[0].name[:-3], broken


def test_a_spectrum_without_mjd_is_skipped_and_reported(spectra, tmp_path, capsys):
    folder, good, broken = spectra
    cat = catalog.scan(folder)
    assert list(cat.specobj["filename"]) == [good.name]
    assert cat.skipped == [(broken.name, "ValueError: an SDSS spectrum without MJD in its primary header")]


def test_a_link_out_of_the_folder_is_not_catalogued(spectra, tmp_path):
    folder, good, _ = spectra
    outside = tmp_path / "elsewhere.fits"
    outside.write_bytes(good.read_bytes())
    os.symlink(outside, folder / "link.fits")
    cat = catalog.scan(folder)
    assert "link.fits" not in list(cat.specobj["filename"])
    assert ("link.fits", "a symbolic link to a file outside the folder") in cat.skipped
    with pytest.raises(ValueError, match="outside the archive folder"):
        cat.path_of("../elsewhere.fits")


def test_serve_on_a_port_in_use_is_one_line(spectra, capsys):
    folder, _, _ = spectra
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["archive", "serve", str(folder), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err


def test_the_first_row_read_from_bytes_is_astropys(sample):
    wanted = ("SPECOBJID", "Z", "CLASS", "SUBCLASS", "RUN2D", "INSTRUMENT", "PLUG_RA", "PLUG_DEC")
    files = sorted((sample / "sdss").glob("spec-*.fits.gz"))
    checked = 0
    for path in files[:: max(1, len(files) // 4)]:
        with warnings.catch_warnings(), fits.open(path) as hdul:
            warnings.simplefilter("ignore")
            name = next(n for n in ("SPECOBJ", "SPALL") if n in hdul)
            fast, slow = catalog.first_row(hdul, name, wanted), catalog._first_row_astropy(hdul, name, wanted)
        assert fast.keys() == slow.keys()
        for key, value in slow.items():
            if isinstance(value, str):
                assert fast[key].strip() == value.strip()
            else:
                assert fast[key] == value
        checked += 1
    assert checked >= 4
