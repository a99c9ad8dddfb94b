"""Every client latentsky has (pyvo, astroquery, the download manager, the request pool) says who it is the same way."""

from __future__ import annotations

from _support.archives import settled_log

from latentsky.config import conf
from latentsky.download.policy import USER_AGENT


def test_every_client_sends_the_one_user_agent(local, tmp_path):
    from latentsky.archives.cutouts import fetch_cutouts, fetch_one
    from latentsky.archives.eso import eso
    from latentsky.archives.sdss import sdss
    from latentsky.archives.skyview import skyview
    from latentsky.archives.ukidss import ukidss
    from latentsky.download import DownloadManager

    harps = eso.query(collection="HARPS", start="2012-04-01", end="2012-04-05")  # pyvo
    sdss.query_spectra(spec_class="STAR", top=2)  # astroquery.sdss
    skyview.list_surveys()  # astroquery.skyview
    ukidss.query_sources("180.0 10.0", radius="0.2 arcmin")  # astroquery.ukidss
    DownloadManager(tmp_path / "dl").run(eso.plan(harps[:1], tmp_path / "dl"))  # the download manager
    conf.set(hips2fits_url=local.base_url + "/synthetic/hips2fits")
    fetch_one("CDS/P/SDSS9/r", 180.0, 10.0, 8, 0.4)  # astroquery.hips2fits
    fetch_cutouts((180.0, 10.0), tmp_path / "cutouts", bands=["SDSS-r"], size=8)  # the request pool
    log = settled_log(local.server)
    assert {"tap", "sdss", "skyview", "wsa", "eso", "synthetic"} <= {r.path.split("/")[1] for r in log}
    assert {r.headers.get("user-agent") for r in log} == {USER_AGENT}
