"""Image cutouts beside the tapped spectrum: fetched from the local archive's real FIRST and UKIDSS images,
or read from a cutout store written by ``fetch_cutouts``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.wcs import WCS

pytest.importorskip("panel")

from latentsky.data import sample_path  # noqa: E402
from latentsky.ui.cutouts import Cutouts  # noqa: E402
from latentsky.ui.data import LatentData  # noqa: E402
from latentsky.ui.explore import Explore  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")

IMAGES = sample_path() / "images"
FIRST = IMAGES / "first_J105007+304037_astroquery_test.fits"
UKIDSS = IMAGES / "ukidss_wfcam_K_TaurusAuriga_astroquery_test.fits.gz"


def centre(path, hdu):
    with fits.open(path) as hdul:
        h = hdul[hdu].header
        return WCS(h).celestial.pixel_to_world((h["NAXIS1"] - 1) / 2, (h["NAXIS2"] - 1) / 2).icrs


@pytest.fixture
def targets():
    """Three rows of a latent table: on the FIRST image, on the UKIDSS image, on no image."""
    first, ukidss = centre(FIRST, 0), centre(UKIDSS, 1)
    return pd.DataFrame(
        {
            "id": ["on-first", "on-ukidss", "nowhere"],
            "x": [0.0, 1.0, 2.0],
            "y": [0.0, 1.0, 0.0],
            "ra": [first.ra.deg, ukidss.ra.deg, 146.7142],
            "dec": [first.dec.deg, ukidss.dec.deg, -1.0413],
        }
    )


def hips_requests(archive):
    archive.server.wait_idle()
    return [r for r in archive.server.log if r.path == "/hips2fits"]


def test_tap_shows_the_cutouts_of_the_surveys_covering_the_position(local, targets):
    ex = Explore(LatentData(targets, label="three", cutouts=Cutouts(size=28)))
    ex.tap(0.0, 0.0)
    ex.wait_cutouts()
    assert ex.cutout_status == "image cutouts: FIRST"
    layout = ex._cutout_pane.object
    (panel,) = layout.values()
    # the FIRST pixels around the target, resampled at FIRST's 1.8 arcsec/pixel, south row first as in FITS
    # (dimension_values gives an image's rows bottom up), east on the left
    with fits.open(FIRST) as hdul:
        data, wcs = hdul[0].data.squeeze(), WCS(hdul[0].header).celestial
    reference = Cutout2D(data, SkyCoord(targets["ra"][0], targets["dec"][0], unit="deg"), (28, 28), wcs=wcs).data
    shown = panel.dimension_values(2, flat=False)
    assert shown.shape == (28, 28)
    assert np.corrcoef(shown.ravel(), reference.ravel())[0, 1] > 0.95
    assert panel.bounds.lbrt() == pytest.approx((-25.2, -25.2, 25.2, 25.2))
    import holoviews as hv

    assert hv.render(layout, backend="bokeh") is not None

    ex.tap(1.0, 1.0)
    ex.wait_cutouts()
    assert ex.cutout_status == "image cutouts: UKIDSS-K"
    ex.tap(2.0, 0.0)
    ex.wait_cutouts()
    assert ex.cutout_status == "no image cutout at this position" and ex._cutout_pane.object is None


def test_a_position_is_fetched_once_per_session(local, targets):
    data = LatentData(targets, cutouts=Cutouts(bands=("FIRST",), size=16))
    local.server.clear()
    assert [c.band for c in data.images(0)] == ["FIRST"]
    assert [c.band for c in data.images(0)] == ["FIRST"]
    assert len(hips_requests(local)) == 1


def test_results_with_a_cutout_store_read_it_without_the_network(local, targets, tmp_path):
    from astropy.table import Table

    from latentsky.archives.cutouts import fetch_cutouts

    targets.to_parquet(tmp_path / "latent.parquet")
    fetch_cutouts(
        Table.from_pandas(targets[["id", "ra", "dec"]]), tmp_path / "cutouts", bands=["FIRST", "UKIDSS-K"], size=20
    )
    data = LatentData.from_pipeline(tmp_path)
    local.server.clear()
    got = [[c.band for c in data.images(i)] for i in range(3)]
    assert got == [["FIRST"], ["UKIDSS-K"], []]
    assert data.images(1)[0].image.shape == (20, 20)
    assert hips_requests(local) == []


def test_offline_with_no_local_archive_says_there_is_no_cutout(targets):
    # conf.offline with the real hips2fits URL: refused at once, no waiting on the network
    ex = Explore(LatentData(targets, cutouts=Cutouts()))
    ex.tap(0.0, 0.0)
    ex.wait_cutouts(10)
    assert ex.cutout_status == "no image cutout at this position"


def test_unknown_band_is_named():
    with pytest.raises(ValueError, match="'FIRTS'"):
        Cutouts(bands=("FIRTS",))
