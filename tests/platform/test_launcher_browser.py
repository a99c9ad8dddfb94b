"""The user's path on Binder, in a real browser: JupyterLab (started through binder/start), the "latentsky
explorer" tile of its launcher, and the app it opens through jupyter-server-proxy, map drawn.

Headless Chromium (Debian's ``chromium``, ``make sysdeps``) driven by Playwright; the server runs in a fresh
HOME whose cache holds nothing, so the app opens on the sample it prepares itself.
"""

from __future__ import annotations

import pytest
from _support.browser import CHROMIUM, CHROMIUM_ARGS, REPO, TOKEN, binder_lab

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: `make sysdeps` installs it"),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on the course, started as Binder starts it (binder/start ... jupyter lab).

    A home without the sample's results: binder/start prepares them in the background (as on a JupyterHub with
    persistent homes) and the app opens on the sample's PCA map meanwhile; the test does not wait.
    """
    tmp = tmp_path_factory.mktemp("lab")
    with binder_lab(tmp, REPO / "notebooks", home=tmp) as lab:
        yield lab


def test_launcher_tile_opens_the_app(lab, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            page = context.new_page()
            page.goto(f"{lab['url']}/lab?token={TOKEN}")
            tile = page.locator(".jp-LauncherCard", has_text="latentsky explorer")
            tile.wait_for(timeout=60000)
            page.screenshot(path=tmp_path / "launcher.png")
            app = None
            for _ in range(5):  # on a loaded machine the launcher may draw its tiles before it wires them
                try:
                    with context.expect_page(timeout=30000) as opened:
                        tile.click()
                    app = opened.value
                    break
                except sync_api.TimeoutError:
                    continue
            assert app is not None, "clicking the launcher tile opened no page in 150 s"
            errors = []
            app.on("pageerror", lambda e: errors.append(str(e)))
            app.wait_for_load_state(timeout=150000)
            assert app.url.startswith(f"{lab['url']}/latentsky/"), app.url
            app.wait_for_selector("text=125 spectra", timeout=150000)
            app.wait_for_selector(".latentsky-explore canvas", state="attached", timeout=30000)
            app.wait_for_timeout(1000)
            app.screenshot(path=tmp_path / "app.png")
            assert errors == [], errors
        finally:
            browser.close()
