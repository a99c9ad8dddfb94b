"""The SkyView client: astroquery.skyview against recorded SkyView pages and the local archive's SkyView."""

from __future__ import annotations

import numpy as np
import pytest
from _support.archives import DATA, settled_log
from astropy.io import fits

from latentsky.archives.local.server import Response
from latentsky.archives.skyview import skyview
from latentsky.config import conf
from latentsky.exceptions import ArchiveError, CoordinateError

pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")


def test_recorded_skyview_pages_through_astroquery(images):
    """SkyView's own form and results pages, byte for byte: its surveys, and one FITS link per survey asked."""
    form = (DATA / "responses" / "skyview_query_page.html").read_bytes()
    results = (DATA / "responses" / "skyview_results.html").read_bytes()
    images.server.add_route("GET", "/replay/sv/current/cgi/basicform.pl", lambda r: Response(form, 200, "text/html"))
    images.server.add_route("GET", "/replay/sv/current/cgi/runquery.pl", lambda r: Response(results, 200, "text/html"))
    conf.set(skyview_url=images.base_url + "/replay/sv/")
    surveys = skyview.list_surveys()
    assert "VLA FIRST (1.4 GHz)" in surveys["Radio"] and "SDSSr" in surveys["Optical:SDSS"]
    table = skyview.query("83.63 22.01", ["Fermi 5", "INT GAL 17-35 Flux", "BAT SNR 14-195"], pixels=100)
    assert list(table["access_url"]) == [
        f"{images.base_url}/replay/sv/tempspace/fits/skv6724208473423_{k}.fits" for k in (1, 2, 3)
    ]
    sent = [r for r in settled_log(images.server) if r.path.endswith("runquery.pl")]
    assert len(sent) == 1
    with pytest.raises(CoordinateError, match="surveys"):
        skyview.query("83.63 22.01", ["Not A Survey"])


def test_local_skyview_images_of_the_folder_and_of_the_synthetic_sky(images, tmp_path):
    from latentsky.download import DownloadManager

    c = (162.5302, 30.6762)  # on the bundled FIRST image
    real, synthetic = skyview.get_images(c, ["VLA FIRST (1.4 GHz)", "SDSSr"], pixels=24)
    assert real[0].data.shape == (24, 24) and "SYNTHSKY" not in real[0].header
    assert np.nanmax(real[0].data) > 0
    assert synthetic[0].header["SYNTHSKY"] is True and np.isfinite(synthetic[0].data).all()
    products = skyview.query(c, ["SDSSg", "UKIDSS-K"], pixels=16)
    results = DownloadManager(tmp_path, backoff=0.01).run(skyview.plan(products, tmp_path))
    assert not results.errors and len(results.files) == 2
    with fits.open(results.files[0]) as hdul:
        assert hdul[0].data.shape == (16, 16)


def test_offline_refuses_a_real_skyview_at_once():
    conf.set(offline=True, skyview_url="https://skyview.gsfc.nasa.gov/")
    with pytest.raises(ArchiveError, match="offline"):
        skyview.query("10 10", ["SDSSr"])
