"""latentsky ingest on the bundled real spectra: the store, its values, idempotence and bad input."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
from astropy.io import fits

from latentsky.cli import main
from latentsky.exceptions import LatentskyError
from latentsky.ingest import CATALOG_COLUMNS, ingest
from latentsky.io.grid import LogLambdaGrid
from latentsky.store import SpectrumStore


def test_store_holds_every_sample_spectrum_with_its_catalog(sample_store, sample):
    cat = sample_store.catalog
    assert len(cat) == len(sample_store) == 125
    assert set(CATALOG_COLUMNS) <= set(cat.columns)
    assert sample_store.flux.shape == sample_store.weight.shape == (125, 4096)
    assert sample_store.flux.dtype == np.float32
    assert (cat["row"].to_numpy() == np.arange(125)).all()
    counts = cat["object"].value_counts()
    assert counts["HD128621"] == 24  # alpha Cen B, 24 nights
    assert counts.iloc[1] == 8  # the SDSS-RM quasar RM017 observed 8 times, under one name
    # repeats share a name only when within 2 arcsec (one AGN is QSO on one plate, GALAXY on another: kept)
    for name, rows in cat[cat["object"].str.startswith("SDSS J")].groupby("object"):
        assert np.ptp(rows["ra"]) * np.cos(np.radians(rows["dec"].iloc[0])) * 3600 < 2.0, name
        assert np.ptp(rows["dec"]) * 3600 < 2.0, name
    assert (counts > 1).sum() == 20  # 19 SDSS objects observed more than once, and alpha Cen B
    assert set(cat["spec_class"]) == {"STAR", "GALAXY", "QSO"}


def test_catalog_values_match_the_fits_headers(sample_store):
    cat = sample_store.catalog.set_index("id")
    row = cat.loc["HARPS.2012-05-31T00_20_46.272_s1d_A"]
    header = fits.getheader(row["path"])
    assert row["object"] == header["OBJECT"]
    assert row["mjd"] == pytest.approx(header["MJD-OBS"])
    assert row["ra"] == pytest.approx(header["RA"]) and row["dec"] == pytest.approx(header["DEC"])
    assert row["exptime"] == pytest.approx(header["EXPTIME"])
    assert row["snr"] == pytest.approx(header["HIERARCH ESO DRS SPE EXT SN50"])
    n = header["NAXIS1"]
    assert row["wave_min"] == pytest.approx(header["CRVAL1"] * 1.000278, rel=2e-5)  # air -> vacuum
    assert row["wave_max"] == pytest.approx((header["CRVAL1"] + (n - 1) * header["CDELT1"]) * 1.000278, rel=2e-5)
    with open(row["path"], "rb") as fh:
        assert row["sha256"] == hashlib.sha256(fh.read()).hexdigest()
    sdss = cat.loc["spec-0266-51602-0013"]
    assert sdss["spec_class"] == "GALAXY" and sdss["redshift"] == pytest.approx(0.121316, abs=1e-5)


def test_fluxes_are_normalised_by_product_and_masked_off_coverage(sample_store):
    """``auto``: flux-calibrated SDSS spectra keep their continuum's shape (divided by the median);
    HARPS relative flux is divided by its local continuum (an upper envelope: the lines stay below 1)."""
    flux, weight, wave = sample_store.flux[:], sample_store.weight[:], sample_store.wave
    cat = sample_store.catalog
    harps = (cat["instrument"] == "HARPS").to_numpy()
    for i in range(len(cat)):
        good = weight[i] > 0
        assert np.all(flux[i][~good] == 0)
        if harps[i]:
            assert np.percentile(flux[i][good], 80) == pytest.approx(1.0, abs=0.03)
            assert np.median(flux[i][good]) < 0.99
        else:
            assert np.median(flux[i][good]) == pytest.approx(1.0, abs=1e-6)
    covered = weight[np.flatnonzero(harps)] > 0
    assert not covered[:, wave < 4990].any() and not covered[:, wave > 6010].any()
    assert np.log(wave[1] / wave[0]) == pytest.approx(np.log(wave[-1] / wave[-2]))
    assert sample_store.attrs["normalisation"] == "auto"
    lineage = sample_store.lineage
    assert lineage["step"] == "ingest" and len(lineage["inputs"]["files"]) == 125


def test_rerun_is_a_no_op_and_changed_settings_rewrite(tmp_path, sample):
    files = sorted((sample / "harps").glob("*.fits.gz"))[:4]
    out = tmp_path / "store"
    first = ingest(files, out)
    stamp = (out / "catalog.parquet").stat().st_mtime_ns
    again = ingest(files, out)
    assert again.up_to_date and again.n_spectra == first.n_spectra == 4
    assert (out / "catalog.parquet").stat().st_mtime_ns == stamp
    other = ingest(files, out, normalisation="none")
    assert not other.up_to_date
    assert SpectrumStore(out).attrs["normalisation"] == "none"
    assert [p.name for p in tmp_path.iterdir()] == ["store"]  # no temporary folder left


def test_bad_files_are_reported_and_the_others_ingested(tmp_path, sample):
    good = sorted((sample / "sdss").glob("spec-*.fits.gz"))[:3]
    folder = tmp_path / "in"
    folder.mkdir()
    for p in good:
        shutil.copy(p, folder / p.name)
    (folder / "login.fits").write_text("<html><body>Please log in</body></html>")
    (folder / "cut.fits").write_bytes((folder / good[0].name).read_bytes()[:5000])
    result = ingest([folder], tmp_path / "store")
    assert result.n_spectra == 3
    named = sorted(e.path.rsplit("/", 1)[-1] for e in result.errors)
    assert named == ["cut.fits", "login.fits"]
    assert len(SpectrumStore(tmp_path / "store")) == 3


def test_failed_ingest_leaves_an_existing_store_untouched(tmp_path, sample):
    files = sorted((sample / "harps").glob("*.fits.gz"))[:2]
    out = tmp_path / "store"
    ingest(files, out)
    before = SpectrumStore(out).catalog
    with pytest.raises(LatentskyError, match="none of the 2 files could be read"):
        ingest(files, out, grid=LogLambdaGrid(8000.0, 9000.0, 512))  # misses the HARPS window
    after = SpectrumStore(out).catalog
    assert after.equals(before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_cli_ingest_reports_bad_files_by_name(tmp_path, sample, capsys):
    src = sorted((sample / "harps").glob("*.fits.gz"))[0]
    bad = tmp_path / "broken.fits"
    bad.write_bytes(b"SIMPLE  =                    T" + b" " * 50)
    status = main(["ingest", str(src), str(bad), "--out", str(tmp_path / "store"), "--pixels", "512"])
    captured = capsys.readouterr()
    assert status == 1
    assert "broken.fits" in captured.err
    assert len(SpectrumStore(tmp_path / "store")) == 1
    assert main(["ingest", str(tmp_path / "missing"), "--out", str(tmp_path / "s2")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_ingest_reports_progress_events(tmp_path, sample):
    files = sorted((sample / "sdss").glob("spec-*.fits.gz"))[:5]
    events = []
    ingest(files, tmp_path / "store", progress=events.append)
    assert {e.task for e in events} == {"ingest"}
    assert events[0].total == 5 and events[0].done == 0
    assert [e.done for e in events if not e.finished] == [0, 1, 2, 3, 4, 5]
    assert events[-1].finished and events[-1].done == 5 and events[-1].unit == "spectra"


def test_cli_grid_by_velocity_step(tmp_path, sample):
    src = sorted((sample / "harps").glob("*.fits.gz"))[0]
    out = tmp_path / "store"
    assert (
        main(["ingest", str(src), "--out", str(out), "--wave-min", "5000", "--wave-max", "6000", "--step-kms", "20"])
        == 0
    )
    wave = SpectrumStore(out).wave
    assert (wave[1] / wave[0] - 1) * 299792.458 == pytest.approx(20.0, rel=1e-6)
    assert main(["ingest", str(src), "--out", str(out), "--step-kms", "-1"]) == 2


def test_catalog_columns_reads_only_what_is_asked(sample_store):
    from latentsky.store import SpectrumStore

    fresh = SpectrumStore(sample_store.path)  # nothing cached: read from the Parquet file
    part = fresh.catalog_columns(["id", "object", "no_such_column"])
    assert list(part.columns) == ["id", "object"] and fresh._catalog is None
    assert part.equals(sample_store.catalog[["id", "object"]])
