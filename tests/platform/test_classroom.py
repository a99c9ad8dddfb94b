"""``latentsky classroom``: the local archive over the sample, and JupyterLab pointed at it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latentsky.commands.classroom import classroom_environment, lab_command
from latentsky.ui.serve import free_port

REPO = Path(__file__).resolve().parents[2]
LATENTSKY = [sys.executable, "-m", "latentsky.cli"]


def _start(args, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATENTSKY_")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    return subprocess.Popen(
        [*LATENTSKY, "classroom", "--no-prepare", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _read_settings(proc, timeout=60) -> dict[str, str]:
    """The ``export LATENTSKY_...=...`` lines the command prints, up to its JupyterLab line."""
    settings, deadline, lines = {}, time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.match(r"\s+export (LATENTSKY_\w+)=(\S+)", line)
        if m:
            settings[m.group(1)] = m.group(2)
        if line.startswith("JupyterLab: "):
            return settings
    raise AssertionError("classroom printed no settings:\n" + "".join(lines))


def _stop(proc) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def test_classroom_environment_points_every_client_at_the_archive():
    env = classroom_environment({"eso_tap_url": "http://127.0.0.1:1/tap", "sdss_sas_url": "http://127.0.0.1:1/sas/"})
    assert env == {
        "LATENTSKY_ESO_TAP_URL": "http://127.0.0.1:1/tap",
        "LATENTSKY_SDSS_SAS_URL": "http://127.0.0.1:1/sas/",
        "LATENTSKY_OFFLINE": "1",
    }
    cmd = lab_command(Path("/course"), 9999)
    assert cmd[:3] == [sys.executable, "-m", "jupyterlab"] and "--ServerApp.port=9999" in cmd
    assert "--ServerApp.root_dir=/course" in cmd and "--ServerApp.ip=127.0.0.1" in cmd


def test_no_lab_serves_the_sample_and_the_course_queries_it_offline(tmp_path):
    from latentsky.archives.eso import eso
    from latentsky.archives.sdss import sdss
    from latentsky.config import conf

    proc = _start(["--no-lab"], tmp_path)
    try:
        settings = _read_settings(proc)
        assert settings["LATENTSKY_OFFLINE"] == "1"
        urls = {name[len("LATENTSKY_") :].lower(): url for name, url in settings.items() if name != "LATENTSKY_OFFLINE"}
        assert set(urls) >= {"eso_tap_url", "eso_data_url", "sdss_skyserver_url", "sdss_sas_url", "hips2fits_url"}
        with conf.set_temp(**urls, offline=True):
            harps = eso.query(collection="HARPS")
            quasars = sdss.query_spectra(spec_class="QSO")
        assert len(harps) == 26 and {"HD128621", "Gl273", "Gl581"} <= set(harps["object"])
        assert len(quasars) == 66
        assert proc.poll() is None, "the archive stopped after answering"
    finally:
        out = _stop(proc)
    assert proc.returncode == 0, out


def test_classroom_starts_jupyterlab_with_the_archive_settings(tmp_path):
    requests = pytest.importorskip("requests")
    port = free_port()
    notebooks = tmp_path / "course"
    notebooks.mkdir()
    import psutil

    proc = _start(["--lab-port", str(port), "--notebooks", str(notebooks)], tmp_path)
    lab = None
    try:
        settings = _read_settings(proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                r = requests.get(f"http://127.0.0.1:{port}/api", timeout=2)
                if r.ok:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.5)
        else:
            raise AssertionError("JupyterLab did not answer within 60 s")
        assert "version" in r.json()
        # JupyterLab (and so every kernel it starts) got the archive's settings in its environment.
        (lab,) = [p for p in psutil.Process(proc.pid).children() if "jupyterlab" in " ".join(p.cmdline())]
        lab_env = lab.environ()
        assert all(lab_env.get(k) == v for k, v in settings.items())
        # The archive itself answers.
        tap = settings["LATENTSKY_ESO_TAP_URL"]
        assert requests.get(tap + "/capabilities", timeout=10).ok
    finally:
        out = _stop(proc)
    # Stopping the classroom stops its JupyterLab too.
    assert lab is not None and (not psutil.pid_exists(lab.pid) or lab.status() == psutil.STATUS_ZOMBIE), out
