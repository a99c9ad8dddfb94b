"""The app notebook as a student sees it: notebooks/app.ipynb opened in JupyterLab (Chromium, a laptop-sized
window, the file browser open), every cell run, and every panel readable.

Headless Chromium (Debian's ``chromium``) driven by Playwright; JupyterLab started through binder/start in a
fresh HOME, on a copy of the notebook (running it must not write outputs into the repository's copy).
Bokeh draws plots on canvases, so sizes and legends are read from BokehJS's own views and models.
"""

from __future__ import annotations

import shutil
import time

import pytest
from _support.browser import CHROMIUM, CHROMIUM_ARGS, REPO, TOKEN, binder_lab

#: A laptop's browser window; JupyterLab's file browser takes ~280 px of it, the notebook the rest.
VIEWPORT = {"width": 1400, "height": 900}
#: Narrowest readable plot frame (the axes' data area), CSS px.
READABLE = 400

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: `make sysdeps` installs it"),
]

PLOT_FRAMES = r"""
() => {
  // every Bokeh plot on the page: title, its data frame's screen box (CSS px), legend labels
  const out = [], seen = new Set();
  const walk = (v) => {
    if (!v || seen.has(v)) return;
    seen.add(v);
    if (v.frame && v.model && v.model.x_range && v.canvas_view) {
      const r = v.canvas_view.el.getBoundingClientRect(), b = v.frame.bbox;
      const legends = [];
      for (const item of v.model.renderers.concat(v.model.center || [])) {
        for (const li of (item.items || [])) {
          const l = li.label;
          legends.push(typeof l === "string" ? l : (l && (l.value ?? l.field)) || "");
        }
      }
      out.push({title: v.model.title ? v.model.title.text : "", left: r.left + b.left, width: b.width,
                height: b.height, legends});
    }
    for (const c of (v.child_views || [])) walk(c);
  };
  for (const v of Object.values(window.Bokeh.index)) walk(v);
  return out;
}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab, started as Binder starts it, on a folder holding a copy of notebooks/app.ipynb."""
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "course"
    root.mkdir()
    shutil.copy(REPO / "notebooks" / "app.ipynb", root / "app.ipynb")
    env = {"LATENTSKY_OFFLINE": "1"}
    with binder_lab(tmp, root, home=tmp / "home", env=env, args=["--LabApp.news_url=None"], start_s=90) as lab:
        yield lab


def _run_all(page) -> None:
    """Run every cell from JupyterLab's Run menu and wait until no cell is queued or running."""
    try:  # a notebook opened for the first time may ask which kernel to start
        page.locator(".jp-Dialog button", has_text="Select").click(timeout=15000)
    except Exception:
        pass
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    deadline = time.monotonic() + 400
    page.wait_for_selector(".jp-InputArea-prompt:has-text('*')", timeout=30000)
    while page.locator(".jp-InputArea-prompt:has-text('*')").count():
        assert time.monotonic() < deadline, "the notebook did not finish within 400 s"
        page.wait_for_timeout(1000)
    page.wait_for_timeout(2000)  # the last outputs' plots lay out


def test_app_notebook_in_jupyterlab_shows_every_panel_readable(lab, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(f"{lab['url']}/lab/tree/app.ipynb?token={TOKEN}")
            page.wait_for_selector(".jp-Notebook", timeout=90000)
            _run_all(page)
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
            assert not tracebacks, tracebacks[0][-2000:]

            explore = page.locator(".latentsky-explore").first
            explore.scroll_into_view_if_needed()
            explore.screenshot(path=tmp_path / "app-in-notebook.png")
            area = page.locator(".jp-OutputArea-output").nth(0).bounding_box()
            notebook_right = area["x"] + area["width"]

            frames = page.evaluate(PLOT_FRAMES)
            by_title = {}
            for f in frames:
                by_title.setdefault(f["title"], []).append(f)
            # the map, and the tapped spectrum twice (the app's panel, and the cell that returns the plot)
            spectra = [f for f in frames if any("spectrum" == s for s in f["legends"])]
            assert len(spectra) >= 2, f"the spectrum is not drawn twice (app and cell): {frames}"
            maps = [f for f in frames if f["height"] >= 400]
            assert maps, f"no map on the page: {frames}"
            for f in maps + spectra:
                assert f["width"] >= READABLE, f"{f['title']!r} is squeezed to {f['width']:.0f} px: {frames}"
                assert f["left"] + f["width"] <= notebook_right + 2, (
                    f"{f['title']!r} runs past the notebook's right edge ({notebook_right:.0f} px)"
                )
            # the selection table is as readable
            table = page.locator(".latentsky-explore .tabulator").first.bounding_box()
            assert table["width"] >= READABLE and table["x"] + table["width"] <= notebook_right + 2, table
            # legends read as written, not as HoloViews' identifiers (..._left_parenthesis_...)
            labels = [s for f in spectra for s in f["legends"]]
            assert any("reconstruction from the latent point (MSE " in s for s in labels), labels
            assert not [s for s in labels if "_" in s and "parenthesis" in s], labels
            # no cell printed a plot as text
            texts = page.locator(".jp-OutputArea-output").all_inner_texts()
            assert not [t for t in texts if t.lstrip().startswith(":Overlay")], "a plot printed as text"
        finally:
            browser.close()
