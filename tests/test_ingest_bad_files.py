"""One bad file never stops ``latentsky ingest``: each is listed with its reason, the good ones are ingested."""

from __future__ import annotations

import gzip
import io
import shutil

import numpy as np
import pytest
from astropy.io import fits

from latentsky.cli import main
from latentsky.store import SpectrumStore


def _sdss(sample, k=3):
    return sorted((sample / "sdss").glob("spec-*.fits.gz"))[:k]


def _lowercase_tform(src, dest):
    """An SDSS spectrum whose SPECOBJ table has a TFORM in lower case ('6a'): astropy reads it."""
    raw = bytearray(gzip.decompress(src.read_bytes()))
    with fits.open(io.BytesIO(bytes(raw))) as hdul:
        start, stop = hdul.fileinfo(2)["hdrLoc"], hdul.fileinfo(2)["datLoc"]
    at = raw.find(b"TFORM1  = '", start, stop) + len(b"TFORM1  = '")
    raw[at : at + 2] = raw[at : at + 2].lower()
    dest.write_bytes(bytes(raw))


def _gzip_bomb(dest, n_bytes):
    """A gzip file of a valid FITS image of ``n_bytes`` zeros (a few kB compressed)."""
    buf = io.BytesIO()
    fits.PrimaryHDU(np.zeros(n_bytes // 4, dtype="f4")).writeto(buf)
    dest.write_bytes(gzip.compress(buf.getvalue()))


@pytest.fixture
def bad_folder(tmp_path, sample):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in _sdss(sample):
        shutil.copy(p, folder / p.name)
    good = _sdss(sample, 1)[0].read_bytes()
    corrupt = bytearray(good)
    corrupt[200:216] = b"\xff" * 16  # inside the deflate stream: zlib.error
    (folder / "corrupt.fits.gz").write_bytes(bytes(corrupt))
    _lowercase_tform(_sdss(sample, 1)[0], folder / "tform.fits")
    _gzip_bomb(folder / "bomb.fits.gz", 2 * 2**20)
    return folder


def test_cli_lists_every_bad_file_with_its_reason_and_ingests_the_rest(bad_folder, tmp_path, capsys, monkeypatch):
    import latentsky.io.readers as readers

    monkeypatch.setattr(readers, "MAX_GUNZIPPED_BYTES", 2**20, raising=False)
    out = tmp_path / "store"
    assert main(["ingest", str(bad_folder), "--out", str(out), "--pixels", "512"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "corrupt.fits.gz: corrupt gzip file" in err
    assert "bomb.fits.gz: decompresses to more than 1 MiB" in err
    store = SpectrumStore(out)
    ids = set(store.catalog["id"])
    assert {p.name.removesuffix(".fits.gz") for p in bad_folder.glob("spec-*")} <= ids
    # the table whose TFORM the reader did not expect: read, or listed by name; never a crash
    assert ("tform" in ids) != ("tform.fits: " in err)
    assert len(store) == 3 + ("tform" in ids)


def test_files_gone_or_unreadable_after_listing_are_reported(tmp_path, sample):
    from latentsky.ingest import ingest

    folder = tmp_path / "in"
    folder.mkdir()
    files = _sdss(sample, 4)
    for p in files:
        shutil.copy(p, folder / p.name)
    gone, unreadable = folder / files[2].name, folder / files[3].name

    def sabotage(event):  # after the files are listed, before the last ones are read
        if event.done == 1 and gone.exists():
            gone.unlink()
            unreadable.unlink()
            unreadable.mkdir()

    result = ingest([folder], tmp_path / "store", progress=sabotage)
    assert result.n_spectra == 2
    reasons = {e.path.rsplit("/", 1)[-1]: e.problem for e in result.errors}
    assert reasons.keys() == {gone.name, unreadable.name}
    assert "No such file" in reasons[gone.name] and "directory" in reasons[unreadable.name].lower()
