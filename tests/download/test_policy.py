"""The one HTTP policy: statuses, Retry-After and backoff, applied by urllib3's Retry on the archive session."""

from __future__ import annotations

import importlib.metadata
import random
import time

import pytest

from latentsky.archives.base import request
from latentsky.archives.local.server import LocalServer, Response
from latentsky.config import conf
from latentsky.download.policy import (
    RETRYABLE_STATUS,
    USER_AGENT,
    RetryPolicy,
    answer_error,
    check_answer,
    looks_like_html,
)
from latentsky.exceptions import ArchiveError, DownloadError


@pytest.fixture(scope="module")
def server():
    """A loopback server whose ``/status/{code}/{name}`` answers ``code`` to the first ``?n=`` requests (default 1)
    of each path, then 200, and ``/ok/{name}`` always 200; fault injection (``fail_first``) as the local
    archive has it."""
    seen: dict[str, int] = {}

    def flaky(r):
        seen[r.path] = seen.get(r.path, 0) + 1
        if seen[r.path] <= int(r.param("n") or 1):
            return Response(b"not now", int(r.path_params["code"]), "text/plain")
        return Response(b"the answer", 200, "text/plain")

    srv = LocalServer(retry_after=0.05, fault_latency=1.0).start()
    for method in ("GET", "POST"):
        srv.add_route(method, "/status/{code}/{name}", flaky)
    srv.add_route("GET", "/ok/{name}", lambda r: Response(b"the answer", 200, "text/plain"))
    yield srv
    srv.stop()


@pytest.fixture
def quick(server):
    server.clear()
    server.retry_after = 0.05
    with conf.set_temp(retry_backoff=0.01, max_retries=3, timeout=10.0):
        yield server


def _statuses(server, path):
    return [r.status for r in server.log if r.path == path]


@pytest.mark.parametrize("code", sorted(RETRYABLE_STATUS))
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_every_retryable_status_is_asked_again_by_the_archive_session(quick, code, method):
    path = f"/status/{code}/{method}"
    response = request(method, quick.base_url + path, archive="test")
    assert response.text == "the answer"
    assert _statuses(quick, path) == [code, 200]


def test_a_status_that_stays_bad_ends_after_conf_max_retries_attempts_and_says_so(quick):
    path = "/status/503/stays"
    with pytest.raises(ArchiveError, match=r"test: HTTP 503 from .*/status/503/stays.*\(after 3 attempts\)"):
        request("GET", quick.base_url + path + "?n=99", archive="test")
    assert _statuses(quick, path) == [503] * 3
    conf.set(max_retries=1)  # read per request: the session made before follows it
    with pytest.raises(ArchiveError, match="HTTP 503") as err:
        request("GET", quick.base_url + path + "?n=99", archive="test")
    assert "attempts" not in str(err.value) and _statuses(quick, path) == [503] * 4


def test_refusals_and_timeouts_are_final(quick):
    with pytest.raises(ArchiveError, match="HTTP 404"):
        request("GET", quick.base_url + "/status/404/refused", archive="test")
    assert _statuses(quick, "/status/404/refused") == [404]
    quick.fail_first("/ok/slow", 1, "latency")  # 1 s before the answer
    with pytest.raises(ArchiveError, match=r"no answer from .* within 0.3 s"):
        request("GET", quick.base_url + "/ok/slow", archive="test", timeout=0.3)
    quick.wait_idle()
    assert len([r for r in quick.log if r.path == "/ok/slow"]) == 1


def test_retry_after_is_waited_and_a_cut_answer_is_asked_again(quick):
    quick.retry_after = 0.4
    quick.fail_first("/ok/later", 1, "503")
    t0 = time.monotonic()
    assert request("GET", quick.base_url + "/ok/later", archive="test").text == "the answer"
    assert time.monotonic() - t0 >= 0.4  # the backoff is 0.01 s: the wait is the server's
    quick.fail_first("/ok/cut", 1, "truncate")
    assert request("GET", quick.base_url + "/ok/cut", archive="test").text == "the answer"
    assert len([r for r in quick.log if r.path == "/ok/cut"]) == 2


def test_the_backoff_is_full_jitter_at_least_retry_after_and_bounded():
    policy = RetryPolicy(max_attempts=4, backoff=0.5, max_backoff=3.0)
    rng = random.Random(0)
    waits = [policy.delay(3, None, rng) for _ in range(2000)]
    assert 0 <= min(waits) < 0.05 and 1.9 < max(waits) <= 2.0  # uniform in [0, 0.5 * 2**2]
    assert all(0 <= policy.delay(20, None, rng) <= 3.0 for _ in range(200))  # capped at max_backoff
    assert policy.delay(1, 2.5, rng) >= 2.5 and policy.delay(1, 1e6, rng) == 30.0  # Retry-After: up to 10x the cap
    with conf.set_temp(max_retries=7, retry_backoff=0.25):
        assert (RetryPolicy().max_attempts, RetryPolicy().backoff) == (7, 0.25)
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_answers_are_judged_by_one_rule():
    for code in (408, 425, 429, 500, 503):
        assert answer_error("k", "u", code, "", {"Retry-After": "2"}).retryable
    assert answer_error("k", "u", 503, "", {"Retry-After": "2"}).retry_after == 2.0
    for code in (400, 401, 403, 404, 410, 501):
        assert not answer_error("k", "u", code, "", {}).retryable
    with pytest.raises(DownloadError, match="HTML page") as err:
        check_answer("k", "u", 200, "OK", {"Content-Type": "text/html"}, b"<html>")
    assert err.value.retryable
    assert looks_like_html(b"<?xml version='1.0'?><html>") and looks_like_html(b"<?xml version='1.0'?>", "fits")
    assert not looks_like_html(b"<?xml version='1.0'?><VOTABLE/>", "votable")
    check_answer("k", "u", 200, "OK", {"Content-Type": "application/fits"}, b"SIMPLE  =")


def test_one_user_agent_from_the_package_version():
    version = importlib.metadata.version("latentsky")
    assert USER_AGENT.startswith(f"latentsky/{version} ")
