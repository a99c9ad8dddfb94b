"""Does the local archive keep answering while a classroom loads it?

On loopback only: the local archive over the bundled sample; ``--idle`` TCP
connections opened and left silent (laptops with a tab open, or a slowloris
client) and ``--expensive`` ADQL queries in flight at once (a five-way
self-join of ``ivoa.ObsCore``, 11.8 million rows, stopped by the service's
time limit ``--query-seconds``); meanwhile ``--probes`` requests of
``/tap/capabilities``, one every 50 ms, are timed.  The same probes on the idle
server are the baseline printed beside them.  Every loop is bounded in count
and time, and everything is closed at the end.

Ends with one JSON line: ``idle_connections, expensive_queries,
open_when_probes_began, open_when_probes_ended, probes, capabilities_ms_median,
capabilities_ms_p95, capabilities_ms_max, baseline_ms_median, queries_answered,
query_seconds``.
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import statistics
import subprocess
import threading
import time

import requests

EXPENSIVE = (
    "SELECT COUNT(*) AS n FROM ivoa.ObsCore AS a, ivoa.ObsCore AS b, ivoa.ObsCore AS c, "
    "ivoa.ObsCore AS d, ivoa.ObsCore AS e WHERE a.t_min + b.t_min + c.t_min + d.t_min + e.t_min < 0"
)


def _probe(url: str, n: int, interval: float) -> list[float]:
    """Milliseconds of ``n`` GETs of ``url``, one every ``interval`` seconds, on one keep-alive session."""
    out = []
    with requests.Session() as session:
        for _ in range(n):
            t0 = time.perf_counter()
            r = session.get(url, timeout=10)
            out.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200 and b"TableAccess" in r.content
            time.sleep(interval)
    return out


def measure(
    base_url: str,
    *,
    idle: int = 200,
    expensive: int = 20,
    probes: int = 40,
    interval: float = 0.05,
    settle: float = 0.5,
) -> dict:
    """Probe ``/tap/capabilities`` with ``idle`` silent connections and ``expensive`` queries open."""
    host, port = base_url.split("//")[1].split(":")
    caps = f"{base_url}/tap/capabilities"
    baseline = _probe(caps, max(5, probes // 4), interval)
    sockets = [socket.create_connection((host, int(port)), timeout=10) for _ in range(idle)]
    answers: list[int] = []

    def query():
        try:
            r = requests.post(f"{base_url}/tap/sync", data={"QUERY": EXPENSIVE, "LANG": "ADQL"}, timeout=300)
            answers.append(r.status_code)
        except requests.RequestException:
            answers.append(0)

    threads = [threading.Thread(target=query, daemon=True) for _ in range(expensive)]
    try:
        for t in threads:
            t.start()
        time.sleep(settle)  # the queries are in: every worker busy, the rest queued
        open_before = sum(t.is_alive() for t in threads)
        loaded = _probe(caps, probes, interval)
        open_after = sum(t.is_alive() for t in threads)
    finally:
        for sock in sockets:
            sock.close()
        for t in threads:
            t.join(timeout=600)
    loaded.sort()
    return {
        "idle_connections": idle,
        "expensive_queries": expensive,
        "open_when_probes_began": open_before,
        "open_when_probes_ended": open_after,
        "probes": len(loaded),
        "capabilities_ms_median": round(statistics.median(loaded), 2),
        "capabilities_ms_p95": round(loaded[int(0.95 * (len(loaded) - 1))], 2),
        "capabilities_ms_max": round(loaded[-1], 2),
        "baseline_ms_median": round(statistics.median(baseline), 2),
        "queries_answered": sum(1 for s in answers if s in (200, 400)),
    }


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.SubprocessError):
        return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=200)
    parser.add_argument("--expensive", type=int, default=20)
    parser.add_argument("--probes", type=int, default=60)
    parser.add_argument(
        "--query-seconds", type=float, default=10.0, help="the service's query time limit during the run"
    )
    args = parser.parse_args()

    from latentsky.archives.local import adql
    from latentsky.archives.local.archive import LocalArchive
    from latentsky.data import sample_path

    adql.QUERY_SECONDS = args.query_seconds
    with LocalArchive(sample_path()) as archive:
        result = measure(archive.base_url, idle=args.idle, expensive=args.expensive, probes=args.probes)
        archive.server.wait_idle(60)
    result["query_seconds"] = args.query_seconds
    print(f"CPU: {_cpu()}")
    print(f"/tap/capabilities, idle server:           median {result['baseline_ms_median']:.1f} ms")
    print(
        f"/tap/capabilities, {args.idle} idle connections + {args.expensive} expensive queries: "
        f"median {result['capabilities_ms_median']:.1f} ms, p95 {result['capabilities_ms_p95']:.1f} ms, "
        f"max {result['capabilities_ms_max']:.1f} ms ({result['queries_answered']} queries answered)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
