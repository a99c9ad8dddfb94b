"""``latentsky classroom --hub``: a room of students on the teacher's machine, through a real JupyterHub.

Two students log in with the room's password, get a JupyterLab each (the course copied into their homes, the
shared results and the local archive in their environment), a third is turned away by ``--users 2``, and
stopping the command stops every server (one test: the steps share one hub).  ``bench/classroom.py`` runs thirty at
once.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latentsky.ui.serve import free_port

requests = pytest.importorskip("requests")
pytest.importorskip("jupyterhub")
psutil = pytest.importorskip("psutil")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("configurable-http-proxy") is None,
        reason="configurable-http-proxy (npm) is not installed; `make sysdeps` installs it",
    ),
]

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "room-42-password"


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except (requests.RequestException, OSError) as err:
            last = err
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} ({last})")


def _login(url: str, name: str, password: str) -> tuple[requests.Session, requests.Response]:
    """Log in through the form, as a browser; the hub then redirects to the student's server (spawning it)."""
    s = requests.Session()
    s.get(f"{url}/hub/login", timeout=30).raise_for_status()
    r = s.post(
        f"{url}/hub/login", data={"username": name, "password": password, "_xsrf": s.cookies.get("_xsrf")}, timeout=120
    )
    return s, r


@pytest.fixture(scope="module")
def room(tmp_path_factory, sample_store):
    """``latentsky classroom --hub --users 2`` on free ports, its cache in a temporary folder."""
    import numpy as np
    import pandas as pd

    tmp = tmp_path_factory.mktemp("room")
    results = tmp / "shared-results"  # what `classroom --prepare-only --out` leaves; the map is not the point here
    results.mkdir()
    pd.DataFrame(
        {"id": sample_store.catalog["id"], "x": np.arange(len(sample_store.catalog), dtype=float), "y": 0.0}
    ).to_parquet(results / "latent.parquet")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LATENTSKY_", "XDG_", "JUPYTER"))}
    env.update(XDG_CACHE_HOME=str(tmp / "cache"), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    log = open(tmp / "classroom.log", "w+")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "latentsky.cli",
            "classroom",
            "--hub",
            "--users",
            "2",
            "--hub-port",
            str(port),
            "--password",
            PASSWORD,
            "--results",
            str(results),
            "--notebooks",
            str(REPO / "notebooks"),
        ],
        cwd=tmp,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: proc.poll() is None and requests.get(f"{url}/hub/api/", timeout=5).ok, 120, "the hub")
        yield {
            "url": url,
            "proc": proc,
            "log": tmp / "classroom.log",
            "results": results,
            "homes": tmp / "cache" / "latentsky" / "classroom-hub" / "homes",
        }
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def _server_process(home: Path):
    for p in psutil.process_iter(["cmdline", "environ"]):
        try:
            if "jupyterhub-singleuser" in " ".join(p.info["cmdline"] or []) and (p.info["environ"] or {}).get(
                "HOME"
            ) == str(home):
                return p
        except psutil.Error:
            continue
    return None


def test_a_room_of_two_students(room):
    url, homes = room["url"], room["homes"]
    sessions = {}
    for name in ("ada", "grace"):
        s, r = _login(url, name, PASSWORD)
        assert r.ok, (r.status_code, r.text[:300])
        sessions[name] = s
    for name, s in sessions.items():

        def answers(s=s, name=name):
            r = s.get(f"{url}/user/{name}/api/status", timeout=10)
            return r.headers.get("content-type", "").startswith("application/json")

        _wait(answers, 300, f"{name}'s server")
        home = homes / name
        assert (home / "notebooks" / "00_quickstart.ipynb").is_file(), "the course was not copied into the home"
        env = _server_process(home).environ()
        assert env["LATENTSKY_APP_DATA"] == str(room["results"].resolve())
        assert (
            re.match(r"http://127\.0\.0\.1:\d+/tap$", env["LATENTSKY_ESO_TAP_URL"]) and env["LATENTSKY_OFFLINE"] == "1"
        )
        assert env["OMP_NUM_THREADS"] == "1" and env["XDG_CACHE_HOME"] == str(home / ".cache")
    # --users 2: a third student logs in but waits for a free place
    third, r = _login(url, "linus", PASSWORD)
    assert third.cookies.get("jupyterhub-session-id") and r.status_code == 429, (r.status_code, r.text[:300])
    # a wrong password opens nothing
    wrong = requests.Session()
    wrong.get(f"{url}/hub/login", timeout=30)
    r = wrong.post(
        f"{url}/hub/login",
        data={"username": "eve", "password": "not-the-password", "_xsrf": wrong.cookies.get("_xsrf")},
        timeout=60,
    )
    assert "jupyterhub-session-id" not in wrong.cookies or r.url.endswith("/hub/login")

    # stopping the command stops every student's server
    servers = [p for p in (_server_process(room["homes"] / n) for n in ("ada", "grace")) if p is not None]
    assert len(servers) == 2
    room["proc"].send_signal(signal.SIGTERM)
    room["proc"].wait(120)
    _, alive = psutil.wait_procs(servers, timeout=60)
    assert not alive, f"students' servers left running: {[p.pid for p in alive]}"
    log = Path(room["log"]).read_text()
    assert f"password {PASSWORD}" in log and "at most 2 students" in log
