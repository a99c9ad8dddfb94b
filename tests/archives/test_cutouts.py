"""Cutouts from the local archive's real FIRST and UKIDSS images into one Zarr array + Parquet index."""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests
from _support.archives import DATA, settled_log
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.table import Table
from astropy.wcs import WCS

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
    return Table(
        {
            "name": ["J105007+304037", "TaurusAuriga", "empty"],
            "ra": [first.ra.deg, ukidss.ra.deg, 146.7142],
            "dec": [first.dec.deg, ukidss.dec.deg, -1.0413],
        }
    )


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


@pytest.mark.parametrize(
    "kwargs, parameter",
    [
        ({"bands": ["HUBBLE-XX"]}, "bands"),
        ({"size": 0}, "size"),
        ({"pixel_scale": -1.0}, "pixel_scale"),
    ],
)
def test_bad_arguments_name_the_parameter(images, targets, tmp_path, kwargs, parameter):
    with pytest.raises(LatentskyError, match=parameter):
        fetch_cutouts(targets, tmp_path, **kwargs)


def test_native_cutout_endpoint_is_the_source_pixels(images):
    """/cutout/{survey} cuts the real image with its WCS: the pixels are the source's, unchanged."""
    c = centre(UKIDSS, 1)
    r = requests.get(
        f"{images.base_url}/cutout/UKIDSS-K", params={"ra": c.ra.deg, "dec": c.dec.deg, "size": 11}, timeout=10
    )
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


# --------------------------------------------------------------------------- the synthetic sky and the engine

SYNTH = "/synthetic/hips2fits"


def sky_targets(n, seed=3):
    """``n`` positions in the north galactic cap (on the synthetic SDSS footprint), a few in the south (off it)."""
    rng = np.random.default_rng(seed)
    ra, dec = rng.uniform(150, 210, n), rng.uniform(5, 50, n)
    ra[::7], dec[::7] = 10.0 + np.arange(len(ra[::7])), -60.0
    return Table({"name": [f"t{i}" for i in range(n)], "ra": ra, "dec": dec})


@pytest.fixture
def synthetic(images):
    """The image archive with conf.hips2fits_url on its synthetic sky; faults reset afterwards."""
    from latentsky.config import conf

    conf.set(hips2fits_url=images.base_url + SYNTH)
    yield images
    images.server.set_faults(0.0)


def direct(archive, band, ra, dec, size=28):
    """One fault-free request for a cell, parsed as the engine parses it."""
    from latentsky.archives.cutouts import SURVEYS, hips2fits_params, parse_cutout

    hips, scale = SURVEYS[band]
    r = requests.get(archive.base_url + SYNTH, params=hips2fits_params(hips, ra, dec, size, scale), timeout=10)
    assert r.status_code == 200
    return parse_cutout(r.content, size)


def test_synthetic_sky_is_deterministic_marked_and_has_a_footprint(images):
    from latentsky.archives.cutouts import hips2fits_params

    params = hips2fits_params("CDS/P/SDSS9/r", 180.0, 30.0, 28, 0.396)
    first, again = (requests.get(images.base_url + SYNTH, params=params, timeout=10) for _ in range(2))
    assert first.content == again.content
    with fits.open(io.BytesIO(first.content)) as hdul:
        header, data = hdul[0].header, hdul[0].data
        assert header["SYNTHSKY"] is True and "Synthetic sky" in str(header["COMMENT"])
        assert np.isfinite(data).all() and data.std() > 0
        assert WCS(header).pixel_to_world(13.5, 13.5).separation(SkyCoord(180, 30, unit="deg")).arcsec < 0.01
    # g and r see the same objects: the same bright pixels in both bands
    g = requests.get(
        images.base_url + SYNTH, timeout=10, params=hips2fits_params("CDS/P/SDSS9/g", 180.0, 30.0, 64, 0.396)
    )
    with fits.open(io.BytesIO(g.content)) as hg:
        r64 = requests.get(
            images.base_url + SYNTH, timeout=10, params=hips2fits_params("CDS/P/SDSS9/r", 180.0, 30.0, 64, 0.396)
        ).content
        with fits.open(io.BytesIO(r64)) as hr:
            assert np.corrcoef(hg[0].data.ravel(), hr[0].data.ravel())[0, 1] > 0.5
    # the south galactic cap is off the SDSS-like footprint: blank, as hips2fits answers off a survey
    off = requests.get(
        images.base_url + SYNTH, timeout=10, params=hips2fits_params("CDS/P/SDSS9/r", 10, -60, 28, 0.396)
    )
    with fits.open(io.BytesIO(off.content)) as hdul:
        assert np.isnan(hdul[0].data).all() and hdul[0].header["SYNTHSKY"] is True
    # where a bundled image covers the position it is served, not the synthetic sky
    c = centre(FIRST, 0)
    real = requests.get(
        images.base_url + "/hips2fits", timeout=10, params=hips2fits_params("CDS/P/FIRST", c.ra.deg, c.dec.deg, 28, 1.8)
    )
    both = requests.get(
        images.base_url + SYNTH, timeout=10, params=hips2fits_params("CDS/P/FIRST", c.ra.deg, c.dec.deg, 28, 1.8)
    )
    assert real.content == both.content and b"SYNTHSKY" not in both.content


def test_every_kind_of_fault_is_retried_and_the_pixels_are_those_of_a_direct_request(synthetic, tmp_path):
    from latentsky.archives.local.server import FAULT_KINDS

    table = sky_targets(40)
    synthetic.server.set_faults(0.3, FAULT_KINDS)
    result = fetch_cutouts(
        table, tmp_path, bands=["SDSS-g", "UKIDSS-K"], connections=8, max_attempts=12, backoff=0.01, seed=1
    )
    synthetic.server.set_faults(0.0)
    faults = {r.fault for r in settled_log(synthetic.server) if r.fault}
    assert faults >= {"500", "503", "429", "reset", "truncate", "html"}, faults
    assert result.complete and result.requests > 80
    cube, index = open_cutouts(tmp_path)
    for i in range(len(table)):
        for b, band in enumerate(["SDSS-g", "UKIDSS-K"]):
            status, image, _ = direct(synthetic, band, index["ra"][i], index["dec"][i])
            assert index[f"status_{band}"][i] == status
            if image is not None:
                np.testing.assert_array_equal(cube[i, b], image)
            else:
                assert np.isnan(cube[i, b]).all()
    assert set(index["status_SDSS-g"][::7]) == {"off_footprint"}


def test_a_slow_cell_does_not_hold_back_the_next_blocks(synthetic, tmp_path):
    """One slow answer per block of two targets: streamed, the run takes about one slow answer, not one per block."""
    import time

    from latentsky.archives.local import images as endpoints
    from latentsky.config import conf

    table = sky_targets(16)
    slow = {repr(float(x)) for x in table["ra"][::2]}  # the first target of every block

    def handler(request):
        if request.param("ra") in slow:
            time.sleep(0.6)
        return endpoints.synthetic_hips2fits(synthetic, request)

    synthetic.server.add_route("GET", "/slow/hips2fits", handler)
    conf.set(hips2fits_url=synthetic.base_url + "/slow/hips2fits")
    t0 = time.monotonic()
    result = fetch_cutouts(table, tmp_path, bands=["SDSS-r"], block=2, connections=8)
    assert result.complete
    # eight blocks, each waiting for its slow cell, would take 8 x 0.6 s
    assert time.monotonic() - t0 < 3.0


def test_progress_events_count_done_off_footprint_failed_and_time_left(synthetic, tmp_path):
    events = []
    result = fetch_cutouts(sky_targets(21), tmp_path, bands=["SDSS-g", "SDSS-r"], progress=events.append)
    assert events[0].total == 42 and events[-1].finished and events[-1].done == 42
    assert {e.task for e in events} == {"cutouts"} and events[-1].unit == "cells"
    last = [e.message for e in events if e.message][-1]
    assert last == f"ok {result.counts['ok']} · off {result.counts['off_footprint']} · failed 0"
    assert result.counts["off_footprint"] == 6  # rows 0, 7, 14 in two bands


def test_a_request_the_service_refuses_is_final_not_retried(synthetic, tmp_path):
    table = sky_targets(3)
    result = fetch_cutouts(table, tmp_path, bands=["X"], hips={"X": "CDS/P/NOPE"}, max_attempts=5)
    assert result.counts["error"] == 3 and set(result.errors["attempts"]) == {1}
    assert all("HTTP 400" in e for e in result.errors["error"])
    before = len(settled_log(synthetic.server))
    fetch_cutouts(table, tmp_path, bands=["X"], hips={"X": "CDS/P/NOPE"}, max_attempts=9)
    assert len(settled_log(synthetic.server)) == before


def test_one_run_at_a_time_per_folder(synthetic, tmp_path):
    from latentsky.archives.cutout_store import CutoutStore
    from latentsky.exceptions import StoreError

    table = sky_targets(2)
    fetch_cutouts(table, tmp_path, bands=["SDSS-r"])
    store = CutoutStore.open(tmp_path)
    try:
        with store.running(), pytest.raises(StoreError, match="another cutout run"):
            fetch_cutouts(table, tmp_path, bands=["SDSS-r"])
    finally:
        store.close()


def test_kill_9_loses_only_the_cells_in_flight_and_a_rerun_asks_for_no_finished_cell(synthetic, tmp_path):
    """A run killed with SIGKILL half way, then run again: the rerun asks for exactly the cells not recorded."""
    import os
    import sqlite3
    import subprocess
    import sys
    import time
    from pathlib import Path

    from latentsky.archives.local import images as endpoints
    from latentsky.config import conf

    asked = []

    def handler(request):
        asked.append((request.param("hips"), request.param("ra"), request.param("dec")))
        time.sleep(0.03)
        return endpoints.synthetic_hips2fits(synthetic, request)

    synthetic.server.add_route("GET", "/logged/hips2fits", handler)
    url = synthetic.base_url + "/logged/hips2fits"
    table, dest, bands = sky_targets(60), tmp_path / "cut", ["SDSS-g", "SDSS-r"]
    table.write(tmp_path / "targets.ecsv")
    code = (
        "import sys; from astropy.table import Table; from latentsky.archives.cutouts import fetch_cutouts; "
        "fetch_cutouts(Table.read(sys.argv[1]), sys.argv[2], bands=['SDSS-g', 'SDSS-r'], connections=4, block=8)"
    )
    src = Path(__file__).resolve().parents[2] / "src"
    env = {
        **os.environ,
        "LATENTSKY_HIPS2FITS_URL": url,
        "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "targets.ecsv"), str(dest)], env=env)

    def recorded():
        try:
            with sqlite3.connect(dest / "progress.sqlite") as db:
                return {tuple(r) for r in db.execute("SELECT row, band FROM cells WHERE status IN (1, 2)")}
        except sqlite3.Error:
            return set()

    deadline = time.monotonic() + 120
    while len(recorded()) < 50 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    time.sleep(0.3)
    synthetic.server.wait_idle()
    before, n_before = recorded(), len(asked)
    assert 50 <= len(before) < 120, len(before)

    conf.set(hips2fits_url=url)
    result = fetch_cutouts(table, dest, bands=bands, connections=4, block=8)
    assert result.complete
    cube, index = open_cutouts(dest)
    where = {(repr(float(r)), repr(float(d))): i for i, (r, d) in enumerate(zip(index["ra"], index["dec"]))}
    rerun = [(where[(ra, dec)], 0 if hips.endswith("/g") else 1) for hips, ra, dec in asked[n_before:]]
    assert not set(rerun) & before  # nothing finished is asked again
    assert sorted(rerun) == sorted(set(np.ndindex(60, 2)) - before)  # and each missing cell once
    for i in range(60):  # the pixels recorded before the kill survived it, the others arrived after
        for b, band in enumerate(bands):
            status, image, _ = direct(synthetic, band, index["ra"][i], index["dec"][i])
            assert index[f"status_{band}"][i] == status
            if image is not None:
                np.testing.assert_array_equal(cube[i, b], image)


def test_every_quasar_to_a_gri_cube_beside_its_spectrum(local, tmp_path, capsys):
    """``latentsky query sdss --class QSO`` then ``latentsky cutouts`` (SDSS g, r, i at 28x28), then the cube
    as the app reads it, row by row beside the spectra."""
    import pandas as pd

    from latentsky.cli import main
    from latentsky.ui.cutouts import Cutouts

    out, cut = tmp_path / "quasars.parquet", tmp_path / "cutouts"
    assert main(["query", "sdss", "--class", "QSO", "--base-url", local.base_url, "--out", str(out)]) == 0
    quasars = Table.read(out)
    assert len(quasars) == 66 and set(quasars["class"]) == {"QSO"}
    argv = [
        "cutouts",
        str(out),
        "--dest",
        str(cut),
        "--base-url",
        local.base_url,
        "--synthetic",
        "--no-progress",
        "--connections",
        "8",
    ]
    assert main(argv) == 0
    assert f"66 targets x 3 bands -> {cut}" in capsys.readouterr().out
    cube, index = open_cutouts(cut)
    assert cube.shape == (66, 3, 28, 28) and list(index["product_id"]) == list(quasars["product_id"])
    ok = index["status_SDSS-r"] == "ok"
    assert ok.sum() > 30 and set(index["status_SDSS-r"]) <= {"ok", "off_footprint"}
    store = Cutouts(cut, bands=())
    row = pd.Series({"ra": index["ra"][ok].iloc[0], "dec": index["dec"][ok].iloc[0]})
    shown = store.get(row)
    assert [c.band for c in shown] == ["SDSS-g", "SDSS-r", "SDSS-i"]
    np.testing.assert_array_equal(shown[1].image, cube[int(np.flatnonzero(ok)[0]), 1])
    local.server.clear()
    assert main(argv) == 0  # resumed: nothing left to ask
    assert not [r for r in settled_log(local.server) if r.path.endswith("hips2fits")]
