"""Cutouts at scale: our streaming engine against astroquery's hips2fits one cutout at a time.

The local archive's hips2fits (its synthetic sky: real resampling of seeded
sources and noise, real FITS transfers; :mod:`latentsky.archives.local.sky`)
runs in its own process with a fixed latency (50 ms) and a fraction of
faulty answers (10 %, every kind the server knows: latency, 500, 503, 429,
reset, truncate, html, hostile_name).  Then, each in a fresh process:

1. ``fetch_cutouts`` of 10^4 and of 10^5 targets x 3 bands (SDSS g, r, i),
   28 x 28 pixels, ``--connections`` requests in flight: cells/s, peak
   memory (RSS) of the process;
2. the same 10^4 targets into a new folder, killed with SIGKILL when about
   half the cells are recorded, then run again to the end: the requests the
   second run sends for cells recorded before the kill (read from the
   server's own log), the cells missing at the end (``lost``), and the cells
   whose pixels differ from a direct request to a fault-free copy of the
   service (``wrong``), every cell checked;
3. a sequential loop calling ``astroquery.hips2fits`` one cutout after
   another (a few immediate retries on errors), timed on its first
   ``--seq-cells`` cells and scaled.

The bound is what the connections and the latency allow,
``connections / latency`` cells/s (one request per cell, no fault).  The
machine's CPU model and load are printed: client and server share its CPUs.
The last line is one JSON object.

Usage::

    python bench/cutouts.py                          # 10^4 and 10^5 targets (about half an hour)
    python bench/cutouts.py --targets 2000,10000 --seq-cells 100   # quicker
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

BANDS = ["SDSS-g", "SDSS-r", "SDSS-i"]
SIZE = 28


def targets(n: int, seed: int = 1):
    """``n`` positions: mostly in the north galactic cap (on the SDSS-like footprint), a tenth elsewhere."""
    from astropy.table import Table

    rng = np.random.default_rng(seed)
    ra = rng.uniform(110.0, 260.0, n)
    dec = np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(-5.0)), np.sin(np.radians(65.0)), n)))
    off = rng.random(n) < 0.1
    ra[off], dec[off] = rng.uniform(0.0, 360.0, off.sum()), rng.uniform(-85.0, -20.0, off.sum())
    return Table({"name": [f"t{i:06d}" for i in range(n)], "ra": ra, "dec": dec})


def _serve(root, latency, fault_rate, seed, retry_after, fault_latency, log_path, queue):
    """Child process: the local archive; ``/bench/hips2fits`` also logs every request's cell to ``log_path``."""
    from latentsky.archives.local import images
    from latentsky.archives.local.archive import LocalArchive
    from latentsky.archives.local.server import FAULT_KINDS

    archive = LocalArchive(
        root,
        latency=latency,
        fault_rate=fault_rate,
        faults=FAULT_KINDS,
        seed=seed,
        retry_after=retry_after,
        fault_latency=fault_latency,
    )
    log = open(log_path, "a", buffering=1) if log_path else None

    def logged(request):
        if log is not None:
            log.write(f"{request.param('hips')} {request.param('ra')} {request.param('dec')}\n")
        return images.synthetic_hips2fits(archive, request)

    archive.server.add_route("GET", "/bench/hips2fits", logged)
    queue.put(archive.base_url)
    archive.server.serve_forever()


def start_server(root, *, latency, fault_rate, seed, retry_after=0.5, fault_latency=0.1, log_path=None):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(
        target=_serve,
        args=(
            str(root),
            latency,
            fault_rate,
            seed,
            retry_after,
            fault_latency,
            str(log_path) if log_path else None,
            queue,
        ),
        daemon=True,
    )
    proc.start()
    return proc, queue.get(timeout=120)


def child_run(args) -> int:
    """In a fresh process: one fetch_cutouts run; prints a JSON line (elapsed, cells, requests, peak RSS)."""
    import resource

    from astropy.table import Table

    from latentsky.archives.cutouts import fetch_cutouts
    from latentsky.config import conf

    conf.set(hips2fits_url=args.url, timeout=10.0)
    table = Table.read(args.table)
    t0 = time.monotonic()
    result = fetch_cutouts(
        table, args.dest, bands=BANDS, size=SIZE, connections=args.connections, max_attempts=10, backoff=0.1
    )
    elapsed = time.monotonic() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "elapsed": elapsed,
                "cells": len(table) * len(BANDS),
                "requests": result.requests,
                "counts": result.counts,
                "peak_rss_mb": usage.ru_maxrss / 1024,
                "cpu_s": usage.ru_utime + usage.ru_stime,
            }
        ),
        flush=True,
    )
    return 0


def run_child(table, dest, url, connections) -> subprocess.Popen:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--table",
        str(table),
        "--dest",
        str(dest),
        "--url",
        url,
        "--connections",
        str(connections),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})


def timed_run(table, dest, url, connections) -> dict:
    proc = run_child(table, dest, url, connections)
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"the run of {table} failed ({proc.returncode}): {out[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def recorded(dest: Path) -> set:
    """(row, band) of the cells the progress record says are finished (ok or off the footprint)."""
    with sqlite3.connect(str(dest / "progress.sqlite")) as db:
        return {(r, b) for r, b in db.execute("SELECT row, band FROM cells WHERE status IN (1, 2)")}


def kill_and_resume(table_path, work, url_logged, log_path, connections) -> dict:
    """Kill a run half way (SIGKILL), run it again; the rerun's requests for finished cells, from the server's log."""
    from astropy.table import Table

    dest = work / "killed"
    cells = len(Table.read(table_path)) * len(BANDS)
    proc = run_child(table_path, dest, url_logged, connections)
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        try:
            if len(recorded(dest)) >= cells // 2:
                break
        except sqlite3.Error:
            pass  # not made yet
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = recorded(dest)
    mark = log_path.stat().st_size
    rerun = timed_run(table_path, dest, url_logged, connections)
    with open(log_path) as fh:
        fh.seek(mark)
        asked = [line.split() for line in fh if line.strip()]
    from latentsky.archives.cutouts import open_cutouts

    _, index = open_cutouts(dest)  # the positions the runs asked for, as they formatted them
    hips = {f"CDS/P/SDSS9/{b[-1]}": k for k, b in enumerate(BANDS)}
    where = {(repr(float(ra)), repr(float(dec))): i for i, (ra, dec) in enumerate(zip(index["ra"], index["dec"]))}
    cells_asked = [(where.get((ra, dec)), hips.get(h)) for h, ra, dec in asked]
    if any(i is None or b is None for i, b in cells_asked):
        raise SystemExit("the server's log names a cell that is not one of the targets")
    again = sum(1 for cell in cells_asked if cell in before)
    return {
        "dest": dest,
        "recorded_at_kill": len(before),
        "rerun_requests": len(asked),
        "resume_rerequested": again,
        "rerun": rerun,
    }


def verify(dest: Path, url: str, workers: int = 8) -> tuple[int, int]:
    """(lost, wrong): cells not finished or without pixels; cells whose pixels differ from a direct request."""
    import requests

    from latentsky.archives.cutouts import hips2fits_params, open_cutouts, parse_cutout

    images, index = open_cutouts(dest)
    cube = np.asarray(images[:])
    ra, dec = index["ra"].to_numpy(), index["dec"].to_numpy()
    lost = wrong = 0
    session = requests.Session()

    def direct(cell):
        i, b = cell
        params = hips2fits_params(f"CDS/P/SDSS9/{BANDS[b][-1]}", ra[i], dec[i], SIZE, 0.396)
        r = session.get(url, params=params, timeout=30)
        r.raise_for_status()
        return parse_cutout(r.content, SIZE)

    todo = [(i, b) for i in range(len(index)) for b in range(len(BANDS))]
    with ThreadPoolExecutor(workers) as pool:
        for (i, b), (status, image, _) in zip(todo, pool.map(direct, todo, chunksize=64)):
            got = index[f"status_{BANDS[b]}"].iloc[i]
            if got not in ("ok", "off_footprint") or (got == "ok" and not np.isfinite(cube[i, b]).any()):
                lost += 1
            elif got != status or (image is not None and not np.array_equal(cube[i, b], image)):
                wrong += 1
    return lost, wrong


def sequential(table, url: str, n: int) -> tuple[float, int]:
    """astroquery.hips2fits, one cutout after another (up to 5 immediate tries each): (cells/s, failed)."""
    from latentsky.archives.cutouts import fetch_one
    from latentsky.config import conf

    conf.set(hips2fits_url=url, timeout=10.0)
    fetch_one("CDS/P/SDSS9/g", float(table["ra"][0]), float(table["dec"][0]), SIZE, 0.396)  # imports, warm-up
    cells = [(i, b) for i in range(len(table)) for b in range(len(BANDS))][:n]
    failed = 0
    t0 = time.monotonic()
    for i, b in cells:
        for _ in range(5):
            status, _, _ = fetch_one(
                f"CDS/P/SDSS9/{BANDS[b][-1]}", float(table["ra"][i]), float(table["dec"][i]), SIZE, 0.396
            )
            if status != "error":
                break
        else:
            failed += 1
    return len(cells) / (time.monotonic() - t0), failed


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return next(
        (line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "unknown"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", default="10000,100000", help="two target counts, comma-separated")
    p.add_argument("--connections", type=int, default=16, help="requests in flight (default 16)")
    p.add_argument("--latency-ms", type=float, default=50.0)
    p.add_argument("--fault-rate", type=float, default=0.10)
    p.add_argument("--seq-cells", type=int, default=300, help="cells timed through the sequential loop")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--table", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--dest", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child_run(args)

    small, large = (int(x) for x in args.targets.split(","))
    latency = args.latency_ms / 1000
    work = Path(tempfile.mkdtemp(prefix="latentsky-cutouts-bench-", dir=args.workdir))
    servers = []
    try:
        (work / "empty").mkdir()
        log_path = work / "requests.log"
        faulty, base = start_server(
            work / "empty", latency=latency, fault_rate=args.fault_rate, seed=7, log_path=log_path
        )
        clean, clean_base = start_server(work / "empty", latency=0.0, fault_rate=0.0, seed=0)
        servers += [faulty, clean]
        url = f"{base}/synthetic/hips2fits"
        load = [os.getloadavg()[0]]
        print(f"CPU: {cpu_model()} ({os.cpu_count()} CPUs); load average {load[0]:.1f}")
        print(
            f"server {base}: latency {args.latency_ms:g} ms, {args.fault_rate:.0%} faults of every kind; "
            f"{args.connections} connections; {len(BANDS)} bands x {SIZE}x{SIZE} px"
        )
        tables = {}
        for n in (small, large):
            tables[n] = work / f"targets{n}.ecsv"
            targets(n).write(tables[n])
        runs = {}
        import psutil

        server_cpu = psutil.Process(faulty.pid)
        for n in (small, large):
            before = sum(server_cpu.cpu_times()[:2])
            runs[n] = timed_run(tables[n], work / f"run{n}", url, args.connections)
            load.append(os.getloadavg()[0])
            r = runs[n]
            print(
                f"ours, {n:>7,} targets: {r['cells'] / r['elapsed']:8.1f} cells/s ({r['elapsed']:.1f} s, "
                f"{r['requests']:,} requests, {r['counts']}, peak RSS {r['peak_rss_mb']:.0f} MB; CPU per cell: "
                f"client {1e3 * r['cpu_s'] / r['cells']:.2f} ms, server "
                f"{1e3 * (sum(server_cpu.cpu_times()[:2]) - before) / r['cells']:.2f} ms)"
            )
        killed = kill_and_resume(tables[small], work, f"{base}/bench/hips2fits", log_path, args.connections)
        lost, wrong = verify(killed["dest"], f"{clean_base}/synthetic/hips2fits")
        load.append(os.getloadavg()[0])
        print(
            f"kill -9 at {killed['recorded_at_kill']:,} recorded cells, then a rerun: {killed['rerun_requests']:,} "
            f"requests, {killed['resume_rerequested']} for cells recorded before the kill; lost {lost}, "
            f"wrong {wrong} (every cell against a direct request)"
        )
        seq_rate, seq_failed = sequential(targets(small), url, args.seq_cells)
        rate_small = runs[small]["cells"] / runs[small]["elapsed"]
        rate_large = runs[large]["cells"] / runs[large]["elapsed"]
        bound = args.connections / latency
        print(
            f"sequential astroquery.hips2fits: {seq_rate:.1f} cells/s (timed on {args.seq_cells} cells, "
            f"{seq_failed} failed; {runs[large]['cells'] / seq_rate / 3600:.1f} h for {large:,} targets)"
        )
        req_rate = runs[large]["requests"] / runs[large]["elapsed"]
        per_cell = runs[large]["requests"] / runs[large]["cells"]
        print(
            f"speed-up {rate_large / seq_rate:.1f}x; bound {bound:.0f} cells/s = {args.connections} connections / "
            f"{args.latency_ms:g} ms: ours {rate_large / bound:.0%} of it ({per_cell:.3f} requests per cell with "
            f"the faults: {req_rate:.0f} requests/s, {req_rate / bound:.0%} of the same bound in requests); "
            f"load average over the runs {', '.join(f'{x:.1f}' for x in load)}"
        )
        out = {
            "cells_per_s_10000": round(rate_small, 2),
            "cells_per_s_100000": round(rate_large, 2),
            "sequential_cells_per_s": round(seq_rate, 2),
            "speedup": round(rate_large / seq_rate, 2),
            "fraction_of_bound": round(rate_large / bound, 3),
            "linearity": round(rate_small / rate_large, 3),
            "peak_rss_mb_10000": round(runs[small]["peak_rss_mb"], 1),
            "peak_rss_mb_100000": round(runs[large]["peak_rss_mb"], 1),
            "lost": lost,
            "wrong": wrong,
            "resume_rerequested": killed["resume_rerequested"],
            "requests_per_s_100000": round(req_rate, 2),
            "request_fraction_of_bound": round(req_rate / bound, 3),
            "targets": [small, large],
            "connections": args.connections,
            "latency_ms": args.latency_ms,
            "fault_rate": args.fault_rate,
            "bound_cells_per_s": bound,
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "loadavg": [round(x, 2) for x in load],
        }
        print(json.dumps(out))
        return 0 if lost == wrong == killed["resume_rerequested"] == 0 else 1
    finally:
        for proc in servers:
            proc.terminate()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
