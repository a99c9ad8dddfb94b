"""A room of thirty on one machine: ``latentsky classroom --hub`` with simulated students, on loopback.

Starts ``latentsky classroom --hub --users N`` (JupyterHub, shared password, the sample's shared prepared
results, the local archive), then N simulated students at once: each logs in through the hub's login form (which
spawns their JupyterLab), starts a kernel through their server's REST API and runs notebook 00's code cells over
the kernel's websocket, as JupyterLab would.  Measured per student: time from logging in to the first output of
the notebook's first cell, time to the end of the notebook, and the peak memory (PSS) of the student's
processes (their JupyterLab server and kernel).  Bounded: ``--timeout`` seconds in all, loopback only.

    python bench/classroom.py [--users 30] [--timeout 1200]

Ends with one JSON line: ``users``, ``ok``, ``first_output_s`` and ``notebook_s`` (median, p90, max),
``peak_mb_per_user`` (median, max), ``peak_mb_total``, ``cpu``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psutil
import requests

from latentsky.ui.serve import free_port

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "bench-room-password"


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return "unknown"


def code_cells(notebook: Path) -> list[str]:
    nb = json.loads(notebook.read_text())
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def _message(code: str, session: str) -> dict:
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "username": "student",
            "session": session,
            "msg_type": "execute_request",
            "version": "5.3",
            "date": datetime.now(timezone.utc).isoformat(),
        },
        "parent_header": {},
        "metadata": {},
        "channel": "shell",
        "buffers": [],
        "content": {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
    }


async def run_cells(ws_url: str, cookies: str, cells: list[str], t_login: float, result: dict) -> None:
    """Execute ``cells`` one after the other on a kernel's websocket; note the first output's time."""
    from tornado import httpclient, websocket

    conn = await websocket.websocket_connect(
        httpclient.HTTPRequest(ws_url, headers={"Cookie": cookies}, request_timeout=600)
    )
    session = uuid.uuid4().hex
    try:
        for code in cells:
            msg = _message(code, session)
            await conn.write_message(json.dumps(msg))
            while True:
                raw = await conn.read_message()
                if raw is None:
                    raise RuntimeError("the kernel's websocket closed")
                if isinstance(raw, bytes):  # binary frames carry buffers: not ours
                    continue
                reply = json.loads(raw)
                if reply.get("parent_header", {}).get("msg_id") != msg["header"]["msg_id"]:
                    continue
                kind = reply["header"]["msg_type"]
                if kind in ("stream", "execute_result", "display_data") and "first_output_s" not in result:
                    result["first_output_s"] = time.monotonic() - t_login
                if kind == "error":
                    raise RuntimeError(f"{reply['content']['ename']}: {reply['content']['evalue']}")
                if kind == "status" and reply["content"]["execution_state"] == "idle":
                    break
    finally:
        conn.close()


def student(url: str, name: str, cells: list[str], results: dict, timeout: float) -> None:
    """One simulated student: log in (spawns the server), start a kernel, run notebook 00."""
    out = results[name] = {"name": name}
    t0 = time.monotonic()
    try:
        s = requests.Session()
        s.get(f"{url}/hub/login", timeout=60).raise_for_status()
        s.post(
            f"{url}/hub/login",
            data={"username": name, "password": PASSWORD, "_xsrf": s.cookies.get("_xsrf")},
            timeout=timeout,
        )
        deadline = t0 + timeout
        while True:  # as a browser on the spawn page: reload the server's page until it answers (the hub
            # redirects it to the pending page while spawning, then through the OAuth round trip that gives the
            # server's cookie); its API answers only once that cookie is set
            r = s.get(f"{url}/user/{name}/api/status", timeout=60)
            if r.ok and r.headers.get("content-type", "").startswith("application/json"):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not start (its API answers {r.status_code})")
            s.get(f"{url}/user/{name}/lab", timeout=120)
            time.sleep(1)
        out["server_s"] = time.monotonic() - t0
        xsrf = s.cookies.get("_xsrf", path=f"/user/{name}/") or s.cookies.get("_xsrf") or ""
        r = s.post(
            f"{url}/user/{name}/api/kernels", json={"name": "python3"}, headers={"X-XSRFToken": xsrf}, timeout=120
        )
        r.raise_for_status()
        kernel = r.json()["id"]
        cookies = "; ".join(f"{c.name}={c.value}" for c in s.cookies)
        ws = f"ws://{url.split('://', 1)[1]}/user/{name}/api/kernels/{kernel}/channels"
        asyncio.run(asyncio.wait_for(run_cells(ws, cookies, cells, t0, out), timeout))
        out["notebook_s"] = time.monotonic() - t0
        out["ok"] = True
    except Exception as err:  # one student's failure is reported, the others go on
        out["ok"] = False
        out["error"] = f"{type(err).__name__}: {err}"[:300]


def user_processes(homes: Path) -> dict[str, list[psutil.Process]]:
    """Each student's processes (JupyterLab server and kernels), by the HOME they run in."""
    out: dict[str, list[psutil.Process]] = {}
    for p in psutil.process_iter(["environ"]):
        try:
            home = (p.info["environ"] or {}).get("HOME", "")
        except psutil.Error:
            continue
        if home.startswith(str(homes) + os.sep):
            out.setdefault(Path(home).name, []).append(p)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=1200, help="seconds for the whole room (bounded)")
    parser.add_argument(
        "--results",
        type=Path,
        default=Path(tempfile.gettempdir()) / "latentsky-bench-prepared",
        help="prepared results to share (made once with `classroom --prepare-only --out`)",
    )
    args = parser.parse_args(argv)

    need_mb = args.users * 400
    free_mb = psutil.virtual_memory().available / 2**20
    print(f"{args.users} students need about {need_mb:.0f} MB; {free_mb:.0f} MB available", flush=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if not (args.results / "latent.parquet").exists():
        subprocess.run(
            [sys.executable, "-m", "latentsky.cli", "classroom", "--prepare-only", "--out", str(args.results)],
            check=True,
            env=env,
        )
    tmp = Path(tempfile.mkdtemp(prefix="latentsky-bench-room-"))
    port = free_port()
    env = {k: v for k, v in env.items() if not k.startswith(("LATENTSKY_", "XDG_", "JUPYTER"))}
    env.update(XDG_CACHE_HOME=str(tmp / "cache"), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    log = open(tmp / "classroom.log", "w")
    room = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "latentsky.cli",
            "classroom",
            "--hub",
            "--users",
            str(args.users),
            "--hub-port",
            str(port),
            "--password",
            PASSWORD,
            "--results",
            str(args.results),
            "--notebooks",
            str(REPO / "notebooks"),
        ],
        cwd=tmp,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    homes = tmp / "cache" / "latentsky" / "classroom-hub" / "homes"
    results: dict[str, dict] = {}
    peaks: dict[str, float] = {}
    total_peak = 0.0
    t_start = time.monotonic()
    try:
        deadline = time.monotonic() + 300
        while True:  # the proxy answers (404) before the hub's route is in it: wait for the hub itself
            try:
                if requests.get(f"{url}/hub/api/", timeout=5).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or room.poll() is not None:
                raise RuntimeError(f"the classroom hub did not start; see {tmp / 'classroom.log'}")
            time.sleep(0.5)
        cells = code_cells(REPO / "notebooks" / "00_quickstart.ipynb")
        threads = [
            threading.Thread(target=student, args=(url, f"student{i:02d}", cells, results, args.timeout), daemon=True)
            for i in range(1, args.users + 1)
        ]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads) and time.monotonic() - t_start < args.timeout:
            now = 0.0
            for name, procs in user_processes(homes).items():
                mb = 0.0
                for p in procs:
                    try:
                        mb += p.memory_full_info().pss / 2**20
                    except psutil.Error:
                        pass
                peaks[name] = max(peaks.get(name, 0.0), mb)
                now += mb
            total_peak = max(total_peak, now)
            time.sleep(1)
    finally:
        room.send_signal(signal.SIGTERM)
        try:
            room.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(room.pid, signal.SIGKILL)
        log.close()
    wall = time.monotonic() - t_start

    ok = [r for r in results.values() if r.get("ok")]
    failed = [r for r in results.values() if not r.get("ok")]
    first = np.array([r["first_output_s"] for r in ok if "first_output_s" in r] or [np.nan])
    whole = np.array([r["notebook_s"] for r in ok] or [np.nan])
    mem = np.array(list(peaks.values()) or [np.nan])
    stats = lambda a: {
        "median": round(float(np.nanmedian(a)), 1),
        "p90": round(float(np.nanpercentile(a, 90)), 1),
        "max": round(float(np.nanmax(a)), 1),
    }  # noqa: E731
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores), {psutil.virtual_memory().total / 2**30:.0f} GB")
    print(f"{len(ok)} of {args.users} students ran notebook 00 ({wall:.0f} s for the room)")
    for r in failed[:5]:
        print(f"  {r['name']}: {r.get('error')}")
    print(
        f"time to the first cell's output after logging in: {stats(first)} s; to the notebook's end: {stats(whole)} s"
    )
    print(
        f"peak memory per student (server + kernel, PSS): median {np.nanmedian(mem):.0f} MB, "
        f"max {np.nanmax(mem):.0f} MB;"
        f" the room together {total_peak:.0f} MB"
    )
    print(
        json.dumps(
            {
                "users": args.users,
                "ok": len(ok),
                "first_output_s": stats(first),
                "notebook_s": stats(whole),
                "peak_mb_per_user": {"median": round(float(np.nanmedian(mem))), "max": round(float(np.nanmax(mem)))},
                "peak_mb_total": round(total_peak),
                "wall_s": round(wall),
                "cpu": cpu_model(),
            }
        )
    )
    return 0 if len(ok) == args.users else 1


if __name__ == "__main__":
    sys.exit(main())
