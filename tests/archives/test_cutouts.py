"""Cutouts from the local archive's real FIRST and UKIDSS images into one Zarr array + Parquet index."""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.table import Table
from astropy.wcs import WCS

from _support.archives import DATA, settled_log
from latentsky.archives.cutouts import fetch_cutouts, hips2fits_params, open_cutouts
from latentsky.exceptions import LatentskyError

pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")

FIRST = DATA / "images" / "first_J105007+304037_astroquery_test.fits"
UKIDSS = DATA / "images" / "ukidss_wfcam_K_TaurusAuriga_astroquery_test.fits.gz"
BANDS = ["FIRST", "UKIDSS-K", "SDSS-r"]


def centre(path, hdu):
    with fits.open(path) as hdul:
        h = hdul[hdu].header
        w = WCS(h).celestial
        return w.pixel_to_world((h["NAXIS1"] - 1) / 2, (h["NAXIS2"] - 1) / 2).icrs


@pytest.fixture
def targets():
    first, ukidss = centre(FIRST, 0), centre(UKIDSS, 1)
    return Table({"name": ["J105007+304037", "TaurusAuriga", "empty"],
                  "ra": [first.ra.deg, ukidss.ra.deg, 146.7142], "dec": [first.dec.deg, ukidss.dec.deg, -1.0413]})


def hips_requests(archive):
    return [r for r in settled_log(archive.server) if r.path == "/hips2fits"]


def test_store_layout_statuses_and_pixels(images, targets, tmp_path):
    result = fetch_cutouts(targets, tmp_path / "cut", bands=BANDS, size=28)
    cube, index = open_cutouts(tmp_path / "cut")
    assert cube.shape == (3, 3, 28, 28) and cube.dtype == np.float32
    assert list(index["name"]) == list(targets["name"])
    assert list(index["status_FIRST"]) == ["ok", "off_footprint", "off_footprint"]
    assert list(index["status_UKIDSS-K"]) == ["off_footprint", "ok", "off_footprint"]
    assert set(index["status_SDSS-r"]) == {"off_footprint"}  # no SDSS images in this archive
    assert result.counts == {"pending": 0, "ok": 2, "off_footprint": 7, "error": 0} and result.complete
    assert np.isnan(cube[2]).all() and np.isfinite(cube[0, 0]).all()
    assert index["coverage_FIRST"][0] == 1.0 and index["coverage_FIRST"][1] == 0.0
    # the FIRST cutout is the source image around the target, resampled at its native 1.8 arcsec/pixel
    with fits.open(FIRST) as hdul:
        data, wcs = hdul[0].data.squeeze(), WCS(hdul[0].header).celestial
    reference = Cutout2D(data, SkyCoord(targets["ra"][0], targets["dec"][0], unit="deg"), (28, 28), wcs=wcs).data
    assert np.corrcoef(cube[0, 0].ravel(), reference.ravel())[0, 1] > 0.95
    assert abs(np.nanmax(cube[0, 0]) - data.max()) < 0.1 * data.max()


def test_rerun_sends_nothing_and_off_footprint_is_final(images, targets, tmp_path):
    fetch_cutouts(targets, tmp_path, bands=BANDS)
    before = len(hips_requests(images))
    result = fetch_cutouts(targets, tmp_path, bands=BANDS)
    assert len(hips_requests(images)) == before == 9
    assert result.counts["off_footprint"] == 7


def test_errors_are_bounded_recorded_and_resumed(images, targets, tmp_path):
    images.server.fail_first("/hips2fits", 100, "503")
    first = fetch_cutouts(targets[:1], tmp_path, bands=["FIRST"], max_attempts=2)
    assert first.counts["error"] == 1 and len(first.errors) == 1
    assert first.errors["attempts"][0] == 2 and "HTTP 503" in first.errors["error"][0]
    assert len(hips_requests(images)) == 2
    # the same limit again: the error is final, nothing is sent
    fetch_cutouts(targets[:1], tmp_path, bands=["FIRST"], max_attempts=2)
    assert len(hips_requests(images)) == 2
    # the archive recovers and a larger budget finishes the job
    images.server.clear()
    done = fetch_cutouts(targets[:1], tmp_path, bands=["FIRST"], max_attempts=4)
    assert done.complete and done.counts["ok"] == 1


def test_html_instead_of_fits_is_an_error_then_retried(images, targets, tmp_path):
    images.server.fail_first("/hips2fits", 1, "html")
    result = fetch_cutouts(targets[:1], tmp_path, bands=["FIRST"], max_attempts=3)
    assert result.counts["ok"] == 1
    _, index = open_cutouts(tmp_path)
    assert index["attempts_FIRST"][0] == 2


def test_other_targets_in_the_same_folder_are_refused(images, targets, tmp_path):
    fetch_cutouts(targets, tmp_path, bands=["FIRST"])
    with pytest.raises(LatentskyError, match="other targets"):
        fetch_cutouts(targets[:2], tmp_path, bands=["FIRST"])


@pytest.mark.parametrize("kwargs, parameter", [
    ({"bands": ["HUBBLE-XX"]}, "bands"), ({"size": 0}, "size"), ({"pixel_scale": -1.0}, "pixel_scale"),
])
def test_bad_arguments_name_the_parameter(images, targets, tmp_path, kwargs, parameter):
    with pytest.raises(LatentskyError, match=parameter):
        fetch_cutouts(targets, tmp_path, **kwargs)


def test_native_cutout_endpoint_is_the_source_pixels(images):
    """/cutout/{survey} cuts the real image with its WCS: the pixels are the source's, unchanged."""
    c = centre(UKIDSS, 1)
    r = requests.get(f"{images.base_url}/cutout/UKIDSS-K", params={"ra": c.ra.deg, "dec": c.dec.deg, "size": 11},
                     timeout=10)
    assert r.status_code == 200 and r.content.startswith(b"SIMPLE")
    with fits.open(io.BytesIO(r.content)) as got, fits.open(UKIDSS) as src:
        reference = Cutout2D(src[1].data, c, (11, 11), wcs=WCS(src[1].header).celestial)
        np.testing.assert_array_equal(got[0].data, reference.data.astype(np.float32))
        back = WCS(got[0].header).celestial.pixel_to_world(5, 5)
        assert back.separation(c).arcsec < 1.0
    off = requests.get(f"{images.base_url}/cutout/UKIDSS-K", params={"ra": 10, "dec": 10, "size": 11}, timeout=10)
    assert off.status_code == 404 and "outside the footprint" in off.text


def test_hips2fits_parameters():
    p = hips2fits_params("CDS/P/SDSS9/r", 10.5, -3.25, 28, 0.396)
    assert (p["width"], p["height"], p["projection"], p["format"]) == (28, 28, "TAN", "fits")
    assert float(p["fov"]) == pytest.approx(28 * 0.396 / 3600)
