"""The request pool: many small answers through the real loopback server, with the download policy."""

from __future__ import annotations

import time

import pytest

from latentsky.archives.local.server import LocalServer, Response
from latentsky.download.policy import RetryPolicy
from latentsky.download.pool import Request, RequestPool


@pytest.fixture(scope="module")
def server():
    srv = LocalServer(latency=0.02, retry_after=0.3).start()
    srv.add_route(
        "GET", "/n/{i}", lambda r: Response(f"answer {r.path_params['i']}".encode(), content_type="text/plain")
    )
    srv.add_route("GET", "/missing/{i}", lambda r: Response(b"no such thing", 404, "text/plain"))
    yield srv
    srv.stop()


def test_every_answer_once_within_the_connection_limits(server):
    server.clear()
    pulled = []

    def source():
        for i in range(60):
            pulled.append(i)
            yield Request(i, f"{server.base_url}/n/{i}")

    pool = RequestPool(max_connections=6, max_connections_per_host=4, window=10)
    got = {}
    for outcome in pool.imap(source(), parse=lambda body, headers: body.decode()):
        got[outcome.request.key] = outcome.value
        assert len(pulled) - len(got) <= 10  # the window: never more than 10 asked and not yet handed over
    assert got == {i: f"answer {i}" for i in range(60)}
    assert server.max_in_flight <= 4 and pool.stats.requests == 60 and pool.stats.retries == 0


def test_retry_after_is_waited_without_holding_a_connection_and_refusals_are_final(server):
    server.clear()
    server.fail_first("/n/*", 1, "503")  # every path's first request: Retry-After 0.3 s
    pool = RequestPool(max_connections=4, max_connections_per_host=4, policy=RetryPolicy(max_attempts=3, backoff=0.01))
    t0 = time.monotonic()
    outcomes = list(
        pool.imap(
            [Request(i, f"{server.base_url}/n/{i}") for i in range(8)]
            + [Request("gone", f"{server.base_url}/missing/1")],
            parse=lambda b, h: b,
        )
    )
    elapsed = time.monotonic() - t0
    ok = [o for o in outcomes if o.ok]
    (gone,) = [o for o in outcomes if not o.ok]
    assert len(ok) == 8 and all(o.request.attempts == 2 for o in ok)
    assert gone.request.attempts == 1 and not gone.error.retryable and "HTTP 404" in gone.error.problem
    # eight retries waited 0.3 s each side by side: about one wait, not eight
    assert 0.3 <= elapsed < 1.5


def test_a_damaged_answer_is_asked_again(server):
    server.clear()
    server.fail_first("/n/*", 1, "truncate")
    server.fail_first("/n/*", 1, "html")
    outcomes = list(
        RequestPool(max_connections=2, policy=RetryPolicy(max_attempts=4, backoff=0.01)).imap(
            [Request(i, f"{server.base_url}/n/{i}") for i in range(3)], parse=lambda b, h: b.decode()
        )
    )
    assert sorted(o.value for o in outcomes) == ["answer 0", "answer 1", "answer 2"]
    assert all(o.request.attempts == 3 for o in outcomes)
