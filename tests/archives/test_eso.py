"""The ESO client against the local archive (real HARPS s1d headers) and a recorded ESO ObsCore answer."""

from __future__ import annotations

import numpy as np
import pytest
from _support.archives import DATA, settled_log, source_bytes
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table

from latentsky.archives.eso import eso
from latentsky.config import conf
from latentsky.exceptions import ArchiveError, CoordinateError, QueryTruncatedError


def header_table(sample) -> Table:
    """What the HARPS files' own headers say: the truth the TAP answers are checked against."""
    rows = []
    for path in sorted((sample / "harps").glob("*.fits*")):
        h = fits.getheader(path)
        rows.append((path.name.split(".fits")[0], h["OBJECT"], h["RA"], h["DEC"], h["MJD-OBS"], path))
    return Table(rows=rows, names=("dp_id", "object", "ra", "dec", "mjd", "path"))


def test_all_harps_spectra_match_the_file_headers(local, sample):
    truth = header_table(sample)
    table = eso.query(collection="HARPS")
    assert len(table) == len(truth) > 10
    table.sort("dp_id")
    truth.sort("dp_id")
    assert list(table["product_id"]) == list(truth["dp_id"])
    assert list(table["object"]) == list(truth["object"])
    np.testing.assert_allclose(table["ra"], truth["ra"])
    np.testing.assert_allclose(table["t_min"], truth["mjd"])
    assert table["date"][0].startswith("20") and "T" in table["date"][0]
    assert all(url.startswith(local.base_url + "/eso/file/") for url in table["access_url"])
    assert set(table["instrument"]) == {"HARPS"}


def test_cone_in_any_frame_equals_the_icrs_cone(local, sample):
    truth = header_table(sample)
    centre = SkyCoord(219.875, -60.83, unit="deg")
    expected = {
        d
        for d, r, dd in zip(truth["dp_id"], truth["ra"], truth["dec"])
        if SkyCoord(r, dd, unit="deg").separation(centre) < 1 * u.arcmin
    }
    icrs = eso.query(coordinates=centre, radius=1 * u.arcmin)
    galactic = eso.query(coordinates=centre.galactic, radius="1 arcmin")
    assert set(icrs["dp_id"]) == set(galactic["dp_id"]) == expected
    assert 0 < len(expected) < len(truth)


def test_date_range_is_half_open(local, sample):
    truth = header_table(sample)
    t = eso.query(collection="HARPS", start="2012-04-01", end="2012-05-01")
    from astropy.time import Time

    lo, hi = Time("2012-04-01").mjd, Time("2012-05-01").mjd
    assert set(t["dp_id"]) == {d for d, m in zip(truth["dp_id"], truth["mjd"]) if lo <= m < hi}
    assert len(t) > 0


def test_target_name_from_the_local_name_table_offline(local, tmp_path):
    names = tmp_path / "names.csv"
    names.write_text("name,ra,dec\nHD 128621,219.8961,-60.8375\n")  # alpha Cen B, J2000 (SIMBAD)
    conf.set(name_table=str(names), offline=True)
    table = eso.query("hd128621")  # case and spaces do not matter
    assert len(table) > 0 and set(table["object"]) == {"HD128621"}


def test_unknown_target_offline_names_the_parameter(local):
    conf.set(offline=True)
    with pytest.raises(CoordinateError, match=r"target: unknown object name 'Nowhere Star'.*offline"):
        eso.query("Nowhere Star")
    assert not local.server.log  # nothing was sent


@pytest.mark.parametrize(
    "kwargs, parameter",
    [
        ({"coordinates": (10.0, 95.0)}, "coordinates"),
        ({"coordinates": "not a place"}, "coordinates"),
        ({"coordinates": (10.0, 5.0), "radius": -1}, "radius"),
        ({"coordinates": (10.0, 5.0), "radius": "3 kg"}, "radius"),
        ({"start": "yesterday-ish"}, "start"),
        ({"start": "2012-05-01", "end": "2012-04-01"}, "end"),
    ],
)
def test_bad_input_is_a_clear_error(local, kwargs, parameter):
    with pytest.raises(CoordinateError, match=parameter):
        eso.query(**kwargs)


def test_catalog_upload_joins_each_target(local, sample):
    targets = Table(
        {"name": ["alf Cen B", "Gl 273", "empty sky"], "ra": [219.875, 111.852458, 0.0], "dec": [-60.83, 5.22063, 0.0]}
    )
    table = eso.query(coordinates=targets, radius="1 arcmin")
    truth = header_table(sample)
    by_target = {0: {"HD128621"}, 1: {"Gl273"}}
    for index, objects in by_target.items():
        rows = table[table["target_index"] == index]
        assert set(rows["object"]) == objects
    assert 2 not in set(table["target_index"])
    assert len(table) == sum(o in ("HD128621", "Gl273") for o in truth["object"])
    posts = [r for r in settled_log(local.server) if r.path == "/tap/sync"]
    assert posts and all(r.method == "POST" for r in posts)
    assert "multipart/form-data" in posts[0].headers["content-type"]  # the table went as a TAP UPLOAD


@pytest.mark.filterwarnings("ignore::pyvo.dal.exceptions.DALOverflowWarning")
def test_overflow_is_split_never_short(sample, tmp_path):
    from latentsky.archives.local.archive import LocalArchive

    with LocalArchive(sample / "harps", tap_maxrec=4) as small:
        table = eso.query(collection="HARPS")
        requests = [r for r in settled_log(small.server) if r.path == "/tap/sync"]
        # pyvo itself sees the service's OVERFLOW status
        import pyvo

        raw = pyvo.dal.TAPService(conf.eso_tap_url).run_sync("SELECT dp_id FROM ivoa.ObsCore")
        assert raw.status[0] == "OVERFLOW" and len(raw) == 4
    assert len(table) == len(header_table(sample)) and len(set(table["dp_id"])) == len(table)
    assert len(requests) > 4


def test_overflow_that_cannot_be_split_raises(sample):
    from latentsky.archives.local.archive import LocalArchive

    recorded = Table.read(DATA / "responses" / "query_coll_vvv_sgra.csv", format="ascii.csv")
    same_time = recorded[:3]
    same_time["t_min"] = 55423.0
    same_time.replace_column("dp_id", ["X.1", "X.2", "X.3"])
    same_time.replace_column("obs_collection", ["CLONES"] * 3)
    with LocalArchive(sample / "harps", obscore=same_time):
        with pytest.raises(QueryTruncatedError, match="within one second"):
            eso.query(collection="CLONES", dataproduct_type=None, maxrec=2)


def test_recorded_eso_obscore_answer_parses(sample):
    """A real ESO ObsCore answer (VVV around Sgr A*) served by the local TAP service."""
    from latentsky.archives.local.archive import LocalArchive

    recorded = Table.read(DATA / "responses" / "query_coll_vvv_sgra.csv", format="ascii.csv")
    sgra = SkyCoord("17h45m40.04s -29d00m28.2s")
    sep = SkyCoord(recorded["s_ra"], recorded["s_dec"], unit="deg").separation(sgra)
    expected = set(recorded["dp_id"][sep < 0.5 * u.deg])
    with LocalArchive(sample / "harps", obscore=recorded):
        table = eso.query(coordinates=sgra, radius=0.5 * u.deg, collection="VVV", dataproduct_type=None)
        data_url = conf.eso_data_url
    assert set(table["dp_id"]) == expected and len(expected) > 0
    row = table[0]
    assert row["datalink_url"].startswith("http://archive.eso.org/datalink/links?ID=")
    assert row["access_url"] == data_url + row["dp_id"]  # the file, not the DataLink document
    assert row["instrument"] == "VIRCAM" and row["object"] != ""


def test_refused_query_is_an_archive_error(local):
    with pytest.raises(ArchiveError, match="unknown column 'no_such_column'"):
        eso._run("SELECT no_such_column FROM ivoa.ObsCore", None, 10)


def test_busy_service_is_retried(local):
    local.server.fail_first("/tap/sync", 2, "503")
    table = eso.query(collection="HARPS", start="2012-04-01", end="2012-04-05")
    assert len(table) > 0
    statuses = [r.status for r in settled_log(local.server) if r.path == "/tap/sync"]
    assert statuses == [503, 503, 200]


def test_a_query_too_large_for_a_synchronous_answer_runs_as_a_job(local):
    synchronous = eso.query(collection="HARPS", mode="sync")
    settled_log(local.server)
    local.server.clear()
    conf.set(tap_sync_rows=5)  # the sample's HARPS spectra are more than a synchronous answer may hold
    auto = eso.query(collection="HARPS")
    log = settled_log(local.server)
    assert sorted(auto["dp_id"]) == sorted(synchronous["dp_id"]) and len(auto) > 5
    assert len([r for r in log if r.path == "/tap/sync"]) == 1  # one answer capped at 5 rows showed it
    assert [r.method for r in log if r.path == "/tap/async"] == ["POST"]  # then one job
    job_paths = {r.path for r in log if r.path.startswith("/tap/async/") and r.path.count("/") == 3}
    assert len(job_paths) == 1 and ("DELETE", job_paths.pop()) in {(r.method, r.path) for r in log}
    assert not local.jobs.jobs()  # the job is deleted once its result is in


def test_asynchronous_queries_on_request_are_split_like_synchronous_ones(local):
    window = dict(collection="HARPS", start="2012-03-01", end="2012-07-01")
    whole = eso.query(**window, mode="sync")
    settled_log(local.server)
    local.server.clear()
    pieces = eso.query(**window, mode="async", maxrec=len(whole) // 2)
    log = settled_log(local.server)
    assert sorted(pieces["dp_id"]) == sorted(whole["dp_id"]) and len(whole) > 4
    assert not [r for r in log if r.path == "/tap/sync"]
    assert len([r for r in log if r.path == "/tap/async" and r.method == "POST"]) >= 3  # capped, then halves
    assert not local.jobs.jobs()
    with pytest.raises(CoordinateError, match="mode"):
        eso.query(collection="HARPS", mode="later")


def test_a_busy_service_is_retried_for_jobs_too(local):
    local.server.fail_first("/tap/async", 1, "503")
    local.server.fail_first("/tap/async/*/results/result", 1, "500")
    table = eso.query(collection="HARPS", start="2012-04-01", end="2012-04-05", mode="async")
    assert len(table) > 0
    log = settled_log(local.server)
    assert [r.status for r in log if r.path == "/tap/async"] == [503, 303]
    assert [r.status for r in log if r.path.endswith("/results/result")] == [500, 200]


def test_an_answer_that_stalls_is_not_asked_again():
    """A service that sends the start of its answer and then nothing ends in an error after conf.timeout."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-votable+xml\r\nContent-Length: 99999\r\n\r\n"
                b'<?xml version="1.0"?>\n<VOTABLE version="1.4">'
            )  # and then nothing

    threading.Thread(target=serve, daemon=True).start()
    conf.set(eso_tap_url=f"http://127.0.0.1:{listener.getsockname()[1]}/tap", timeout=0.3, retry_backoff=0.01)
    try:
        with pytest.raises(ArchiveError, match="no answer from the TAP service .* within the timeout"):
            eso.query(collection="HARPS", mode="sync")
    finally:
        listener.close()
        for conn in accepted:
            conn.close()
    assert len(accepted) == 1


def test_plan_is_offline_and_downloads_are_identical_to_the_sources(local, sample, tmp_path):
    from latentsky.download.manager import DownloadManager

    table = eso.query(collection="HARPS", start="2012-03-24", end="2012-04-10")
    settled_log(local.server)
    local.server.clear()
    items = eso.plan(table, tmp_path / "harps")
    assert not local.server.log  # planning sends nothing
    assert [i.dest.name for i in items] == [f"{d}.fits" for d in table["dp_id"]]
    assert all(i.kind == "fits" and i.key == f"eso/{d}" for i, d in zip(items, table["dp_id"]))
    # the archive misbehaves once per file in the ways ESO does
    local.server.fail_first("/eso/file/*", 1, "html")
    local.server.fail_first("/eso/file/*", 1, "truncate")
    results = DownloadManager(tmp_path / "harps", backoff=0.01, max_retries=4, seed=1).run(items)
    assert not results.errors
    for item, dp_id in zip(items, table["dp_id"]):
        source = next((sample / "harps").glob(f"{dp_id}.fits*"))
        assert item.dest.read_bytes() == source_bytes(source)


def test_uploaded_list_that_overflows_is_split(local):
    targets = Table({"ra": [219.875, 111.852458, 0.0], "dec": [-60.83, 5.22063, 0.0]})
    whole = eso.query(coordinates=targets, radius="1 arcmin")
    settled_log(local.server)
    local.server.clear()
    small = eso.query(coordinates=targets, radius="1 arcmin", maxrec=3)
    assert sorted(small["dp_id"]) == sorted(whole["dp_id"]) and len(whole) > 3
    assert len([r for r in settled_log(local.server) if r.path == "/tap/sync"]) > 3


def test_query_payload_is_the_adql_and_sends_nothing(local):
    adql = eso.query(coordinates=SkyCoord(10, 20, unit="deg"), radius="5 arcsec", start=55000.0, get_query_payload=True)
    assert adql.startswith("SELECT dp_id, obs_collection")
    assert "FROM ivoa.ObsCore WHERE obs_collection = 'HARPS' AND dataproduct_type = 'spectrum'" in adql
    assert "CONTAINS(POINT('ICRS', s_ra, s_dec), CIRCLE('ICRS', 10.0, 20.0, 0.001388" in adql
    assert "t_min >= 55000.0" in adql
    upload = eso.query(coordinates=Table({"ra": [1.0, 2.0], "dec": [3.0, 4.0]}), get_query_payload=True)
    assert "JOIN TAP_UPLOAD.targets AS t ON 1 = CONTAINS(POINT('ICRS', o.s_ra, o.s_dec)" in upload
    assert "target_name = 'O''Brien'" in eso.build_query(target_name="O'Brien")  # quotes are escaped
    assert not local.server.log


def test_offline_mode_never_leaves_the_machine(local):
    conf.set(offline=True)
    eso.query(collection="HARPS", start="2012-04-01", end="2012-04-03")  # the local archive is fine
    conf.set(eso_tap_url="https://archive.eso.org/tap_obs")
    with pytest.raises(ArchiveError, match="offline mode.*archive.eso.org"):
        eso.query(collection="HARPS")
