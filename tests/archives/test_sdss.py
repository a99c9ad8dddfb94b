"""The SDSS client: recorded SkyServer answers replayed on the loopback server, and the local SkyServer."""

from __future__ import annotations

import numpy as np
import pytest
from _support.archives import DATA, settled_log, source_bytes
from astropy.table import Table

from latentsky.archives.local.server import Response
from latentsky.archives.sdss import parse_skyserver_csv, sdss
from latentsky.config import conf
from latentsky.download.policy import USER_AGENT
from latentsky.exceptions import ArchiveError, CoordinateError, LatentskyWarning


def labels(sample) -> Table:
    return Table.read(sample / "sdss" / "labels.csv", format="ascii.csv")


def replay(archive, name: str, prefix: str, status: int = 200, content_type: str = "text/plain") -> None:
    """Answer astroquery's SQL search under ``/replay/<prefix>/`` with a recorded response of the real
    archive, byte for byte, and point ``conf.sdss_skyserver_url`` there."""
    body = (DATA / "responses" / name).read_bytes()
    archive.server.add_route(
        "GET",
        f"/replay/{prefix}/dr17/en/tools/search/x_results.aspx",
        lambda request: Response(body, status, content_type),
    )
    conf.set(sdss_skyserver_url=f"{archive.base_url}/replay/{prefix}/")


def test_recorded_spectro_answer(local):
    replay(local, "xid_sp.txt", "sp")
    table = sdss.query_spectra((2.02344596303, 14.8398237521))
    assert len(table) == 1
    row = table[0]
    assert (row["plate"], row["mjd"], row["fiberid"]) == (751, 52251, 160)
    assert row["specobjid"] == "845594848269461504"  # 64-bit id kept exact, not through a float
    assert row["product_id"] == "0751-52251-0160"
    assert row["access_url"] == conf.sdss_sas_url + "dr17/sdss/spectro/redux/26/spectra/0751/spec-0751-52251-0160.fits"
    assert row["date"].startswith("2001-12-")  # MJD 52251
    request = [r for r in settled_log(local.server) if r.path.startswith("/replay/")][0]
    assert request.method == "GET"


def test_recorded_photometry_answer(local):
    replay(local, "xid_im.txt", "im")
    table = sdss.query_photometry((2.02344, 14.83982), radius="3 arcsec")
    rows = (DATA / "responses" / "xid_im.txt").read_text().strip().splitlines()[2:]
    assert len(table) == len(rows) == 18
    assert [str(x) for x in table["objid"]] == [r.split(",")[2] for r in rows]  # exact 64-bit ids
    assert table["run"][0] == 1904 and table.meta["failed"] == []


def test_html_error_page_is_not_a_table(local):
    replay(local, "error.html", "err", content_type="text/html")
    conf.set(max_retries=2)
    with pytest.raises(ArchiveError, match="HTML page arrived.*after 2 attempts"):
        sdss.query_sql("SELECT 1")
    assert len([r for r in settled_log(local.server) if r.path.startswith("/replay/err/")]) == 2


def test_error_text_is_not_a_table():
    with pytest.raises(ArchiveError, match="answered with no table"):
        parse_skyserver_csv("Error: Incorrect syntax near 'FROM'.")


def test_parse_keeps_empty_answers():
    table = parse_skyserver_csv("#Table1\nra,dec,objid\n")
    assert len(table) == 0 and table.colnames == ["ra", "dec", "objid"]


def test_quasars_by_class_match_the_labels(local, sample):
    truth = labels(sample)
    table = sdss.query_spectra(spec_class="QSO")
    expected = {
        (p, m, f) for p, m, f, c in zip(truth["plate"], truth["mjd"], truth["fiber"], truth["class"]) if c == "QSO"
    }
    assert {(r["plate"], r["mjd"], r["fiberid"]) for r in table} == expected
    assert set(table["class"]) == {"QSO"} and len(table) > 10


def test_positions_in_small_chunks_give_the_same_answer(local, sample):
    truth = labels(sample)
    positions = Table({"ra": truth["ra"][:20], "dec": truth["dec"][:20]})
    whole = sdss.query_spectra(positions, radius="2 arcsec")
    settled_log(local.server)
    local.server.clear()
    chunked = sdss.query_spectra(positions, radius="2 arcsec", chunk_size=3)
    requests = [r for r in settled_log(local.server) if r.path.endswith("x_results.aspx")]
    assert len(requests) == 7  # ceil(20 / 3)
    key = lambda t: sorted(zip(t["idx"], t["product_id"]))  # noqa: E731
    assert key(whole) == key(chunked)
    assert set(whole["idx"]) == set(range(20))
    for row in whole:  # each position found its own spectrum
        assert abs(row["ra"] - truth["ra"][row["idx"]]) < 1e-3


def test_urls_stay_short(local, sample, monkeypatch):
    import latentsky.archives.sdss as module

    monkeypatch.setattr(module, "MAX_URL_CHARS", 2000)
    truth = labels(sample)
    sdss.query_spectra(Table({"ra": truth["ra"], "dec": truth["dec"]}))
    requests = [r for r in settled_log(local.server) if r.path.endswith("x_results.aspx")]
    assert len(requests) > 5
    assert all(
        len(
            sdss.query_spectra(
                Table({"ra": truth["ra"][: i + 1], "dec": truth["dec"][: i + 1]}), get_query_payload=True
            )["cmd"]
        )
        < 2000
        for i in (0, 5)
    )


def test_a_failing_position_does_not_sink_the_others(local, sample):
    conf.set(max_retries=1)  # no HTTP-level retries: each failure reaches the chunk logic
    truth = labels(sample)
    positions = Table({"ra": truth["ra"][:8], "dec": truth["dec"][:8]})
    # chunks [0-3] [4-7]: [0-3] fails, then [0,1] fails, then [0] fails: only position 0 is lost
    local.server.fail_first("/sdss/*/x_results.aspx", 3, "500")
    with pytest.warns(LatentskyWarning, match="1 of 8 positions failed"):
        table = sdss.query_spectra(positions, chunk_size=4)
    assert [f["idx"] for f in table.meta["failed"]] == [0]
    assert "HTTP 500" in table.meta["failed"][0]["error"]
    assert set(table["idx"]) == set(range(1, 8))


def test_bad_input_names_the_parameter(local):
    with pytest.raises(CoordinateError, match="spec_class"):
        sdss.query_spectra(spec_class="COMET")
    with pytest.raises(CoordinateError, match="coordinates"):
        sdss.query_spectra((10.0, -91.0))
    with pytest.raises(CoordinateError, match="chunk_size"):
        sdss.query_spectra((10.0, 1.0), chunk_size=0)


def test_plan_and_download_are_identical_to_the_sources(local, sample, tmp_path):
    from latentsky.download.manager import DownloadManager

    table = sdss.query_spectra(spec_class="STAR")
    table = table[np.argsort(table["product_id"])]
    settled_log(local.server)
    local.server.clear()
    items = sdss.plan(table, tmp_path)
    assert not local.server.log
    local.server.fail_first("/sas/*", 1, "reset")
    results = DownloadManager(tmp_path, backoff=0.01, seed=2).run(items)
    assert not results.errors and len(items) == len(table) > 0
    truth = labels(sample)
    for item, row in zip(items, table):
        hit = (truth["plate"] == row["plate"]) & (truth["mjd"] == row["mjd"]) & (truth["fiber"] == row["fiberid"])
        source = sample / "sdss" / truth["file"][hit][0]
        assert item.dest.read_bytes() == source_bytes(source)


def test_every_quasar_of_the_release_in_pages_past_the_row_limit(local, sample, monkeypatch):
    """A whole class is read page after page: no answer meets SkyServer's row cap, and no row is lost."""
    from latentsky.archives.local import skyserver

    monkeypatch.setattr(skyserver, "ROW_LIMIT", 25)  # the local SkyServer now cuts answers at 25 rows
    truth = labels(sample)
    expected = sorted(
        (p, m, f) for p, m, f, c in zip(truth["plate"], truth["mjd"], truth["fiber"], truth["class"]) if c == "QSO"
    )
    table = sdss.query_spectra(spec_class="QSO", page_rows=20)
    assert sorted(zip(table["plate"], table["mjd"], table["fiberid"])) == expected and len(expected) == 66
    pages = [r for r in settled_log(local.server) if r.path.endswith("x_results.aspx")]
    assert len(pages) == 4  # 20 + 20 + 20 + 6
    assert len(sdss.query_spectra(spec_class="QSO", top=30, page_rows=20)) == 30


def test_astroquery_sends_the_query_for_the_data_release(local):
    conf.set(sdss_data_release=16)
    payload = sdss.query_spectra(spec_class="STAR", top=3, get_query_payload=True)
    assert payload["searchtool"] == "SQL" and payload["format"] == "csv" and "TOP 3" in payload["cmd"]
    assert len(sdss.query_spectra(spec_class="STAR", top=3)) == 3
    (request,) = [r for r in settled_log(local.server) if r.path.endswith("x_results.aspx")]
    assert request.path == "/sdss/dr16/en/tools/search/x_results.aspx"
    assert request.headers["user-agent"] == USER_AGENT  # astroquery sends through latentsky's session


def test_a_catalog_of_spectra_is_looked_up_by_plate_mjd_fiber(local, sample):
    """A DR16Q-like catalog (upper-case PLATE, MJD, FIBERID): its spectra, many per request, none lost."""
    truth = labels(sample)
    qso = truth[truth["class"] == "QSO"][:30]
    catalog = Table(
        {
            "SDSS_NAME": [f"J{i:04d}" for i in range(31)],
            "RA": list(qso["ra"]) + [10.0],
            "DEC": list(qso["dec"]) + [0.0],
            "PLATE": list(qso["plate"]) + [9999],
            "MJD": list(qso["mjd"]) + [59999],
            "FIBERID": list(qso["fiber"]) + [1],
        }
    )
    table = sdss.query_identifiers(catalog)
    assert sorted(table["idx"]) == list(range(30)) and table.meta["missing"] == [30]
    assert [tuple(r) for r in table[np.argsort(table["idx"])]["plate", "mjd", "fiberid"]] == [
        tuple(r) for r in qso["plate", "mjd", "fiber"]
    ]
    assert len([r for r in settled_log(local.server) if r.path.endswith("x_results.aspx")]) == 1
    with pytest.raises(CoordinateError, match="plate, mjd and fiberid"):
        sdss.query_identifiers(Table({"ra": [1.0], "dec": [2.0]}))
