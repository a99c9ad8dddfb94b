"""Fault-and-kill soak of ``latentsky download``: nothing lost, nothing corrupt, nothing fetched twice.

The download bench's server (:func:`bench/download.py <bench_server>`: real
SDSS spectra cut to about 100 kB, on 127.0.0.1, 10 % of the requests given a
fault of every kind the server knows: latency, 500, 503, 429, reset, truncate,
HTML login page, hostile file name) serves N files.  ``latentsky download``
runs in a child process and is killed with SIGKILL at ``--kills`` random
moments (each after a random share of the files is in place, plus a random
delay, so kills land mid-transfer), and started again each time; the last run
goes to the end.  Then:

* ``lost``: files missing from the destination;
* ``corrupt``: files whose SHA-256 differs from the server's;
* ``redownloaded_verified``: requests, after a restart, for a file that was
  already verified and in place (under its final name) when the client was
  killed (it must be recognised, never fetched again);
* ``leftover_temp``: ``.part`` files or temporary folders left at the end.

Bounded: ``--files`` (default 300) files, each run at most ``--run-timeout``
seconds, the whole soak at most ``--budget`` seconds; loopback only.  The last
line is one JSON object with the keys ``kills, files, lost, corrupt,
redownloaded_verified, leftover_temp`` (and context).

Usage::

    python bench/soak.py
    python bench/soak.py --files 100 --kills 5 --seed 3
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def _download_bench():
    """bench/download.py as a module (its sources and server set-up are reused as they are)."""
    spec = importlib.util.spec_from_file_location("bench_download", REPO / "bench" / "download.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def in_place(dest: Path) -> set[str]:
    """Names of the files under their final name (verified: a file is renamed into place after its checks)."""
    try:
        return {
            e.name
            for e in os.scandir(dest)
            if e.is_file() and not e.name.startswith(".") and not e.name.endswith(".part")
        }
    except FileNotFoundError:
        return set()


def leftovers(dest: Path) -> list[str]:
    """``.part`` files and temporary folders in the destination."""
    return sorted(
        e.name
        for e in os.scandir(dest)
        if e.name.endswith(".part") or (e.is_dir() and (".tmp" in e.name or ".partial" in e.name))
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=300, help="number of files (default 300)")
    p.add_argument("--size", type=int, default=100_000, help="approximate file size, bytes")
    p.add_argument("--kills", type=int, default=5, help="SIGKILLs of the client (default 5)")
    p.add_argument("--latency-ms", type=float, default=20.0, help="server latency per request, ms")
    p.add_argument("--fault-rate", type=float, default=0.10, help="fraction of requests given a fault")
    p.add_argument("--connections", type=int, default=8, help="client concurrency")
    p.add_argument("--retry-after", type=float, default=0.2, help="Retry-After of 429/503 faults, s")
    p.add_argument("--run-timeout", type=float, default=300.0, help="most seconds of one client run")
    p.add_argument("--budget", type=float, default=600.0, help="most seconds of the whole soak")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = p.parse_args(argv)

    bench = _download_bench()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="latentsky-soak-", dir=args.workdir))
    t_start = time.monotonic()
    server = None
    try:
        (work / "src").mkdir()
        sources = bench.make_sources(work / "src", 50, args.size)
        digests = [hashlib.sha256(s.read_bytes()).hexdigest() for s in sources]
        server = bench.bench_server(
            sources, args.latency_ms / 1000, args.fault_rate, args.seed, args.retry_after
        ).start()
        names = [f"f{i:05d}.fits" for i in range(args.files)]
        from astropy.table import Table

        table = work / "products.ecsv"
        Table({"access_url": [f"{server.base_url}/bench/{n}" for n in names]}).write(table)
        dest = work / "dest"
        cmd = [
            sys.executable,
            "-m",
            "latentsky.cli",
            "download",
            str(table),
            "--dest",
            str(dest),
            "--no-progress",
            "--max-connections",
            str(args.connections),
            "--max-connections-per-host",
            str(args.connections),
            "--max-retries",
            "30",
            "--timeout",
            "10",
        ]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
        print(
            f"{args.files} files of about {args.size / 1e3:.0f} kB from {server.base_url}; latency "
            f"{args.latency_ms:g} ms, {args.fault_rate:.0%} faults of every kind; {args.kills} SIGKILLs; "
            f"CPU: {cpu_model()} ({os.cpu_count()} CPUs)"
        )

        # kill points: once a random share (5-25 %) of the files still missing is in place, then a random
        # delay (0-0.2 s), so each kill lands mid-run, most often mid-transfer
        kills, redownloaded, runs, verified_at_kill, parts_at_kill = 0, 0, [], set(), []
        while True:
            if time.monotonic() - t_start > args.budget:
                print("budget spent before the last run finished")
                break
            log_from = len(server.log)
            t0 = time.monotonic()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            have = len(in_place(dest))
            step = max(1, round(rng.uniform(0.05, 0.25) * (args.files - have)))
            target = None if kills >= args.kills else have + step
            killed = False
            while proc.poll() is None:
                if time.monotonic() - t0 > args.run_timeout:
                    proc.kill()
                    break
                if target is not None and len(in_place(dest)) >= target:
                    time.sleep(rng.uniform(0.0, 0.2))
                    proc.send_signal(signal.SIGKILL)
                    killed = True
                    break
                time.sleep(0.005)
            out, err = proc.communicate()
            # requests of this run for files that were verified and in place when it started
            again = {r.path.rsplit("/", 1)[-1] for r in server.log[log_from:]} & verified_at_kill
            redownloaded += len(again)
            runs.append(
                {
                    "killed": killed,
                    "returncode": proc.returncode,
                    "seconds": round(time.monotonic() - t0, 2),
                    "in_place": len(in_place(dest)),
                }
            )
            parts = sum(1 for n in leftovers(dest) if n.endswith(".part")) if dest.exists() else 0
            print(
                f"run {len(runs)}: {'killed' if killed else f'exit {proc.returncode}'} after "
                f"{runs[-1]['seconds']:.1f} s, {runs[-1]['in_place']}/{args.files} files in place"
                + (f", {parts} partial (.part)" if killed else "")
                + (f", {len(again)} verified file(s) fetched again" if again else "")
            )
            if killed:
                kills += 1
                server.wait_idle()
                verified_at_kill = in_place(dest)  # stable: nobody writes now
                parts_at_kill.append(sum(1 for n in leftovers(dest) if n.endswith(".part")))
                continue
            verified_at_kill = in_place(dest)
            if proc.returncode == 0 or len(runs) > args.kills + 5:
                if proc.returncode != 0:
                    print(err.decode(errors="replace")[-2000:])
                break

        lost = corrupt = 0
        for i, name in enumerate(names):
            path = dest / name
            if not path.is_file():
                lost += 1
            elif hashlib.sha256(path.read_bytes()).hexdigest() != digests[i % len(digests)]:
                corrupt += 1
        left = leftovers(dest) if dest.exists() else []
        faults = sum(1 for r in server.log if r.fault)
        elapsed = time.monotonic() - t_start
        print(
            f"kills {kills}, files {args.files}: lost {lost}, corrupt {corrupt}, verified files fetched again "
            f"{redownloaded}, temporary files left {len(left)}{' ' + str(left[:5]) if left else ''}; "
            f"{len(server.log)} requests, {faults} faults, {elapsed:.1f} s (a shared machine: timings are noisy)"
        )
        print(
            json.dumps(
                {
                    "kills": kills,
                    "files": args.files,
                    "lost": lost,
                    "corrupt": corrupt,
                    "redownloaded_verified": redownloaded,
                    "leftover_temp": len(left),
                    "runs": len(runs),
                    "partial_files_at_kills": parts_at_kill,
                    "requests": len(server.log),
                    "faults": faults,
                    "fault_rate": args.fault_rate,
                    "elapsed_s": round(elapsed, 1),
                    "cpu": cpu_model(),
                    "cpus": os.cpu_count(),
                    "seed": args.seed,
                }
            )
        )
        ok = kills == args.kills and lost == corrupt == redownloaded == len(left) == 0
        return 0 if ok else 1
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
