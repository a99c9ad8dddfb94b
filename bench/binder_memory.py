"""Peak memory of a Binder session: JupyterLab, notebook 04's kernel and the explorer app, together.

A Binder session has about 2 GB.  This starts JupyterLab as Binder does (``binder/start jupyter lab``, in a
fresh HOME, with the sample's results prepared as postBuild prepares them in the image), opens the
"latentsky explorer" app through jupyter-server-proxy in headless Chromium (a real session: map drawn, a point
tapped, its reconstruction shown), then runs notebook 04 in a kernel while the app stays open, sampling the
memory of every process of the session twice a second.

Memory is counted as the sum of the processes' PSS (proportional set size: a shared library's pages split
between the processes that map it), the closest per-process figure to what a container's memory limit
counts; the sum of RSS (shared pages counted in each process) is printed beside it as an upper bound.  The
browser is not counted (it runs on the student's machine).

    python bench/binder_memory.py [--notebook notebooks/04_autoencoder.ipynb] [--limit-mb 2048]

Ends with one JSON line: ``peak_pss_mb``, ``peak_rss_mb``, per-part peaks (``lab_mb``, ``kernel_mb``,
``app_mb``), ``limit_mb``, ``fits``, ``notebook_s``, ``cpu``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

from latentsky.ui.serve import free_port

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("LATENTSKY_CHROMIUM", "/usr/bin/chromium"))
TOKEN = "bench"


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return "unknown"


def _memory(proc: psutil.Process) -> tuple[float, float]:
    """PSS and RSS of a process and its children, MB (0 for those gone)."""
    pss = rss = 0.0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0, 0.0
    for p in procs:
        try:
            info = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        pss += getattr(info, "pss", info.rss) / 2**20
        rss += info.rss / 2**20
    return pss, rss


class Sampler(threading.Thread):
    """Samples the lab's process tree (lab server, the app it started) and the kernel's, twice a second."""

    def __init__(self, lab: psutil.Process):
        super().__init__(daemon=True)
        self.lab, self.kernel = lab, None
        self.peak = {"total_pss": 0.0, "total_rss": 0.0, "lab": 0.0, "kernel": 0.0, "app": 0.0}
        self.stop_event = threading.Event()

    def parts(self) -> dict[str, float]:
        app = [p for p in self.lab.children(recursive=True) if "latentsky.jupyter_proxy" in " ".join(_cmdline(p))]
        app_pss = sum(_memory(p)[0] for p in app)
        lab_pss, lab_rss = _memory(self.lab)
        k_pss, k_rss = _memory(self.kernel) if self.kernel is not None else (0.0, 0.0)
        return {
            "total_pss": lab_pss + k_pss,
            "total_rss": lab_rss + k_rss,
            "lab": lab_pss - app_pss,
            "kernel": k_pss,
            "app": app_pss,
        }

    def run(self):
        while not self.stop_event.is_set():
            try:
                for key, value in self.parts().items():
                    self.peak[key] = max(self.peak[key], value)
            except psutil.Error:
                pass
            self.stop_event.wait(0.5)


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def prepare_results(folder: Path) -> Path:
    """The sample's results as postBuild prepares them in the image (made once; later runs find them done)."""
    subprocess.run(
        [sys.executable, "-m", "latentsky.cli", "classroom", "--prepare-only", "--out", str(folder)],
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"},
    )
    return folder


def open_app(url: str) -> None:
    """The explorer app in headless Chromium: page, map, a tap and its spectrum with the reconstruction."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.goto(f"{url}/latentsky/?token={TOKEN}", timeout=300000)
        page.wait_for_selector("text=125 spectra", timeout=300000)
        page.wait_for_selector(".latentsky-explore canvas", state="attached", timeout=60000)
        page.wait_for_timeout(3000)
        browser.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebook", type=Path, default=REPO / "notebooks" / "04_autoencoder.ipynb")
    parser.add_argument("--limit-mb", type=float, default=2048, help="Binder's memory limit (MB)")
    parser.add_argument(
        "--results",
        type=Path,
        default=Path(tempfile.gettempdir()) / "latentsky-bench-prepared",
        help="where the image's prepared results are made once and reused",
    )
    args = parser.parse_args(argv)

    results = prepare_results(args.results)
    tmp = Path(tempfile.mkdtemp(prefix="latentsky-binder-mem-"))
    home = tmp / "home"
    home.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LATENTSKY_", "XDG_", "JUPYTER"))}
    env.update(
        HOME=str(home),
        LATENTSKY_APP_DATA=str(results),
        LATENTSKY_OFFLINE="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    cmd = [
        str(REPO / "binder" / "start"),
        "jupyter",
        "lab",
        "--no-browser",
        f"--port={port}",
        "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.root_dir={home}",
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp / "lab.log", "wb")
    lab = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    sampler = Sampler(psutil.Process(lab.pid))
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/api", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        sampler.start()
        t0 = time.monotonic()
        open_app(url)
        app_s = time.monotonic() - t0
        at_app = dict(sampler.parts())

        import nbformat
        from nbclient import NotebookClient

        nb = nbformat.read(args.notebook, as_version=4)
        client = NotebookClient(
            nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(args.notebook.parent)}}
        )
        t0 = time.monotonic()
        with client.setup_kernel(env=env):
            sampler.kernel = psutil.Process(client.km.provisioner.process.pid)
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index)
        notebook_s = time.monotonic() - t0
    finally:
        sampler.stop_event.set()
        try:
            os.killpg(lab.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            lab.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(lab.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)

    peak = sampler.peak
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores)")
    print(f"explorer app opened in {app_s:.0f} s: lab {at_app['lab']:.0f} MB + app {at_app['app']:.0f} MB (PSS)")
    print(f"{args.notebook.name} ran in {notebook_s:.0f} s beside it")
    print(
        f"peak, PSS: lab {peak['lab']:.0f} MB, app {peak['app']:.0f} MB, kernel {peak['kernel']:.0f} MB; "
        f"together {peak['total_pss']:.0f} MB (RSS sum {peak['total_rss']:.0f} MB); Binder's limit "
        f"{args.limit_mb:.0f} MB"
    )
    print(
        json.dumps(
            {
                "peak_pss_mb": round(peak["total_pss"]),
                "peak_rss_mb": round(peak["total_rss"]),
                "lab_mb": round(peak["lab"]),
                "kernel_mb": round(peak["kernel"]),
                "app_mb": round(peak["app"]),
                "limit_mb": args.limit_mb,
                "fits": peak["total_pss"] <= args.limit_mb,
                "notebook": args.notebook.name,
                "notebook_s": round(notebook_s),
                "cpu": cpu_model(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
