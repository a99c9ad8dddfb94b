"""The one progress event stream, and its tqdm view."""

from __future__ import annotations

import io

import pytest

from latentsky.progress import Progress, TqdmProgress


def test_events_count_work_and_mark_the_end():
    events = []
    with Progress("download", total=300, unit="B", callback=events.append) as p:
        p.advance(100, "a.fits")
        p.set_total(400)
        p.advance(300)
    assert [(e.done, e.total) for e in events] == [(0, 300), (100, 300), (100, 400), (400, 400), (400, 400)]
    assert events[1].message == "a.fits" and events[-1].finished and events[-1].fraction == 1.0


def test_a_failed_task_ends_with_a_failed_event():
    events = []
    with pytest.raises(RuntimeError):
        with Progress("embed", total=2, callback=events.append) as p:
            p.advance(1)
            raise RuntimeError("boom")
    assert events[-1].finished and events[-1].message == "failed" and events[-1].done == 1


def test_tqdm_view_draws_one_bar_per_task_and_closes_it(monkeypatch):
    stream = io.StringIO()
    import tqdm.auto

    real = tqdm.auto.tqdm
    monkeypatch.setattr(tqdm.auto, "tqdm", lambda *a, **k: real(*a, file=stream, **k))
    view = TqdmProgress(disable=False)
    with Progress("ingest", total=3, unit="spectra", callback=view) as p:
        for name in ("a", "b", "c"):
            p.advance(1, name)
        assert set(view._bars) == {"ingest"}
    assert view._bars == {}
    assert "3/3" in stream.getvalue() and "ingest" in stream.getvalue()
