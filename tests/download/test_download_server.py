"""The loopback server core: files, ranges, routes and every injected fault, seen by a real client."""

from __future__ import annotations

import time

import pytest
import requests

from latentsky.archives.local.server import FAULT_KINDS, HOSTILE_FILENAME, LOGIN_PAGE, HTTPError, LocalServer, Response


@pytest.fixture
def spectrum(archive, fits_files):
    """URL and bytes of a small real spectrum served by ``archive``."""
    path = fits_files["spectrum"]
    return archive.url_for(path), path.read_bytes()


def test_serves_files_with_head_length_and_etag(archive, spectrum):
    url, data = spectrum
    assert archive.base_url.startswith("http://127.0.0.1:")
    head = requests.head(url, timeout=5)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["Content-Length"]) == len(data)
    assert head.headers["Accept-Ranges"] == "bytes" and head.headers["ETag"]
    assert head.headers["Content-Type"] == "application/fits"
    r = requests.get(url, timeout=5)
    assert r.content == data and r.headers["ETag"] == head.headers["ETag"]
    assert len(archive.files()) == 6


@pytest.mark.parametrize(
    "rng, expected", [("bytes=100-", slice(100, None)), ("bytes=10-19", slice(10, 20)), ("bytes=-50", slice(-50, None))]
)
def test_range_requests(archive, spectrum, rng, expected):
    url, data = spectrum
    r = requests.get(url, headers={"Range": rng}, timeout=5)
    assert r.status_code == 206
    assert r.content == data[expected]
    assert r.headers["Content-Range"].endswith(f"/{len(data)}")


def test_unsatisfiable_range_and_ignore_range_and_if_range(archive, spectrum):
    url, data = spectrum
    r = requests.get(url, headers={"Range": f"bytes={len(data)}-"}, timeout=5)
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{len(data)}"
    # If-Range with a stale ETag: the whole (changed) file, not a splice
    r = requests.get(url, headers={"Range": "bytes=100-", "If-Range": '"stale"'}, timeout=5)
    assert r.status_code == 200 and r.content == data
    archive.ignore_range = True
    r = requests.get(url, headers={"Range": "bytes=100-"}, timeout=5)
    assert r.status_code == 200 and r.content == data and "Accept-Ranges" not in r.headers


def test_routes_params_and_errors(archive):
    def tap(req):
        return Response.json(
            {
                "query": req.param("query"),
                "lang": req.param("LANG"),
                "upload": {k: len(v) for k, v in req.files.items()},
            }
        )

    def cutout(req):
        if req.path_params["survey"] == "nope":
            raise HTTPError(404, "unknown survey nope")
        return Response.text(f"{req.path_params['survey']} ra={req.param('ra')}")

    archive.add_route("GET", "/tap/sync", tap)
    archive.add_route("POST", "/tap/sync", tap)
    archive.add_route("GET", "/cutout/{survey}", cutout)
    archive.add_route("GET", "/boom", lambda req: 1 / 0)
    archive.add_route("GET", "/none", lambda req: None)
    base = archive.base_url
    assert requests.get(base + "/tap/sync", params={"QUERY": "SELECT 1", "lang": "ADQL"}, timeout=5).json() == {
        "query": "SELECT 1",
        "lang": "ADQL",
        "upload": {},
    }
    r = requests.post(
        base + "/tap/sync", data={"QUERY": "SELECT 2"}, files={"quasars": ("q.xml", b"<VOTABLE/>")}, timeout=5
    )
    assert r.json() == {"query": "SELECT 2", "lang": None, "upload": {"quasars": 10}}
    assert requests.get(base + "/cutout/first", params={"ra": "10.5"}, timeout=5).text == "first ra=10.5"
    r = requests.get(base + "/cutout/nope", timeout=5)
    assert r.status_code == 404 and "unknown survey" in r.text
    r = requests.get(base + "/boom", timeout=5)
    assert r.status_code == 500 and "ZeroDivisionError" in r.text
    r = requests.get(base + "/none", timeout=5)
    assert r.status_code == 500 and "returned NoneType, not a Response" in r.text
    assert requests.delete(base + "/tap/sync", timeout=5).status_code == 405
    assert requests.get(base + "/nothing/here", timeout=5).status_code == 404
    # a URL climbing out of the mounted folder finds nothing
    assert requests.get(base + "/files/%2e%2e/%2e%2e/etc/passwd", timeout=5).status_code == 404
    # generated bodies get ranges too
    r = requests.get(base + "/cutout/first", params={"ra": "1"}, headers={"Range": "bytes=0-4"}, timeout=5)
    assert r.status_code == 206 and r.text == "first"


def _fault_sequence(path, seed):
    with LocalServer(path.parent, fault_rate=0.5, faults=("500", "503", "429"), seed=seed) as server:
        url = server.url_for(path)
        return [requests.get(url, timeout=5).status_code for _ in range(20)]


def test_rate_faults_are_deterministic(fits_files):
    path = fits_files["spectrum"]
    a, b, c = _fault_sequence(path, 1), _fault_sequence(path, 1), _fault_sequence(path, 2)
    assert a == b
    assert a != c
    assert 3 <= sum(s != 200 for s in a) <= 17


def test_fail_first_then_success(archive, spectrum, fits_files):
    url, data = spectrum
    archive.fail_first("/files/*.fit*", 2, "503")
    archive.fail_first("/files/*.fit*", 1, "429")
    codes = [requests.get(url, timeout=5).status_code for _ in range(4)]
    assert codes == [503, 503, 429, 200]
    other = archive.url_for(fits_files["spectrum2"])
    assert requests.get(other, timeout=5).status_code == 503  # counted per path
    assert [r.fault for r in archive.log] == ["503", "503", "429", None, "503"]


def test_each_fault_kind_is_visible_to_a_client(archive, spectrum):
    url, data = spectrum
    archive.retry_after = 7
    archive.fault_latency = 0.3
    seen = {}
    for kind in FAULT_KINDS:
        archive.fail_first("*", 1, kind)
        t0 = time.monotonic()
        try:
            r = requests.get(url, timeout=5)
            seen[kind] = (r.status_code, r.headers, r.content, time.monotonic() - t0)
        except requests.RequestException as err:
            seen[kind] = err
    assert seen["latency"][0] == 200 and seen["latency"][3] >= 0.3 and seen["latency"][2] == data
    assert seen["500"][0] == 500
    assert seen["503"][0] == 503 and seen["503"][1]["Retry-After"] == "7"
    assert seen["429"][0] == 429 and seen["429"][1]["Retry-After"] == "7"
    assert isinstance(seen["reset"], requests.ConnectionError) or "reset" in str(seen["reset"]).lower()
    assert "IncompleteRead" in str(seen["truncate"])
    assert seen["html"][0] == 200 and seen["html"][1]["Content-Type"].startswith("text/html")
    assert seen["html"][2] == LOGIN_PAGE
    assert seen["hostile_name"][2] == data
    assert HOSTILE_FILENAME in seen["hostile_name"][1]["Content-Disposition"]
    # the server is still healthy after all that
    assert requests.get(url, timeout=5).content == data


def test_latency_bandwidth_and_token(fits_files):
    path = fits_files["image"]  # the FIRST cutout, 14 400 bytes: ~0.29 s at 50 kB/s
    with LocalServer(path.parent, latency=0.2, bandwidth=50_000) as server:
        url = server.url_for(path)
        t0 = time.monotonic()
        assert requests.get(url, timeout=5).content == path.read_bytes()
        assert 0.4 <= time.monotonic() - t0 < 2.0
        server.require_token("/files/", "s3cret")
        r = requests.get(url, timeout=5)
        assert r.headers["Content-Type"].startswith("text/html") and b"Login" in r.content
        r = requests.get(url, headers={"Authorization": "Bearer s3cret"}, timeout=5)
        assert r.content[:6] == b"SIMPLE"


def test_bad_settings_are_refused(fits_dir):
    with pytest.raises(ValueError, match="unknown fault kinds"):
        LocalServer(fits_dir, fault_rate=0.1, faults=("explode",))
    with pytest.raises(ValueError, match=r"fault_rate must be in \[0, 1\]"):
        LocalServer(fits_dir, fault_rate=2)
    with pytest.raises(NotADirectoryError):
        LocalServer(fits_dir / "nope")
