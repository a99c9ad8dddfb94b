"""The app in a real browser: headless Chromium driven by Playwright against ``panel serve`` on 127.0.0.1.

Debian's ``chromium`` package provides the browser (``/usr/bin/chromium``);
Playwright never downloads one.  Each test saves a screenshot under its pytest
temporary directory.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("LATENTSKY_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason=f"{CHROMIUM} not found: install Debian's chromium package (make setup)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """``panel serve widgets/app.py`` in a subprocess; stopped by :meth:`stop`."""

    def __init__(self, args=(), env=None, log: Path | None = None, timeout: float = 60):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/app"
        cmd = [sys.executable, "-m", "panel", "serve", str(REPO / "widgets" / "app.py"), "--port", str(self.port),
               "--address", "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{self.port}", "--warm"]
        if args:
            cmd += ["--args", *map(str, args)]
        self.log = open(log, "wb") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **(env or {})}, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"panel serve exited with {self.proc.returncode}; see {log}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/liveness", timeout=1)
            except Exception:
                # --warm runs the script before the server listens; keep polling until it answers
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        break
                except OSError:
                    pass
            else:
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"panel serve did not start within {timeout} s; see {log}")
            time.sleep(0.3)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if self.log is not subprocess.DEVNULL:
            self.log.close()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, tmp_path):
    context = browser.new_context(viewport={"width": 1500, "height": 1000}, accept_downloads=True)
    pg = context.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors
    yield pg
    context.close()


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    """A cache folder of its own for the served app (the sample store, the app's work folder)."""
    return {"LATENTSKY_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}


def map_canvas_box(page):
    """Bounding box of the latent map's canvas (the largest canvas on the left half of the page)."""
    page.wait_for_selector("canvas", state="attached", timeout=30000)
    canvases = page.locator(".latentsky-explore canvas")
    boxes = [canvases.nth(i).bounding_box() for i in range(canvases.count())]
    boxes = [b for b in boxes if b and b["x"] < 400 and b["width"] > 300]
    assert boxes, "no map canvas on the page"
    return max(boxes, key=lambda b: b["width"] * b["height"])


def status(page) -> str:
    return page.locator(".explore-status p").first.inner_text()


def test_app_opens_on_the_bundled_sample(page, tmp_path, cache_env):
    server = Served(env=cache_env, log=tmp_path / "serve.log")
    try:
        page.goto(server.url)
        page.wait_for_selector("text=125 spectra", timeout=30000)
        map_canvas_box(page)
        page.wait_for_timeout(1000)
        page.screenshot(path=tmp_path / "sample.png")
        assert page.errors == []
        # the colour choice and a view land in the URL, and a URL restores them
        page.goto(server.url + "?color=snr&x=[-20,20]&y=[-10,10]")
        page.wait_for_selector("text=125 spectra", timeout=30000)
        select = page.locator("select").first
        assert select.input_value() == "snr"
    finally:
        server.stop()


def test_million_point_map_tap_and_box_export(page, tmp_path, cache_env, sample_store):
    from latentsky.synth import write_synth

    data = write_synth(tmp_path / "synth1m", 1_000_000, store=sample_store, seed=2)
    server = Served(args=[data], env=cache_env, log=tmp_path / "serve.log")
    try:
        t0 = time.monotonic()
        page.goto(server.url)
        page.wait_for_selector("text=1,000,000 spectra", timeout=30000)
        box = map_canvas_box(page)
        page.wait_for_timeout(1500)
        load_s = time.monotonic() - t0
        page.screenshot(path=tmp_path / "map-1e6.png")
        # the dense centre of the map: a tap lands within a few pixels of a point
        cx, cy = box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.55
        page.mouse.click(cx, cy)
        page.wait_for_selector(".explore-status >> text=showing synth-", timeout=15000)
        page.wait_for_timeout(500)
        page.screenshot(path=tmp_path / "tap-1e6.png")
        # the pointer over the map names the spectrum drawn under it
        page.mouse.move(cx + 5, cy + 5, steps=3)
        page.wait_for_selector(".explore-hover >> text=synth-", timeout=15000)
        # box selection with the Box Select tool, then the CSV export
        page.locator('[title="Box Select"]').first.click()
        page.mouse.move(cx - 50, cy - 50)
        page.mouse.down()
        page.mouse.move(cx + 50, cy + 50, steps=8)
        page.mouse.up()
        page.wait_for_selector(".explore-status >> text=selected", timeout=15000)
        n_selected = int(status(page).split(" selected")[0].replace(",", ""))
        assert n_selected > 100
        with page.expect_download(timeout=20000) as dl:
            page.locator(".export-csv button").click()
        out = tmp_path / "selection.csv"
        dl.value.save_as(out)
        lines = out.read_text().splitlines()
        assert lines[0].startswith("id,") and len(lines) == n_selected + 1
        page.screenshot(path=tmp_path / "selection-1e6.png")
        assert page.errors == []
        assert load_s < 45
    finally:
        server.stop()


def test_flow_on_the_local_archive(page, tmp_path, sample):
    from latentsky.archives.local.archive import LocalArchive

    archive = LocalArchive(sample).start()
    env = {"LATENTSKY_CACHE_DIR": str(tmp_path / "cache"),
           **{f"LATENTSKY_{k.upper()}": v for k, v in archive.urls().items()}}
    server = Served(env=env, log=tmp_path / "serve.log")
    try:
        page.goto(server.url)
        page.wait_for_selector("text=125 spectra", timeout=30000)
        page.locator(".bk-tab", has_text="Query").first.click()
        page.locator(".query-coordinates input").fill("219.87924 -60.82793")
        page.locator(".query-coordinates input").press("Enter")
        page.locator(".query-run button").click()
        page.wait_for_selector("text=24 products", timeout=30000)
        page.screenshot(path=tmp_path / "query.png")
        page.locator(".bk-tab", has_text="Download").first.click()
        page.locator(".download-start button").click()
        page.wait_for_selector(".download-counts >> text=24 done", timeout=40000)
        page.screenshot(path=tmp_path / "download.png")
        page.locator(".bk-tab", has_text="Embed").first.click()
        page.locator(".embed-run button").click()
        page.wait_for_selector(".step-info >> text=embeddings", timeout=40000)
        page.locator(".bk-tab", has_text="Train").first.click()
        page.locator(".train-run button").click()
        # the new map opens in Explore
        page.wait_for_selector(".explore-info >> text=24 spectra", timeout=40000)
        map_canvas_box(page)
        page.wait_for_timeout(1000)
        page.screenshot(path=tmp_path / "flow-map.png")
        assert page.errors == []
    finally:
        server.stop()
        archive.stop()
