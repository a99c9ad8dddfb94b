"""FITS readers on real files: values checked against the headers and data themselves."""

from __future__ import annotations

import csv
import gzip
import shutil

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits

from latentsky.exceptions import SpectrumError
from latentsky.io.grid import LogLambdaGrid, normalise, resample
from latentsky.io.readers import air_to_vacuum, read_spectrum

ALF_CEN_B = "harps/HARPS.2012-04-08T10_03_16.278_s1d_A.fits.gz"


def test_air_to_vacuum_matches_the_sodium_d2_line():
    # Na D2: 5889.950 A in air, 5891.583 A in vacuum (NIST)
    assert air_to_vacuum(np.array([5889.950]))[0] == pytest.approx(5891.583, abs=0.003)


def test_harps_s1d_values_come_from_header_and_data(sample):
    path = sample / ALF_CEN_B
    spectrum = read_spectrum(path)
    header = fits.getheader(path)
    data = fits.getdata(path)
    assert spectrum.meta["format"] == "harps_s1d"
    assert spectrum.meta["object"] == header["OBJECT"] == "HD128621"
    assert spectrum.meta["mjd"] == header["MJD-OBS"]
    assert spectrum.meta["snr"] == pytest.approx(487.7)
    assert spectrum.wave.unit == u.AA
    wave_air = header["CRVAL1"] + header["CDELT1"] * np.arange(data.size)
    np.testing.assert_allclose(spectrum.wave.value, air_to_vacuum(wave_air))
    assert spectrum.wave.value[0] > wave_air[0]  # vacuum wavelengths are longer
    np.testing.assert_allclose(np.median(spectrum.flux.value), np.median(data), rtol=1e-6)


def test_sdss_class_and_redshift_come_from_the_file(sample):
    with open(sample / "sdss" / "labels.csv") as fh:
        labels = list(csv.DictReader(fh))
    assert len(labels) == 99
    for row in labels:
        spectrum = read_spectrum(sample / "sdss" / row["file"])
        assert spectrum.meta["spec_class"] == row["class"], row["file"]
        assert spectrum.meta["redshift"] == pytest.approx(float(row["z"]), abs=1e-5), row["file"]
        assert spectrum.meta["ra"] == pytest.approx(float(row["ra"]), abs=1e-4), row["file"]


def test_sdss_spec_reader_uses_loglam_flux_ivar(sample):
    path = sample / "sdss" / "spec-0266-51602-0013.fits.gz"
    spectrum = read_spectrum(path)
    coadd = fits.getdata(path, "COADD")
    np.testing.assert_allclose(spectrum.wave.value, 10 ** coadd["loglam"].astype("f8"))
    assert spectrum.flux.unit.is_equivalent(u.erg / u.s / u.cm**2 / u.AA)
    np.testing.assert_allclose(np.median(spectrum.flux.value), np.median(coadd["flux"]), rtol=1e-6)
    assert spectrum.meta["format"] == "sdss_spec"
    assert spectrum.meta["instrument"] == "SDSS"


def test_sdss_dr7_spspec_reader(sample):
    path = sample / "sdss" / "spSpec-51984-0296-002.fit.gz"
    spectrum = read_spectrum(path)
    header = fits.getheader(path)
    assert spectrum.meta["format"] == "sdss_spspec"
    assert spectrum.meta["spec_class"] == "GALAXY" and header["SPEC_CLN"] == 2
    assert spectrum.meta["redshift"] == pytest.approx(header["Z"])
    assert spectrum.wave.value[0] == pytest.approx(10 ** header["COEFF0"])


def _sdss_with_and_mask(sample, tmp_path, mask_value: int, name: str):
    """A real sample spec file whose coadd ``and_mask`` is set to ``mask_value`` on every pixel."""
    with fits.open(sample / "sdss" / "spec-0266-51602-0013.fits.gz") as hdul:
        hdul[1].data["and_mask"][:] = mask_value
        path = tmp_path / name
        hdul.writeto(path)
    return path


def test_sdss_warning_bits_keep_the_pixel_and_unusable_bits_mask_it(sample, tmp_path):
    """ivar is the weight; only the SPPIXMASK bits that make a pixel unusable mask it."""
    from latentsky.io.sdss import SPPIXMASK

    ivar = fits.getdata(sample / "sdss" / "spec-0266-51602-0013.fits.gz", "COADD")["ivar"].astype("f8")
    warned = read_spectrum(
        _sdss_with_and_mask(sample, tmp_path, (1 << SPPIXMASK["BADFLAT"]) | (1 << SPPIXMASK["LOWFLAT"]), "badflat.fits")
    )
    assert (ivar > 0).mean() > 0.9
    np.testing.assert_array_equal(warned.ivar, ivar)  # BADFLAT, LOWFLAT: warnings, kept with their ivar
    for bit in ("BRIGHTSKY", "NODATA", "NOPLUG"):
        with pytest.raises(SpectrumError, match="no usable pixel"):
            read_spectrum(_sdss_with_and_mask(sample, tmp_path, 1 << SPPIXMASK[bit], f"{bit}.fits"))


def test_sdss_dr16_file_without_extension_names(shared_data):
    """DR16 spec-lite files written by MWRFITS: unnamed HDUs, upper-case columns.  This real
    quasar also has BADFLAT (low fibre-flat counts) on 99.7% of its pixels with positive ivar."""
    path = shared_data / "sdss_more" / "spec-3655-55240-0258.fits"
    with fits.open(path) as hdul:
        assert [h.name for h in hdul[1:]] == ["", "", ""] and "LOGLAM" in hdul[1].columns.names
        catalogue = hdul[2].data[0]
        ivar = hdul[1].data["IVAR"]
    spectrum = read_spectrum(path)
    assert spectrum.meta["spec_class"] == catalogue["CLASS"].strip() == "QSO"
    assert spectrum.meta["redshift"] == pytest.approx(catalogue["Z"])
    assert spectrum.meta["ra"] == pytest.approx(catalogue["PLUG_RA"])
    assert (spectrum.ivar > 0).mean() > 0.95 * (ivar > 0).mean()


def test_reader_is_chosen_from_the_header_not_the_name(sample, tmp_path):
    misleading = tmp_path / "HARPS.2012-01-01T00_00_00.000_s1d_A.fits"
    misleading.write_bytes(gzip.decompress((sample / "sdss" / "spec-0266-51602-0013.fits.gz").read_bytes()))
    assert read_spectrum(misleading).meta["format"] == "sdss_spec"


def test_eso_phase3_binary_table(sample, tmp_path):
    """An ESO Phase-3 (ADP) 1-D spectrum: one row of WAVE/FLUX/ERR arrays, built from a real HARPS s1d."""
    s1d = read_spectrum(sample / ALF_CEN_B)
    header = fits.getheader(sample / ALF_CEN_B)
    wave_air = header["CRVAL1"] + header["CDELT1"] * np.arange(s1d.flux.size)
    flux = s1d.flux.value
    err = np.sqrt(np.abs(flux)) + 1
    cols = [
        fits.Column(name=n, format=f"{flux.size}D", array=[a], unit=un)
        for n, a, un in (("WAVE", wave_air, "angstrom"), ("FLUX", flux, "adu"), ("ERR", err, "adu"))
    ]
    primary = fits.PrimaryHDU()
    for key in ("INSTRUME", "OBJECT", "RA", "DEC", "MJD-OBS", "EXPTIME"):
        primary.header[key] = header[key]
    primary.header["PRODCATG"] = "SCIENCE.SPECTRUM"
    primary.header["SNR"] = 487.7
    path = tmp_path / "ADP.2014-09-23T11_04_33.123.fits"  # a Phase-3 product name
    fits.HDUList([primary, fits.BinTableHDU.from_columns(cols, name="SPECTRUM")]).writeto(path)
    spectrum = read_spectrum(path)
    assert spectrum.meta["format"] == "eso_phase3"
    assert spectrum.meta["object"] == "HD128621"
    np.testing.assert_allclose(spectrum.wave.value, s1d.wave.value)
    good = spectrum.ivar > 0
    np.testing.assert_allclose(spectrum.ivar[good], 1 / err[good] ** 2)


def test_harps_e2ds_agrees_with_the_s1d_of_the_same_exposure(shared_data):
    folder = shared_data / "harps" / "actin_testfiles"
    s1d = read_spectrum(folder / "HARPS.2003-12-13T06_19_48.371_s1d_A.fits")
    e2ds = read_spectrum(folder / "HARPS.2003-12-13T06_19_48.371_e2ds_A.fits")
    assert e2ds.meta["blaze_corrected"] is True
    assert e2ds.meta["object"] == s1d.meta["object"] == "Gl273"
    assert len(e2ds.segments) == 72
    # the 2003 s1d is clean around Na D (elsewhere it holds runs of DRS garbage); compare there
    grid = LogLambdaGrid(5880.0, 5910.0, 1500)
    f1, i1 = normalise(*resample(s1d, grid), "median")
    f2, i2 = normalise(*resample(e2ds, grid), "median")
    both = (i1 > 0) & (i2 > 0)
    assert both.mean() > 0.95
    assert np.corrcoef(f1[both], f2[both])[0, 1] > 0.99
    assert np.median(np.abs(f1[both] / f2[both] - 1)) < 0.03
    # no shift between them: the e2ds reader applied the barycentric correction the s1d carries
    a, b = f1 - f1[both].mean(), f2 - f2[both].mean()
    lags = np.arange(-10, 11)
    cc = [np.sum((a * both)[10:-10] * np.roll(b * both, k)[10:-10]) for k in lags]
    assert lags[int(np.argmax(cc))] == 0


def test_e2ds_without_its_blaze_file_is_normalised_order_by_order(shared_data, tmp_path):
    """As e2ds files usually travel: no blaze file.  Each order is divided by its own continuum, so
    the merged spectrum has no blaze left; after the ``local`` normalisation that relative flux gets
    on the grid, it agrees with the s1d of the same exposure and with the blaze-corrected e2ds."""
    folder = shared_data / "harps" / "actin_testfiles"
    src = folder / "HARPS.2003-12-13T06_19_48.371_e2ds_A.fits"
    shutil.copy(src, tmp_path / src.name)
    alone = read_spectrum(tmp_path / src.name)
    assert alone.meta["blaze_corrected"] is False and alone.meta["orders_continuum_normalised"] is True
    assert alone.meta["flux_calibrated"] is False
    for seg in alone.segments[10:60:10]:  # continuum ~1 along each order: no blaze left
        f = alone.flux.value[seg][alone.ivar[seg] > 0]
        thirds = np.array_split(f, 3)
        assert [np.percentile(t, 90) for t in thirds] == pytest.approx([1.0] * 3, abs=0.1)
    grid = LogLambdaGrid()
    on_grid = [
        normalise(*resample(s, grid), "local", grid=grid)
        for s in (read_spectrum(folder / "HARPS.2003-12-13T06_19_48.371_s1d_A.fits"), alone, read_spectrum(src))
    ]

    def distance(a, b):
        both = (a[1] > 0) & (b[1] > 0)
        return np.median(np.abs(a[0][both] / b[0][both] - 1)), both.sum()

    s1d_vs_alone, n = distance(on_grid[0], on_grid[1])
    assert n > 2000 and s1d_vs_alone < 0.01
    assert distance(on_grid[2], on_grid[1])[0] < 0.01


def _s1d_copy(sample, tmp_path, name="bad_s1d.fits", mutate=None):
    with fits.open(sample / ALF_CEN_B) as hdul:
        data = hdul[0].data.copy()
        header = hdul[0].header.copy()
    if mutate:
        data, header = mutate(data, header)
    path = tmp_path / name
    fits.PrimaryHDU(data, header).writeto(path)
    return path


def _not_fits(sample, tmp_path):
    path = tmp_path / "notes.fits"
    path.write_text("RA,DEC\n10.0,20.0\n")
    return path


def _html_page(sample, tmp_path):
    path = tmp_path / "ADP.2020-01-01T00_00_00.000.fits"
    path.write_text("<!DOCTYPE html><html><head><title>ESO User Portal - Login</title></head></html>")
    return path


def _truncated(sample, tmp_path):
    raw = gzip.decompress((sample / ALF_CEN_B).read_bytes())
    path = tmp_path / "truncated_s1d_A.fits"
    path.write_bytes(raw[: len(raw) // 2])
    return path


def _image(sample, tmp_path):
    path = tmp_path / "cutout.fits"
    fits.PrimaryHDU(np.ones((28, 28), dtype="f4")).writeto(path)
    return path


def _all_nan(sample, tmp_path):
    return _s1d_copy(sample, tmp_path, mutate=lambda d, h: (np.full_like(d, np.nan), h))


def _empty(sample, tmp_path):
    return _s1d_copy(sample, tmp_path, mutate=lambda d, h: (d[:0], h))


def _decreasing(sample, tmp_path):
    def flip(d, h):
        h["CDELT1"] = -h["CDELT1"]
        return d, h

    return _s1d_copy(sample, tmp_path, mutate=flip)


@pytest.mark.parametrize(
    "make, message",
    [
        (_not_fits, "not a FITS file"),
        (_html_page, "not a FITS file"),
        (_truncated, "truncated or corrupt FITS file"),
        (_image, "holds no spectrum"),
        (_all_nan, "no usable pixel"),
        (_empty, "empty"),
        (_decreasing, "not increasing"),
    ],
)
def test_bad_input_gets_an_error_naming_the_file(make, message, sample, tmp_path):
    path = make(sample, tmp_path)
    with pytest.raises(SpectrumError, match=message) as info:
        read_spectrum(path)
    assert str(path) in str(info.value)


def test_harps_ccf_product_is_not_taken_for_a_spectrum(shared_data):
    path = shared_data / "harps" / "actin_testfiles" / "HARPS.2003-12-13T06_19_48.371_ccf_M2_A.fits"
    with pytest.raises(SpectrumError, match="holds no spectrum") as info:
        read_spectrum(path)
    assert path.name in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(SpectrumError, match="no such file"):
        read_spectrum(tmp_path / "nothing.fits")
