"""The real browser and the real JupyterLab the browser tests drive.

Headless Chromium is Debian's ``chromium`` (``make sysdeps``), driven by Playwright, which never downloads a
browser of its own; JupyterLab is started through ``binder/start`` as Binder starts it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from latentsky.ui.serve import free_port

CHROMIUM = Path(os.environ.get("LATENTSKY_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
#: JupyterLab's token in the tests.
TOKEN = "latentsky-test"


@contextlib.contextmanager
def binder_lab(folder: Path, root_dir: Path, *, home: Path, env=None, args=(), start_s: float = 60):
    """JupyterLab on ``root_dir`` started through binder/start in ``home``; yields ``{"url", "log", "home"}``.

    The environment is this process's less any ``LATENTSKY_``, ``XDG_`` and ``JUPYTER`` variable, plus ``env``;
    ``args`` are further ``jupyter lab`` options; its log is ``folder/lab.log``.  On exit the whole process
    group stops (JupyterLab, its kernels, the app it started, binder/start's background preparation).
    """
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LATENTSKY_", "XDG_", "JUPYTER"))}
    environ.update(HOME=str(home), PATH=f"{Path(sys.executable).parent}{os.pathsep}{environ.get('PATH', '')}")
    environ.update(env or {})
    cmd = [
        str(REPO / "binder" / "start"),
        "jupyter",
        "lab",
        "--no-browser",
        f"--port={port}",
        "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.root_dir={root_dir}",
        *args,
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log_path = folder / "lab.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, env=environ, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_s
        while True:
            try:
                urllib.request.urlopen(f"{url}/api", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("JupyterLab did not start:\n" + log_path.read_text()[-3000:])
                time.sleep(0.5)
        yield {"url": url, "log": log_path, "home": home}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
