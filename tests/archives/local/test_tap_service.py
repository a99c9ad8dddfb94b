"""The local archive's TAP service as the field's clients and validators see it.

pyvo (sync, async UWS jobs, VOSI tables and capabilities, uploads inline and by
URL), STILTS ``taplint`` on the whole service and ``votlint`` on the VOTables
latentsky writes, and the answers to malformed or expensive requests.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import numpy as np
import pytest
import requests
from astropy.table import Table

pyvo = pytest.importorskip("pyvo")

STILTS = shutil.which("stilts")
needs_stilts = pytest.mark.skipif(STILTS is None, reason="STILTS (Debian package stilts) is not installed")


@pytest.fixture
def service(local):
    return pyvo.dal.TAPService(f"{local.base_url}/tap")


def test_vosi_tables_capabilities_and_availability(service):
    names = set(service.tables.keys())
    assert {"ivoa.ObsCore", "TAP_SCHEMA.tables", "TAP_SCHEMA.columns"} <= names
    columns = {c.name: c for c in service.tables["ivoa.ObsCore"].columns}
    assert columns["s_ra"].unit == "deg" and columns["s_ra"].ucd == "pos.eq.ra"
    assert {"s_region", "obs_publisher_did", "em_res_power", "pol_xel"} <= set(columns)  # ObsCore 1.1, complete
    tap = next(c for c in service.capabilities if c.standardid.startswith("ivo://ivoa.net/std/TAP"))
    assert {m.ivo_id for m in tap.uploadmethods} >= {"ivo://ivoa.net/std/TAPRegExt#upload-inline"}
    assert [d.ivo_id for d in tap.datamodels] == ["ivo://ivoa.net/std/ObsCore#core-1.1"]
    available = requests.get(f"{service.baseurl}/availability", timeout=5).text
    assert "<vosi:available>true</vosi:available>" in available


def test_sync_select_star_and_tap_schema(service, local):
    result = service.run_sync("SELECT TOP 3 * FROM ivoa.ObsCore ORDER BY t_min")
    table = result.to_table()
    assert len(table) == 3 and table.colnames[:3] == ["dataproduct_type", "calib_level", "obs_collection"]
    assert result.fieldname_with_ucd("pos.eq.ra") == "s_ra"
    assert np.all(np.diff(table["t_min"]) >= 0)
    cols = service.run_sync(
        "SELECT column_name, datatype FROM TAP_SCHEMA.columns WHERE table_name = 'ivoa.ObsCore' AND std = 1"
    ).to_table()
    assert "access_url" in list(cols["column_name"]) and len(cols) >= 30
    with pytest.raises(pyvo.dal.DALQueryError, match="unknown column 'nope'"):
        service.run_sync("SELECT nope FROM ivoa.ObsCore")


def test_async_job_lifecycle(service, local):
    job = service.submit_job("SELECT obs_collection, COUNT(*) AS n FROM ivoa.ObsCore GROUP BY obs_collection")
    assert job.phase == "PENDING"
    job.run()
    job.wait(timeout=30)
    assert job.phase == "COMPLETED"
    counts = job.fetch_result().to_table()
    assert int(counts["n"].sum()) == len(local.catalog.obscore)
    url = job.url
    job.delete()
    assert requests.get(url, timeout=5).status_code == 404
    # run_async: submit, run, wait, fetch and delete in one call
    assert len(service.run_async("SELECT TOP 2 dp_id FROM ivoa.ObsCore").to_table()) == 2
    bad = service.submit_job("SELECT FROM WHERE")
    bad.run()
    bad.wait(timeout=30)
    assert bad.phase == "ERROR"
    with pytest.raises(pyvo.dal.DALQueryError):
        bad.raise_if_error()
    bad.delete()


def test_clients_blocked_in_wait_hold_no_worker(service, local):
    import threading

    job = service.submit_job("SELECT TOP 1 dp_id FROM ivoa.ObsCore")  # left PENDING: every WAIT runs out
    phases = []

    def wait():
        r = requests.get(job.url, params={"WAIT": "2"}, timeout=10)
        phases.append(re.search(r"<uws:phase>(\w+)</uws:phase>", r.text).group(1))

    waiters = [threading.Thread(target=wait) for _ in range(12)]  # more than the server's 8 workers
    for t in waiters:
        t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    assert len(service.run_sync("SELECT TOP 1 dp_id FROM ivoa.ObsCore").to_table()) == 1
    assert time.monotonic() - t0 < 1.5
    for t in waiters:
        t.join()
    assert phases == ["PENDING"] * 12
    job.delete()


def test_uploads_inline_and_by_url(service, local):
    obs = local.obscore_table()
    targets = Table(
        {"ra": [float(obs["s_ra"][0])], "dec": [float(obs["s_dec"][0])], "radius": [0.01], "target_index": [5]}
    )
    joined = service.run_sync(
        "SELECT o.dp_id, t.target_index FROM ivoa.ObsCore AS o JOIN TAP_UPLOAD.targets AS t "
        "ON 1 = CONTAINS(POINT('ICRS', o.s_ra, o.s_dec), CIRCLE('ICRS', t.ra, t.dec, t.radius))",
        uploads={"targets": targets},
    ).to_table()
    assert len(joined) >= 1 and set(joined["target_index"]) == {5}
    # a previous job's result, uploaded by URL (TAPRegExt upload-http)
    job = service.submit_job("SELECT TOP 4 dp_id, s_ra FROM ivoa.ObsCore")
    job.run()
    job.wait(timeout=30)
    again = service.run_sync("SELECT COUNT(*) AS n FROM TAP_UPLOAD.prev", uploads={"prev": job.result_uri})
    assert int(again.to_table()["n"][0]) == 4
    job.delete()


def _sync(local, query: str, **kw):
    return requests.post(f"{local.base_url}/tap/sync", data={"QUERY": query, "LANG": "ADQL", **kw}, timeout=30)


@pytest.mark.parametrize(
    "query, message",
    [
        ("SELECT s_ra FROM ivoa.ObsCore WHERE " + "(" * 2000 + "s_ra > 0" + ")" * 2000, "nested more than"),
        (
            "SELECT s_ra FROM ivoa.ObsCore WHERE " + " OR ".join(f"dp_id = 'x{i:07d}'" for i in range(45_000)),
            "characters long",
        ),  # a 1 MB OR chain
        ("SELECT s_ra FROM ivoa.ObsCore WHERE s_ra >", "ADQL error"),
    ],
)
def test_malformed_queries_get_a_400_error_document(local, query, message):
    r = _sync(local, query)
    assert r.status_code == 400 and 'value="ERROR"' in r.text and message in r.text


def test_like_patterns_never_backtrack(local):
    t0 = time.monotonic()
    r = _sync(local, "SELECT access_url FROM ivoa.ObsCore WHERE access_url LIKE '" + "%_" * 30 + "%!'")
    assert r.status_code == 200 and time.monotonic() - t0 < 2.0  # 6 pairs took 101 s with a regex


def test_skyserver_and_hips2fits_bad_parameters_are_400(local, image_archive):
    sql = (
        "SELECT 0 AS idx, s.ra FROM SpecObj AS s JOIN dbo.fGetNearbySpecObjEq(150.0, 2.0, e) AS n "
        "ON s.specObjID = n.specObjID"
    )
    r = requests.get(
        f"{local.base_url}/sdss/dr17/en/tools/search/x_results.aspx",
        params={"cmd": sql, "format": "csv", "searchtool": "SQL"},
        timeout=10,
    )
    assert r.status_code == 400 and "must be numbers" in r.text
    base = {"hips": "CDS/P/FIRST", "fov": "0.1", "ra": "162.5", "dec": "30.6", "projection": "TAN"}
    for width, height, text in ((-64, -64, "positive"), (2048, 2048, "limit of 1000000 pixels")):
        r = requests.get(
            f"{image_archive.base_url}/hips2fits", params={**base, "width": width, "height": height}, timeout=10
        )
        assert r.status_code == 400 and text in r.json()["description"]


@needs_stilts
def test_taplint_finds_no_error(local):
    """STILTS taplint on the whole service: 0 errors, 0 failures.

    The LOC stage (ObsLocTAP, ``ivoa.obsplan``) is skipped: this service offers
    no observation-planning table, so that stage could only report its absence.
    """
    out = subprocess.run(
        [
            STILTS,
            "taplint",
            f"tapurl={local.base_url}/tap",
            "maxrepeat=3",
            "stages=TMV TME TMS TMC CPV CAP AVV QGE QPO QAS UWS MDQ OBS UPL EXA",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    totals = re.search(
        r"Totals: Errors: (\d+); Warnings: (\d+); Infos: \d+; Summaries: \d+; Failures: (\d+)", out.stdout
    )
    assert totals, out.stdout[-3000:] + out.stderr[-2000:]
    problems = [line for line in out.stdout.splitlines() if re.match(r"[EFW]-", line)]
    assert int(totals.group(1)) == 0 and int(totals.group(3)) == 0, "\n".join(problems)
    assert int(totals.group(2)) == 0, "\n".join(problems)


@needs_stilts
def test_votlint_finds_no_error_in_what_latentsky_writes(local, tmp_path):
    import pandas as pd

    from latentsky.ui.export import to_votable

    documents = {
        "result": _sync(local, "SELECT TOP 5 * FROM ivoa.ObsCore").content,
        "overflow": _sync(local, "SELECT * FROM ivoa.ObsCore", MAXREC="2").content,
        "computed": _sync(
            local, "SELECT COUNT(*) AS n, AVG(s_ra) AS mean_ra, MAX(target_name) AS last FROM ivoa.ObsCore"
        ).content,
        "error": _sync(local, "SELECT nothing FROM nowhere").content,
        "selection": to_votable(
            pd.DataFrame(
                {
                    "id": ["s1", "s2", "s3"],
                    "object": pd.Categorical(["a", None, "b"]),
                    "ra": [10.0, 11.0, np.nan],
                    "dec": [1.0, 2.0, 3.0],
                    "mjd": [55000.0, 55001.0, 55002.0],
                    "count": [1, 2, 3],
                    "path": ["/data/a.fits", "", "/data/é.fits"],
                    "_index": [0, 1, 2],
                }
            )
        ),
    }
    assert b'value="OVERFLOW"' in documents["overflow"] and b'value="ERROR"' in documents["error"]
    procs = {}
    for name, body in documents.items():
        (tmp_path / f"{name}.vot").write_bytes(body)
        procs[name] = subprocess.Popen(
            [STILTS, "votlint", str(tmp_path / f"{name}.vot")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    reports = {name: proc.communicate(timeout=120)[0] for name, proc in procs.items()}
    flagged = {name: text for name, text in reports.items() if re.search(r"^(ERROR|WARNING)", text, re.M)}
    assert not flagged, flagged


def test_capabilities_answer_within_100_ms_under_load(local, monkeypatch):
    """bench/archive_load.py, small: 200 silent connections and 20 expensive queries open (loopback).

    Half the probes must answer within 100 ms and every one within two seconds: under
    ``make test`` another test process shares the two cores, and a probe can wait for
    the CPU behind it, which no server can prevent.  The bench, on a quiet machine,
    reports the slowest probe against the 100 ms goal.
    """
    import importlib.util
    from pathlib import Path

    from latentsky.archives.local import adql

    path = Path(__file__).resolve().parents[3] / "bench" / "archive_load.py"
    spec = importlib.util.spec_from_file_location("archive_load", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(adql, "QUERY_SECONDS", 3.0)  # each query is stopped after 3 s: the test stays short
    result = bench.measure(local.base_url, idle=200, expensive=20, probes=20)
    # the load was there while probing: every query in flight at the start, some still at the end
    assert result["open_when_probes_began"] == 20 and result["open_when_probes_ended"] >= 1, result
    assert result["capabilities_ms_median"] < 100 and result["capabilities_ms_max"] < 2000, result
    assert result["queries_answered"] == 20, result
