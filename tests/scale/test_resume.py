"""An interrupted pipeline run resumes at the stage and at the chunk where it stopped."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

import latentsky.embed.runner as runner
import latentsky.pipeline as pipeline
import latentsky.pipeline_encode as pipeline_encode
from latentsky.embed.layout import open_embeddings


class Interrupt(Exception):
    """Stands for Ctrl-C or a killed job."""


def interrupt_after(task: str, done: int):
    """A progress callback that interrupts ``task`` once ``done`` spectra of it are finished."""

    def callback(event):
        if event.task == task and not event.finished and event.done >= done:
            raise Interrupt(f"{task} interrupted at {event.done}")

    return callback


def count_calls(monkeypatch, module, name):
    """Record the first row of every chunk computed by ``module.name``."""
    starts = []
    real = getattr(module, name)

    def counting(start, stop, *args, **kwargs):
        starts.append(start)
        return real(start, stop, *args, **kwargs)

    monkeypatch.setattr(module, name, counting)
    return starts


def test_interrupted_run_resumes_at_the_stage_and_chunk(synth_store, small, tmp_path, monkeypatch):
    out = tmp_path / "run"
    settings = dict(small, train_rows=None)

    # 1. stopped in stage 1 after three of twelve chunks
    with pytest.raises(Interrupt):
        pipeline.run_pipeline(synth_store.path, out, progress=interrupt_after("embed", 300), **settings)
    assert not (out / "embeddings").exists() and len(list(out.glob(".embeddings.partial-*"))) == 1
    embedded = count_calls(monkeypatch, runner, "_embed_chunk")
    # 2. resumed: only the nine missing chunks are embedded; then stopped in encode after five chunks
    with pytest.raises(Interrupt):
        pipeline.run_pipeline(synth_store.path, out, progress=interrupt_after("encode", 500), **settings)
    assert embedded == list(range(300, 1200, 100))
    state = json.loads((out / "pipeline.json").read_text())
    assert {"embed", "train"} <= set(state) and "encode" not in state
    assert not (out / "latent.parquet").exists()
    model_time = (out / "model.keras").stat().st_mtime_ns
    # 3. resumed: ingest, embed and train are skipped, encode starts at chunk 5
    encoded = count_calls(monkeypatch, pipeline_encode, "_encode_chunk")
    events = []
    metrics = pipeline.run_pipeline(synth_store.path, out, progress=events.append, **settings)
    assert embedded == list(range(300, 1200, 100))  # stage 1 not run again
    assert encoded == list(range(500, 1200, 100))
    assert metrics["skipped"] == ["ingest", "embed", "train"]
    assert (out / "model.keras").stat().st_mtime_ns == model_time
    assert {e.task for e in events} == {"encode"}
    assert "resumed: 5 chunks" in next(e.message for e in events if e.done == 500)
    assert not list(out.glob(".*partial*")) and not list(out.glob(".*.lock"))

    # the resumed run's outputs are those of one uninterrupted run
    fresh = tmp_path / "fresh"
    params = {**pipeline.EMBED_DEFAULTS, **small["embed"]}
    runner.embed_store(synth_store, fresh / "embeddings", random_state=0, **params)
    a, b = open_embeddings(out / "embeddings"), open_embeddings(fresh / "embeddings")
    for name in ("readout", "gram", "xty", "yty", "n_steps"):
        assert np.array_equal(getattr(a, name)[:], getattr(b, name)[:]), name
    pipeline.encode_latent(synth_store, b, out / "model.keras", fresh, resume=False)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "latent.parquet"), pd.read_parquet(fresh / "latent.parquet"))

    # lost embeddings are made again; the same readouts need no new model nor a new map
    shutil.rmtree(out / "embeddings")
    metrics = pipeline.run_pipeline(synth_store.path, out, **settings)
    assert metrics["skipped"] == ["ingest", "train", "encode"]
    assert (out / "model.keras").stat().st_mtime_ns == model_time
    assert np.array_equal(open_embeddings(out / "embeddings").gram[:], b.gram[:])


def test_a_partial_run_with_other_settings_is_not_reused(tmp_path):
    from latentsky.store.partial import PartialDirectory

    with PartialDirectory(tmp_path / "out", "key-1") as part:
        part.mark(0)
        part.mark(3)
    with PartialDirectory(tmp_path / "out", "key-1") as part:
        assert part.resumed and part.done() == {0, 3}
    assert PartialDirectory.stored_state(tmp_path / "out", "key-2") is None
    again = PartialDirectory(tmp_path / "out", "key-2", state={"a": 1})
    assert not again.resumed and again.done() == set()
    assert PartialDirectory.stored_state(tmp_path / "out", "key-2") == {"a": 1}
    (again.path / "data").write_text("complete")
    again.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".latentsky-output.json", "data"]
