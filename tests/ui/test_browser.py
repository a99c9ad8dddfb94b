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
from _support.browser import CHROMIUM, CHROMIUM_ARGS, REPO, free_port

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: install Debian's chromium package (make setup)"
)


class Served:
    """``panel serve widgets/app.py`` in a subprocess; stopped by :meth:`stop`."""

    def __init__(self, args=(), env=None, log: Path | None = None, timeout: float = 60):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/app"
        cmd = [
            sys.executable,
            "-m",
            "panel",
            "serve",
            str(REPO / "widgets" / "app.py"),
            "--port",
            str(self.port),
            "--address",
            "127.0.0.1",
            "--allow-websocket-origin",
            f"127.0.0.1:{self.port}",
            "--warm",
        ]
        if args:
            cmd += ["--args", *map(str, args)]
        self.log = open(log, "wb") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env={**os.environ, **(env or {})}, stdout=self.log, stderr=subprocess.STDOUT
        )
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
def cache_env(tmp_path_factory, sample_results):
    """A cache folder of its own for the served app (the sample store, the app's work folder), holding the
    bundled sample's pipeline results (so the app opens on the autoencoder's map); offline: the app may
    reach 127.0.0.1 only."""
    import shutil

    cache = tmp_path_factory.mktemp("cache")
    shutil.copytree(sample_results, cache / "sample-results", ignore=shutil.ignore_patterns("checkpoints"))
    return {"LATENTSKY_CACHE_DIR": str(cache), "LATENTSKY_OFFLINE": "1"}


BOKEH_TEXTS = r"""
() => {
  // legend labels and titles of every Bokeh model on the page (they are drawn on canvases, not in the DOM)
  const out = [];
  for (const doc of window.Bokeh.documents) {
    for (const m of doc.all_models) {
      const name = m.type || "";
      if (name === "LegendItem") {
        const l = m.label;
        out.push(typeof l === "string" ? l : (l && (l.value ?? l.field)) || "");
      } else if (name === "Title") {
        out.push(m.text || "");
      }
    }
  }
  return out;
}
"""


def bokeh_texts(page) -> list[str]:
    return page.evaluate(BOKEH_TEXTS)


PLOT_FRAMES = r"""
() => {
  // every Bokeh plot's data frame on the page: title, screen box (CSS px) and axis ranges
  const out = [], seen = new Set();
  const walk = (v) => {
    if (!v || seen.has(v)) return;
    seen.add(v);
    if (v.frame && v.model && v.model.x_range && v.canvas_view) {
      const r = v.canvas_view.el.getBoundingClientRect(), b = v.frame.bbox;
      out.push({title: v.model.title ? v.model.title.text : "", left: r.left + b.left, top: r.top + b.top,
                width: b.width, height: b.height, x0: v.model.x_range.start, x1: v.model.x_range.end,
                y0: v.model.y_range.start, y1: v.model.y_range.end});
    }
    for (const c of (v.child_views || [])) walk(c);
  };
  for (const v of Object.values(window.Bokeh.index)) walk(v);
  return out;
}
"""


def screen_point(page, title: str, x: float, y: float) -> tuple[float, float]:
    """Screen position (CSS px) of data point ``(x, y)`` on the plot whose title contains ``title``."""
    frames = [f for f in page.evaluate(PLOT_FRAMES) if title in f["title"]]
    assert frames, f"no plot titled {title!r} on the page"
    f = frames[0]
    return (
        f["left"] + (x - f["x0"]) / (f["x1"] - f["x0"]) * f["width"],
        f["top"] + (1 - (y - f["y0"]) / (f["y1"] - f["y0"])) * f["height"],
    )


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


def pane_text(page, css_class: str) -> str:
    """Text of a Markdown pane (Panel renders it inside its component's shadow root, in paragraphs)."""
    return " ".join(page.locator(f".{css_class} p").all_inner_texts())


def test_app_opens_on_the_bundled_sample(page, tmp_path, cache_env):
    """The autoencoder's map of the sample; a tap draws the spectrum with the reconstruction from its latent
    point, its error in the legend, and says whether there is an image cutout."""
    server = Served(env=cache_env, log=tmp_path / "serve.log")
    try:
        page.goto(server.url)
        page.wait_for_selector("text=125 spectra", timeout=30000)
        assert "sample-results" in pane_text(page, "explore-info")  # the pipeline's map, not the PCA one
        map_canvas_box(page)  # the map is drawn
        page.wait_for_timeout(1000)
        page.screenshot(path=tmp_path / "sample.png")
        # the pointer on a real point names it (hover), a tap shows its spectrum
        import pandas as pd

        table = pd.read_parquet(Path(cache_env["LATENTSKY_CACHE_DIR"]) / "sample-results" / "latent.parquet")
        i = int(table["recon_error"].idxmin())  # a well-reconstructed spectrum
        px, py = screen_point(page, "sample-results", float(table["x"].iloc[i]), float(table["y"].iloc[i]))
        page.mouse.move(px, py, steps=3)
        page.wait_for_selector(".explore-hover >> text=id", timeout=30000)
        page.mouse.click(px, py)
        page.wait_for_selector(".explore-status >> text=showing", timeout=30000)
        shown = status(page).split("showing ")[1].split()[0]
        near = table.iloc[(table["x"] - table["x"].iloc[i]) ** 2 + (table["y"] - table["y"].iloc[i]) ** 2 < 1e-6]
        assert shown in set(near["id"].astype(str))  # the tapped point (or one drawn on the same spot)
        # the sample's positions lie on no bundled image, and offline nothing else is asked
        page.wait_for_selector(".explore-cutout-status >> text=no image cutout at this position", timeout=30000)
        deadline = time.monotonic() + 60  # the model may still be loading in the background on a busy machine
        while not any(t.startswith("reconstruction from the latent point (MSE") for t in bokeh_texts(page)):
            assert time.monotonic() < deadline, bokeh_texts(page)
            page.wait_for_timeout(300)
        page.wait_for_timeout(500)
        page.screenshot(path=tmp_path / "sample-tap.png")
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
    env = {
        "LATENTSKY_CACHE_DIR": str(tmp_path / "cache"),
        "LATENTSKY_OFFLINE": "1",
        **{f"LATENTSKY_{k.upper()}": v for k, v in archive.urls().items()},
    }
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
        for name, value in (("epochs", "150"), ("patience", "150")):
            page.locator(f".train-{name} input").fill(value)
            page.locator(f".train-{name} input").press("Enter")
        page.locator(".train-run button").click()
        # the autoencoder trains in its child process (TensorFlow's import alone takes a while on a busy
        # machine): the loss curve grows while it runs
        deadline = time.monotonic() + 300
        epochs = []
        while True:
            titles = [t for t in bokeh_texts(page) if t.startswith("epoch ")]
            assert len(titles) <= 1  # one plot, updated in place (not a new plot per epoch)
            if titles:
                epochs.append(int(titles[0].split()[1].rstrip(":")))
                if len(set(epochs)) >= 3:
                    break
            assert time.monotonic() < deadline, f"no loss curve while training (epochs seen: {epochs})"
            page.wait_for_timeout(100)
        assert epochs == sorted(epochs)
        page.screenshot(path=tmp_path / "train.png")
        # the new map opens in Explore
        page.wait_for_selector(".explore-info >> text=24 spectra", timeout=120000)
        map_canvas_box(page)
        page.wait_for_timeout(1000)
        page.screenshot(path=tmp_path / "flow-map.png")
        assert page.errors == []
    finally:
        server.stop()
        archive.stop()
