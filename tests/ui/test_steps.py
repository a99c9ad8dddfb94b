"""Query -> Download -> Embed -> Train driven by parameters, against the local archive (no browser)."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("panel")

from latentsky.pipeline_defaults import EMBED_DEFAULTS  # noqa: E402
from latentsky.ui.steps import Download, Embed, ProgressView, Query, Train, read_coordinate_table  # noqa: E402

ALPHA_CEN = "219.87924 -60.82793"  # HD128621, 24 HARPS spectra in the sample


def test_query_by_coordinates_lists_products(local):
    q = Query(archive="eso", coordinates=ALPHA_CEN, radius=60)
    table = q.run()
    assert q.error == ""
    assert len(table) == 24 and set(table["object"]) == {"HD128621"}
    assert "24 products" in q.info
    df = q.results
    assert len(df) == 24 and "access_url" in df.columns


def test_query_typo_gives_a_message_not_a_traceback(local):
    from latentsky.config import conf

    conf.offline = True
    q = Query(archive="eso", target="HD12862l")
    assert q.run() is None
    assert "target" in q.error and "HD12862l" in q.error
    q = Query(archive="eso", coordinates="14h99m -60d")
    q.run()
    assert "coordinates" in q.error
    q = Query(archive="eso")
    q.run()
    assert q.error.startswith("target:")


def test_query_with_an_uploaded_table(local):
    content = b"name,RA,Dec\nalf Cen B,219.87924,-60.82793\nnothing,10.0,10.0\n"
    table = read_coordinate_table(content, "positions.csv")
    q = Query(archive="eso", upload=table, radius=60)
    assert len(q.run()) == 24
    with pytest.raises(Exception, match="positions.csv"):
        read_coordinate_table(b"a,b\n1,2\n", "positions.csv")


def test_download_then_embed_then_train_open_the_map(local, tmp_path):
    q = Query(archive="eso", coordinates=ALPHA_CEN, radius=60)
    products = q.run()[:6]
    d = Download(dest=str(tmp_path / "dl"), products=products)
    events = []
    d.progress.param.watch(lambda e: events.append(e.new), "done")
    d.start()
    assert d.error == "", d.error
    assert d.counts.get("done") == 6
    assert len(d.states) == 6 and set(d.states["state"]) == {"done"}
    assert events and max(events) >= 4  # progress reached the widget
    # a new component (think: after a kernel restart) reads the same state from the manifest
    again = Download(dest=str(tmp_path / "dl"))
    again.refresh()
    assert again.counts.get("done") == 6

    e = Embed(source=str(tmp_path / "dl"), out=str(tmp_path / "store"), n_units=8)
    e.run()
    assert e.error == "", e.error
    assert e.progress.task == "embed" and e.progress.finished

    t = Train(store=e.store, out=str(tmp_path / "results"), method="pca")
    t.run()
    assert t.error == "" and len(t.results.table) == 6
    assert (tmp_path / "results" / "latent.parquet").exists()


def test_train_draws_the_loss_curve_while_it_trains(sample_store, tmp_path):
    """The autoencoder in its child process: one row of losses per iteration, arriving while it trains."""
    t = Train(
        store=str(sample_store.path),
        out=str(tmp_path / "results"),
        map="coupled",
        max_iter=6,
        restarts=1,
        hidden=16,
        embed={"n_units": 20},
    )
    seen = []
    t.param.watch(lambda e: seen.append((len(e.new), t.running)), "losses")
    t.run()
    assert t.error == "", t.error
    # 6 L-BFGS iterations (fewer if the loss stalls first)
    n = len(t.losses)
    assert t.losses["epoch"].tolist() == list(range(1, n + 1)) and 1 <= n <= 6
    assert np.isfinite(t.losses["loss"]).all()
    # live: the curve grew one epoch at a time during the run, not once at its end
    assert [k for k, running in seen if running] == list(range(0, n + 1))
    assert len(t.results.table) == len(sample_store) and t.results.source.reconstruct is not None
    from latentsky.embed.layout import open_embeddings

    assert open_embeddings(tmp_path / "results" / "embeddings").attrs["n_units"] == 20  # the Embed settings
    curve = t.loss_plot()[()]
    assert list(curve.keys()) == ["loss"] and f"epoch {n}" in curve.opts.get().kwargs["title"]


def test_loss_curve_from_training_events():
    from latentsky.autoencoder import TrainingEvent

    t = Train()
    for epoch, (loss, val) in enumerate([(1.0, 1.2), (0.5, 0.7), (0.25, 0.4)], start=1):
        t.on_event(TrainingEvent("train", epoch, 10, "epochs", "", False, 0.1 * epoch, {"loss": loss, "val_loss": val}))
    assert t.losses[["epoch", "loss", "val_loss"]].values.tolist() == [[1, 1.0, 1.2], [2, 0.5, 0.7], [3, 0.25, 0.4]]
    assert t.progress.done == 3 and t.progress.total == 10
    dmap = t.loss_plot()
    import holoviews as hv

    plot = hv.renderer("bokeh").get_plot(dmap)  # what the page shows, updated in place at each epoch
    assert plot.state.title.text == "epoch 3: loss 0.25"
    t.on_event(TrainingEvent("train", 4, 10, "epochs", "", False, 0.4, {"loss": 0.2, "val_loss": 0.3}))
    t._send_losses(force=True)
    assert plot.state.title.text == "epoch 4: loss 0.2"
    assert plot.state.y_range.start <= 0.2 and plot.state.y_range.end >= 1.2  # the axes follow the curve
    assert plot.state.x_range.end >= 4
    lines = {r.data_source.data["loss"].tolist()[0]: r.data_source.data["loss"].tolist() for r in plot.state.renderers}
    assert lines == {1.0: [1.0, 0.5, 0.25, 0.2], 1.2: [1.2, 0.7, 0.4, 0.3]}


def test_cancel_stops_training_at_once(sample_store, tmp_path):
    t = Train(
        store=str(sample_store.path),
        out=str(tmp_path / "results"),
        map="coupled",
        max_iter=5000,
        restarts=1,
        embed={"n_units": 20},
    )
    cancelled_at = []

    def cancel_after_two_epochs(event):
        if len(event.new) >= 2 and not cancelled_at:
            cancelled_at.append(time.monotonic())
            t.cancel()

    t.param.watch(cancel_after_two_epochs, "losses")
    t.run()
    assert "cancelled" in t.info and t.error == "" and t.results is None
    assert 2 <= len(t.losses) < 5000 and time.monotonic() - cancelled_at[0] < 15  # the child stopped at once
    assert not (tmp_path / "results" / "latent.parquet").exists()


def test_pause_stops_inside_the_job_and_resume_finishes_it(local, tmp_path):
    """Pause mid-job (one manager run over all files): nothing new starts, the manifest says done only for
    verified files, and resume fetches only what is missing."""
    import hashlib
    from collections import Counter
    from pathlib import Path

    from latentsky.download import Manifest

    products = Query(archive="eso", coordinates=ALPHA_CEN, radius=60).run()[:12]
    d = Download(dest=str(tmp_path / "dl"), products=products)
    # each answer takes a second (4 connections per host: 3 waves of 4), so a pause lands while files are in
    # flight even when the test thread is scheduled late on a loaded machine (with 0.3 s, all 12 once finished)
    local.server.latency = 1.0
    try:
        local.server.clear()
        d.in_background(d.start)
        deadline = time.monotonic() + 60
        while d.progress.done < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        d.pause()
        d.wait(60)
        assert d.error == "" and d.paused and d.info.startswith("paused")
        done = d.counts.get("done", 0)
        assert 1 <= done < 12 and set(d.counts) <= {"done", "pending"}
        with Manifest.for_folder(tmp_path / "dl") as m:
            rows = m.rows()
        for r in rows:  # consistent: done means the verified file is in place; nothing else is
            dest = Path(r["dest"])
            if r["state"] == "done":
                assert (
                    hashlib.sha256(dest.read_bytes()).hexdigest() == r["sha256"] and dest.stat().st_size == r["bytes"]
                )
            else:
                assert not dest.exists()
        first = Counter(rec.path for rec in local.server.log if rec.path.startswith("/eso/file/"))
        local.server.latency = 0.0
        local.server.clear()
        d.resume()
        assert d.error == "" and not d.paused and d.counts == {"done": 12}
        again = Counter(rec.path for rec in local.server.log if rec.path.startswith("/eso/file/"))
        done_before = {r["url"].split("/eso/file/")[1] for r in rows if r["state"] == "done"}
        assert len(first) >= done and not done_before & {p.split("/eso/file/")[1] for p in again}
        assert len(again) == 12 - done and all(n == 1 for n in again.values())
    finally:
        local.server.latency = 0.0


def test_cancel_stops_embedding(sample, tmp_path):
    e = Embed(source=str(sample), out=str(tmp_path / "store"), n_units=8)
    e.progress.param.watch(lambda ev: e.cancel(), "done")
    e.run()
    assert "cancelled" in e.info and e.error == ""
    assert not (tmp_path / "store").exists()  # the atomic write left nothing behind


def test_errors_name_the_parameter(tmp_path):
    d = Download(dest=str(tmp_path))
    d.start()
    assert d.error.startswith("products:")
    e = Embed(source=str(tmp_path / "nope"), out=str(tmp_path / "s"))
    e.run()
    assert e.error.startswith("source:")
    t = Train(store=str(tmp_path / "nope"))
    t.run()
    assert t.error.startswith("store:")


def test_progress_view_shows_events():
    from latentsky.progress import Progress

    view = ProgressView()
    with Progress("download", total=4, unit="files", callback=view) as p:
        p.advance(1, "a.fits")
        assert view.done == 1 and view.total == 4 and view.message == "a.fits"
        p.advance(3)
    assert view.finished and "4 / 4 files" in view._text()


def test_background_run_keeps_the_caller_free(local):
    q = Query(archive="eso", coordinates=ALPHA_CEN, radius=60)
    thread = q.in_background(q.run)
    q.wait(30)
    assert not thread.is_alive() and len(q.products) == 24


def test_app_command_refuses_a_missing_path(tmp_path):
    from latentsky.cli import main

    assert main(["app", str(tmp_path / "nope")]) == 2


def test_app_command_serves_a_dask_table_with_dask(synth_dir, monkeypatch):
    """``latentsky app DIR --dask``: the page the server would build holds a Dask table."""
    import latentsky.ui.serve
    from latentsky.cli import main
    from latentsky.viz.latent import is_dask

    served = {}
    monkeypatch.setattr(latentsky.ui.serve, "serve_app", lambda pages, **kw: served.update(app=pages["app"](), **kw))
    assert main(["app", str(synth_dir), "--dask", "--port", "0"]) == 0
    assert is_dask(served["app"].data.table) and len(served["app"].data) == 20_000
    assert main(["app", str(synth_dir), "--port", "0"]) == 0
    assert not is_dask(served["app"].data.table)


def test_app_page_wires_the_steps(sample_data, tmp_path):
    from latentsky.ui.app import App

    app = App(sample_data, workdir=str(tmp_path))
    app.__panel__()
    assert app.download.dest == str(tmp_path / "downloads")
    from astropy.table import Table

    products = Table({"archive": ["eso"], "access_url": ["http://127.0.0.1/x.fits"]})
    app.query.products = products  # what Query sets after a query
    assert app.download.products is products
    # Train reuses what Embed writes; Embed's defaults are the pipeline's, so by default it can
    assert app.train.embeddings == str(tmp_path / "store.embeddings")
    app.embed.out = str(tmp_path / "other")
    assert app.train.embeddings == str(tmp_path / "other.embeddings")
    assert {k: getattr(app.embed, k) for k in ("n_units", "leak_rate", "ridge")} == {
        k: EMBED_DEFAULTS[k] for k in ("n_units", "leak_rate", "ridge")
    }
    # a finished training run opens its map in Explore and shows that tab
    app.active = 2
    app.train.results = sample_data
    assert app.explore.data is sample_data and app.active == 0
