"""Render latency of the latent map: ours beside plain Datashader and matplotlib, and zoom-to-paint in a browser.

Server side, at 800x800 pixels, on synthetic latent tables derived from the
bundled sample (``latentsky.synth``), 10^6 and 10^7 points:

* ``ours``: the work the server does on every zoom of :func:`latentsky.viz.latent.latent_map`
  (the map built once, then its range stream moved to a new view): the aggregation of the
  density (:mod:`latentsky.viz.raster`), its colouring (eq_hist, :mod:`latentsky.viz.shading`),
  ``dynspread`` and the HoloViews element and Bokeh update of the RGBA image the browser
  draws.  ``ours by class`` colours by a column of 3 classes instead (the app's default
  colouring: counts per class, mixed colours).  ``ours+hover`` adds the hover's index pass
  (:class:`latentsky.viz.latent.PixelIndex`), run once per view when the pointer moves.
* ``datashader``: plain ``Canvas.points(count)`` + ``tf.shade`` (aggregate + shade).
* ``matplotlib``: ``ax.scatter`` of every point and ``canvas.draw()`` (10^6 only unless --matplotlib-1e7).

Warm figures are the median of ``--repeat`` runs after one untimed call; the
first call is measured in a fresh Python process (it includes Numba's
compilation), with and without :func:`latentsky.viz.latent.warm_up` run first
(what ``panel serve --warm`` and ``latentsky app`` do before the page opens).

Browser side: ``panel serve widgets/app.py`` on a 10^7-row table, headless
Chromium (Debian's ``/usr/bin/chromium``) driven by Playwright; a mouse-wheel
zoom on the map, timed from the wheel event until the new image from the server has been
painted (the change of the image source's data after the wheel, plus two animation frames).
The timer starts in the page, on the wheel event itself, and the wheel is sent without waiting on the timing
promise (waiting with Playwright's ``evaluate_handle`` first times some other model's change instead; see
docs/decisions/map-zoom.md).

Everything for this CPU's native instruction set and again with AVX2 forced, in a child
process (``--isa``, see ``bench/_cpu.py``: numba, hence Datashader and our kernels, OpenBLAS,
NumPy, Arrow; Chromium is not forced); the CPU model and each pass's instruction set are printed.

Last line: one JSON object with ``ours_1e6_ms, ours_1e7_ms, ours_by_class_1e7_ms, datashader_1e6_ms,
datashader_1e7_ms, matplotlib_1e6_ms, browser_zoom_1e7_ms`` and the first-call figures (the AVX2
pass's under ``"avx2"``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO / "bench"))
sys.path.append(str(REPO / "tests"))
import _cpu  # noqa: E402
from _support.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402  (the browser the tests drive)

SIZE = 800


def timed(fn, repeat: int) -> float:
    """Median wall time of ``fn()`` in ms, after one untimed warm call."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def make_table(templates, n: int):
    from latentsky.synth import synth_table

    return synth_table(templates, n, seed=0)


def ours(table, *, hover_index: bool = False, color_by: str = "count"):
    import holoviews as hv

    from latentsky.viz.latent import PixelIndex, latent_map, prepare_table

    prepared = prepare_table(table)
    dmap = latent_map(prepared, color_by=color_by, width=SIZE, height=SIZE, hover=True, prepared=True)
    x0, x1 = float(prepared["x"].min()), float(prepared["x"].max())
    y0, y1 = float(prepared["y"].min()), float(prepared["y"].max())
    # a Bokeh plot of the map, as a served page has: rendering attaches the range streams that
    # rasterize listens to, and each trigger updates the plot's data as a zoom in the browser does
    plot = hv.renderer("bokeh").get_plot(dmap)
    ranges = [st for st in plot.streams if isinstance(st, hv.streams.RangeXY)]
    assert ranges, "no RangeXY stream on the map"
    pixels = PixelIndex(prepared, SIZE, SIZE)
    state = {"i": 0}

    def run():
        # a new view each call (zoom in and out by 1 %), as the browser's range updates do
        state["i"] += 1
        f = 1 + 0.01 * (state["i"] % 2)
        xr, yr = (x0 * f, x1 * f), (y0 * f, y1 * f)
        for st in ranges:
            st.update(x_range=xr, y_range=yr)
        hv.streams.Stream.trigger(ranges)  # re-aggregates and updates the Bokeh image source
        if hover_index:
            pixels.lookup(0.0, 0.0, xr, yr)
        return plot.current_frame

    return run


def plain_datashader(table):
    import datashader as ds
    import datashader.transfer_functions as tf

    df = table[["x", "y"]]
    x0, x1 = float(df["x"].min()), float(df["x"].max())
    y0, y1 = float(df["y"].min()), float(df["y"].max())

    def run():
        cvs = ds.Canvas(plot_width=SIZE, plot_height=SIZE, x_range=(x0, x1), y_range=(y0, y1))
        return tf.shade(cvs.points(df, "x", "y", ds.count()), how="eq_hist")

    return run


def matplotlib_scatter(table):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = table["x"].to_numpy(), table["y"].to_numpy()

    def run():
        fig = plt.figure(figsize=(SIZE / 100, SIZE / 100), dpi=100)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.scatter(x, y, s=1, linewidths=0, rasterized=True)
        fig.canvas.draw()
        plt.close(fig)

    return run


FIRST_CALL = r"""
import json, sys, time
import numpy as np, pandas as pd
warm = sys.argv[1] == "warm"
rng = np.random.default_rng(0)
n = 1_000_000
table = pd.DataFrame({"x": rng.normal(size=n), "y": rng.normal(size=n), "id": np.arange(n).astype(str),
                      "snr": rng.random(n).astype("f4"), "object": pd.Categorical(rng.integers(0, 5, n).astype(str))})
from latentsky.viz.latent import latent_map, warm_up, prepare_table
import holoviews as hv
out = {}
if warm:
    t0 = time.perf_counter(); warm_up(); out["warm_up_ms"] = (time.perf_counter() - t0) * 1e3
prepared = prepare_table(table)
t0 = time.perf_counter()
latent_map(prepared, color_by="count", width=800, height=800, prepared=True)[()]
out["first_ms"] = (time.perf_counter() - t0) * 1e3
t0 = time.perf_counter()
latent_map(prepared, color_by="count", width=800, height=800, prepared=True)[()]
out["second_ms"] = (time.perf_counter() - t0) * 1e3
print(json.dumps(out))
"""

FIRST_CALL_DS = r"""
import json, time
import numpy as np, pandas as pd
import datashader as ds, datashader.transfer_functions as tf
rng = np.random.default_rng(0)
df = pd.DataFrame({"x": rng.normal(size=1_000_000), "y": rng.normal(size=1_000_000)})
t0 = time.perf_counter()
tf.shade(ds.Canvas(plot_width=800, plot_height=800).points(df, "x", "y", ds.count()))
print(json.dumps({"first_ms": (time.perf_counter() - t0) * 1e3}))
"""


def first_call(code: str, *args) -> dict:
    """Run ``code`` in a fresh Python process; its last line is a JSON object."""
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


ZOOM_JS = r"""
() => { window.__zoomed = new Promise((resolve) => {
  const doc = window.Bokeh.documents[0];
  let start = null;
  let done = false;
  // timed from the wheel event itself (the page's clock)
  window.addEventListener("wheel", () => { if (start === null) start = performance.now(); },
                          {capture: true, once: true});
  const hasImage = (data) => data != null && (data instanceof Map ? data.has("image") : "image" in data);
  const cb = (ev) => {
    if (done || start === null) return;
    // the new raster arrives as a change of the "data" of the image glyph's ColumnDataSource (other changes
    // come first: the URL, the hover text, the colour bar)
    if (ev.attr !== "data" || !ev.model || !hasImage(ev.model.data)) return;
    done = true;
    requestAnimationFrame(() => requestAnimationFrame(() => resolve(performance.now() - start)));
  };
  doc.on_change(cb);
  setTimeout(() => { if (!done) { done = true; resolve(-1); } }, 20000);
}); }
"""


def browser_zoom(data_dir: Path, repeat: int) -> dict:
    """Median zoom-to-paint latency (ms) in headless Chromium on the app serving ``data_dir``."""
    import socket
    import urllib.request

    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(data_dir / "serve.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "panel",
            "serve",
            str(REPO / "widgets" / "app.py"),
            "--port",
            str(port),
            "--address",
            "127.0.0.1",
            "--allow-websocket-origin",
            f"127.0.0.1:{port}",
            "--warm",
            "--args",
            str(data_dir),
        ],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/app", timeout=60)
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"panel serve did not start; see {data_dir / 'serve.log'}")
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            t0 = time.perf_counter()
            page.goto(f"http://127.0.0.1:{port}/app")
            page.wait_for_selector(".explore-info >> text=spectra", timeout=120000)
            page.wait_for_selector(".latentsky-explore canvas", state="attached", timeout=60000)
            page.wait_for_timeout(2000)
            load_ms = (time.perf_counter() - t0) * 1e3
            canvases = page.locator(".latentsky-explore canvas")
            boxes = [canvases.nth(i).bounding_box() for i in range(canvases.count())]
            box = max((b for b in boxes if b and b["x"] < 400), key=lambda b: b["width"] * b["height"])
            cx, cy = box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.55
            page.mouse.move(cx, cy)
            lat = []
            for i in range(repeat):
                # armed first (evaluate would wait for a returned promise, so it is kept in the page)
                page.evaluate(ZOOM_JS)
                page.mouse.wheel(0, -240 if i % 2 == 0 else 240)
                ms = page.evaluate("() => window.__zoomed")
                lat.append(ms)
                page.wait_for_timeout(600)
            page.screenshot(path=str(data_dir / "zoom.png"))
            browser.close()
        ok = [v for v in lat if v >= 0]
        return {
            "browser_zoom_1e7_ms": statistics.median(ok) if ok else None,
            "browser_zoom_samples_ms": lat,
            "browser_load_1e7_ms": load_ms,
        }
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument("--no-browser", action="store_true", help="skip the Playwright zoom measurement")
    parser.add_argument("--matplotlib-1e7", action="store_true", help="also time matplotlib at 10^7 (slow)")
    parser.add_argument("--sizes", default="1e6,1e7", help="point counts, comma separated")
    parser.add_argument(
        "--isa",
        choices=_cpu.CHOICES,
        default="both",
        help="instruction sets: native and forced AVX2 (default), or one of them",
    )
    parser.add_argument(
        "--synth",
        type=Path,
        default=None,
        help="the 10^7-row synthetic folder of the browser test, when already written",
    )
    args = parser.parse_args(argv)
    if _cpu.reexec_if_needed(args.isa, __file__, argv):
        return 0
    print(_cpu.header(), flush=True)

    from latentsky.data import sample_store
    from latentsky.synth import templates_from_store, write_synth

    templates = templates_from_store(sample_store())
    result: dict = {}
    for text in args.sizes.split(","):
        n = int(float(text))
        tag = f"1e{int(round(np.log10(n)))}"
        table = make_table(templates, n)
        result[f"ours_{tag}_ms"] = timed(ours(table), args.repeat)
        result[f"ours_hover_{tag}_ms"] = timed(ours(table, hover_index=True), args.repeat)
        result[f"ours_by_class_{tag}_ms"] = timed(ours(table, color_by="spec_class"), args.repeat)
        result[f"datashader_{tag}_ms"] = timed(plain_datashader(table), args.repeat)
        if n <= 1_000_000 or args.matplotlib_1e7:
            result[f"matplotlib_{tag}_ms"] = timed(matplotlib_scatter(table), max(1, args.repeat // 2))
        print(
            f"{n:>10,} points  ours {result[f'ours_{tag}_ms']:7.1f} ms (+hover index "
            f"{result[f'ours_hover_{tag}_ms']:.1f} ms; by class {result[f'ours_by_class_{tag}_ms']:.1f} ms)"
            f"   datashader "
            f"{result[f'datashader_{tag}_ms']:7.1f} ms"
            + (f"   matplotlib {result[f'matplotlib_{tag}_ms']:7.1f} ms" if f"matplotlib_{tag}_ms" in result else ""),
            flush=True,
        )
        del table
    cold = first_call(FIRST_CALL, "cold")
    warm = first_call(FIRST_CALL, "warm")
    ds_cold = first_call(FIRST_CALL_DS)
    result.update(
        {
            "ours_first_call_1e6_ms": cold["first_ms"],
            "ours_first_call_after_warm_up_1e6_ms": warm["first_ms"],
            "warm_up_ms": warm.get("warm_up_ms"),
            "datashader_first_call_1e6_ms": ds_cold["first_ms"],
        }
    )
    print(
        f"first call at 10^6: ours {cold['first_ms']:.0f} ms cold, {warm['first_ms']:.0f} ms after warm_up "
        f"({warm['warm_up_ms']:.0f} ms, done before the page opens); plain Datashader {ds_cold['first_ms']:.0f} ms",
        flush=True,
    )
    if "ours_1e6_ms" in result and "datashader_1e6_ms" in result:
        result["ours_over_datashader_1e6"] = result["ours_1e6_ms"] / result["datashader_1e6_ms"]
    if "ours_1e7_ms" in result and "datashader_1e7_ms" in result:
        result["ours_over_datashader_1e7"] = result["ours_1e7_ms"] / result["datashader_1e7_ms"]
    result["browser_zoom_1e7_ms"] = None
    with tempfile.TemporaryDirectory(prefix="latentsky-render-") as tmp:
        extra = []  # the forced-AVX2 pass reuses the synthetic folder written here
        if not args.no_browser and CHROMIUM.exists():
            data = args.synth or write_synth(Path(tmp) / "synth1e7", 10_000_000, seed=0)
            extra = ["--synth", str(data)]
            result.update(browser_zoom(data, args.repeat))
            print(
                f"browser zoom-to-paint at 10^7: {result['browser_zoom_1e7_ms']:.0f} ms (median of "
                f"{args.repeat}; samples {['%.0f' % v for v in result['browser_zoom_samples_ms']]}; Chromium's "
                "own instruction set)",
                flush=True,
            )
        elif not args.no_browser:
            print(f"browser: {CHROMIUM} not found, zoom-to-paint not measured", flush=True)
        result = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in result.items()}
        final = _cpu.combine(result, args.isa, __file__, argv, extra)
    if isinstance(final.get("avx2"), dict):
        a = final["avx2"]
        for key in ("ours_1e7_ms", "ours_by_class_1e7_ms", "browser_zoom_1e7_ms"):
            if final.get(key) is not None and a.get(key) is not None:
                print(f"{key}: native ({final['isa']['isa']}) {final[key]:.0f}, AVX2 forced {a[key]:.0f}")
    print(json.dumps(final))
    return 0


if __name__ == "__main__":
    sys.exit(main())
