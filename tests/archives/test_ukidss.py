"""The UKIDSS client: astroquery.ukidss against recorded WSA pages and the local archive's WSA."""

from __future__ import annotations

import numpy as np
import pytest
from _support.archives import DATA, settled_log, source_bytes

from latentsky.archives.local.server import Response
from latentsky.archives.ukidss import ukidss
from latentsky.config import conf
from latentsky.exceptions import ArchiveError

pytestmark = pytest.mark.filterwarnings(
    "ignore::astropy.wcs.FITSFixedWarning",
    "ignore::astropy.io.votable.exceptions.VOWarning",
    "ignore::astroquery.exceptions.NoResultsWarning",
)

UKIDSS_IMAGE = DATA / "images" / "ukidss_wfcam_K_TaurusAuriga_astroquery_test.fits.gz"


def recorded(name: str, base: str) -> bytes:
    """A recorded WSA page with its links to the ROE web server moved to ``base`` (the only change; the links
    to port 8080, which astroquery skips, are left as they are)."""
    return (DATA / "responses" / name).read_text().replace("http://surveys.roe.ac.uk/", base + "/").encode()


def test_recorded_wsa_region_query_through_astroquery(images):
    base = images.base_url + "/replay"
    page, votable = recorded("ukidss_vo_results.html", base), (DATA / "responses" / "ukidss_votable.xml").read_bytes()
    images.server.add_route("GET", "/replay/wsa/WSASQL", lambda r: Response(page, 200, "text/html"))
    images.server.add_route(
        "GET", "/replay/wsa/tmp/tmp_sql/results1_10_22_48_24662.xml", lambda r: Response(votable, 200, "text/xml")
    )
    conf.set(ukidss_url=base + "/wsa/")
    table = ukidss.query_sources("272.616 -19.927", radius="6 arcsec", programme_id="GPS")
    assert len(table) == 9 and table["sourceID"][0] == 438758381345
    np.testing.assert_allclose(table["ra"][0], 272.6155810372425)
    payload = ukidss.query_sources("272.616 -19.927", radius="6 arcsec", programme_id="GPS", get_query_payload=True)
    assert payload["programmeID"] == 102 and payload["radius"] == pytest.approx(0.1)


def test_recorded_wsa_image_page_then_the_download_manager(images, tmp_path):
    from latentsky.download import DownloadManager

    base = images.base_url + "/replay"
    page, image = recorded("ukidss_image_results.html", base), source_bytes(UKIDSS_IMAGE)
    images.server.add_route("GET", "/replay/wsa/GetImage", lambda r: Response(page, 200, "text/html"))
    images.server.add_route(
        "GET", "/replay/wsa/cgi-bin/getFImage.cgi", lambda r: Response(image, 200, "application/fits")
    )
    conf.set(ukidss_url=base + "/wsa/")
    products = ukidss.query("83.6330757 22.014436", waveband="all")
    assert len(products) == 1 and "/replay/wsa/cgi-bin/getFImage.cgi?file=" in products["access_url"][0]
    results = DownloadManager(tmp_path, backoff=0.01).run(ukidss.plan(products, tmp_path))
    assert not results.errors and results.files[0].read_bytes() == image


def test_local_wsa_sources_are_positions_for_k_cutouts(images, tmp_path):
    from latentsky.archives.cutouts import fetch_cutouts, open_cutouts

    sources = ukidss.query_sources("180.0 10.0", radius="0.5 arcmin")
    assert len(sources) > 3 and (sources["distance"] <= 0.5).all()
    assert {"sourceID", "K_1AperMag3", "ra", "dec"} <= set(sources.colnames)
    conf.set(hips2fits_url=images.base_url + "/synthetic/hips2fits")
    result = fetch_cutouts(sources, tmp_path, bands=["UKIDSS-K"], size=20)
    _, index = open_cutouts(tmp_path)
    assert result.complete and set(index["status_UKIDSS-K"]) == {"ok"}
    # the galactic plane is outside the synthetic LAS-like footprint: no sources, no image
    assert len(ukidss.query_sources("83.0 22.0", radius="0.5 arcmin")) == 0
    assert len(ukidss.query("100.0 -40.0", waveband="K")) == 0
    assert [r.path for r in settled_log(images.server) if r.path.startswith("/wsa/")]


def test_the_wsa_error_page_is_an_error(images):
    page = (DATA / "responses" / "error.html").read_bytes()
    images.server.add_route("GET", "/err/wsa/WSASQL", lambda r: Response(page, 200, "text/html"))
    conf.set(ukidss_url=images.base_url + "/err/wsa/")
    with pytest.raises(ArchiveError, match="error page"):
        ukidss.query_sources("10 10", radius="1 arcmin")
