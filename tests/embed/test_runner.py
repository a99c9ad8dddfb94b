"""embed_store on the bundled sample store: layout, lineage, atomicity, Dask, CLI."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from latentsky.cli import main
from latentsky.embed import ESNReadoutEmbedder
from latentsky.embed.layout import open_embeddings, pack_gram, unpack_gram
from latentsky.embed.runner import embed_store
from latentsky.exceptions import EmbeddingError
from latentsky.pipeline_defaults import EMBED_DEFAULTS

ARRAYS = ("readout", "gram", "xty", "yty", "n_steps")


@pytest.fixture(scope="module")
def single(sample_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("emb") / "single"
    events = []
    embed_store(sample_store, out, n_units=30, backend="numpy", chunk_rows=32, progress=events.append)
    return out, events


def test_layout_statistics_and_lineage(sample_store, single):
    out, events = single
    emb = open_embeddings(out)
    n = len(sample_store)
    assert len(emb) == n and emb.readout.shape == (n, 31) and emb.gram.shape == (n, 31 * 32 // 2)
    assert emb.readout.chunks == (32, 31)
    assert emb.n_steps.dtype == np.int64 and emb.gram.dtype == np.float64
    # the catalog copy lines up with the store, row by row
    assert emb.catalog["id"].tolist() == sample_store.catalog["id"].tolist()
    assert emb.catalog["row"].tolist() == list(range(n))
    # the stored readouts are the ridge solutions of the stored statistics
    st = emb.statistics()
    assert np.allclose(st.readouts(emb.attrs["ridge"]), emb.readout[:], rtol=1e-10, atol=1e-12)
    # ... and the same as the estimator gives on the same spectra
    model = ESNReadoutEmbedder(n_units=30, backend="numpy")
    model.reservoir_ = emb.reservoir
    model.offset_, model.ridge_, model.n_features_in_ = emb.attrs["offset"], emb.attrs["ridge"], 4096
    rows = slice(40, 50)
    direct = model.statistics(np.asarray(sample_store.flux[rows], dtype="f8"), sample_store.weight[rows])
    assert np.array_equal(direct.gram, st.gram[rows])
    # masked pixels: the sample's HARPS spectra stop at 6913 A, so fewer steps than SDSS ones
    harps = (emb.catalog["instrument"] == "HARPS").to_numpy()
    assert emb.n_steps[:][harps].max() < emb.n_steps[:][~harps].max()
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["step"] == "embed" and lineage["params"]["n_units"] == 30
    assert lineage["inputs"]["store_fingerprint"] == sample_store.lineage["key"]
    assert lineage["code_version"]
    assert events[-1].finished and events[-1].done == n and events[-1].unit == "spectra"


def test_pack_round_trip():
    g = np.random.default_rng(0).normal(size=(3, 5, 5))
    g = g + np.swapaxes(g, 1, 2)
    assert np.array_equal(unpack_gram(pack_gram(g)), g)


def test_dask_matches_single_process(sample_store, single, tmp_path):
    from distributed import Client, LocalCluster

    out, _ = single
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        embed_store(sample_store, tmp_path / "dask", n_units=30, backend="numpy", chunk_rows=16, client=client)
    a, b = open_embeddings(out), open_embeddings(tmp_path / "dask")
    for name in ARRAYS:
        assert np.array_equal(getattr(a, name)[:], getattr(b, name)[:]), name
    pd.testing.assert_frame_equal(a.catalog, b.catalog)


def test_failed_run_leaves_previous_output_and_resumes_at_the_chunk(sample_store, single, tmp_path, monkeypatch):
    import latentsky.embed.runner as runner

    out = tmp_path / "emb"
    embed_store(sample_store, out, n_units=10, backend="numpy")
    before = open_embeddings(out).readout[:]

    def boom(event):
        if event.done > 40:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        embed_store(sample_store, out, n_units=12, backend="numpy", chunk_rows=32, progress=boom)
    assert np.array_equal(open_embeddings(out).readout[:], before)  # the complete output is untouched
    # what was done is kept beside it, under a hidden name, to resume from
    partial, complete = sorted(tmp_path.iterdir())
    assert complete.name == "emb" and partial.name.startswith(f".emb.partial-{os.getpid()}-")  # named after the run
    assert sorted(p.name for p in (partial / ".chunks").iterdir()) == ["0", "1"]

    computed = []
    real = runner._embed_chunk

    def counting(start, stop, ids, **kw):
        computed.append(start)
        return real(start, stop, ids, **kw)

    monkeypatch.setattr(runner, "_embed_chunk", counting)
    events = []
    embed_store(sample_store, out, n_units=12, backend="numpy", chunk_rows=32, progress=events.append)
    assert computed == [64, 96]  # only the chunks not done
    assert events[1].done == 64 and "resumed" in events[1].message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb"]
    fresh = embed_store(sample_store, tmp_path / "fresh", n_units=12, backend="numpy", chunk_rows=32, resume=False)
    a, b = open_embeddings(out), open_embeddings(fresh)
    for name in ARRAYS:
        assert np.array_equal(getattr(a, name)[:], getattr(b, name)[:]), name
    # other settings never reuse a partial run
    with pytest.raises(RuntimeError):
        embed_store(sample_store, out, n_units=12, backend="numpy", chunk_rows=32, progress=boom)
    computed.clear()
    embed_store(sample_store, out, n_units=13, backend="numpy", chunk_rows=32)
    assert computed == [0, 32, 64, 96]


def test_reuse_links_an_identical_run_and_computes_any_other(sample_store, single, tmp_path):
    out, _ = single
    events = []
    linked = embed_store(
        sample_store, tmp_path / "linked", n_units=30, backend="numpy", chunk_rows=32, reuse=out, progress=events.append
    )
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(linked) for p in linked.rglob("*") if p.is_file())
    # hard links: the same files, no second copy and nothing computed
    assert all((linked / f).stat().st_ino == (out / f).stat().st_ino for f in files)
    assert events[-1].finished and any("reused" in e.message for e in events)
    assert not list(tmp_path.glob(".linked*"))  # no temporary directory left beside it
    # another setting (here the ridge) is another run: computed, not linked
    other = embed_store(
        sample_store, tmp_path / "other", n_units=30, backend="numpy", chunk_rows=32, ridge=0.1, reuse=out
    )
    assert (other / "lineage.json").stat().st_ino != (out / "lineage.json").stat().st_ino
    assert not np.allclose(open_embeddings(other).readout[:], open_embeddings(out).readout[:])


def test_refuses_an_embedder_fitted_on_another_grid(sample_store, tmp_path):
    emb = ESNReadoutEmbedder(n_units=5, bin_pixels=1, backend="numpy").fit(np.ones((2, 100)) + np.arange(100) % 3)
    with pytest.raises(EmbeddingError, match="fitted on 100"):
        embed_store(sample_store, tmp_path / "x", embedder=emb)


def test_cli_with_local_workers(sample_store, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(
        [
            "embed",
            str(sample_store.path),
            "--out",
            str(out),
            "--n-units",
            "20",
            "--ridge",
            "gcv",
            "--backend",
            "numpy",
            "--workers",
            "2",
        ]
    )
    assert rc == 0
    emb = open_embeddings(out)
    assert emb.readout.shape == (len(sample_store), 21)
    assert emb.attrs["ridge"] in [10.0**k for k in range(-8, 2)]
    assert "spectra embedded" in capsys.readouterr().out
    # the command's defaults are the pipeline's stage-1 settings
    params = json.loads((out / "lineage.json").read_text())["params"]
    assert params["leak_rate"] == EMBED_DEFAULTS["leak_rate"] != 1.0
    # worker processes give exactly what one process gives
    embed_store(
        sample_store, tmp_path / "one", n_units=20, ridge="gcv", backend="numpy", leak_rate=EMBED_DEFAULTS["leak_rate"]
    )
    one = open_embeddings(tmp_path / "one")
    for name in ARRAYS:
        assert np.array_equal(getattr(one, name)[:], getattr(emb, name)[:]), name
    assert main(["embed", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    with pytest.raises(SystemExit):
        main(["embed", str(sample_store.path), "--out", str(out), "--ridge", "lots"])


def test_tuned_run_records_the_tuned_reservoir(sample_store, tmp_path):
    events = []
    # a poor start (short memory, tiny input weights), which the tuning must leave
    out = embed_store(
        sample_store,
        tmp_path / "tuned",
        n_units=20,
        backend="numpy",
        cycle_weight=0.1,
        input_scaling=0.02,
        tune=4,
        tune_iter=15,
        progress=events.append,
    )
    emb = open_embeddings(out)
    tuned = emb.attrs["tuned"]
    assert (tuned["cycle_weight"], tuned["input_scaling"]) != (0.1, 0.02)
    assert tuned["error"] < tuned["initial_error"]
    assert abs(emb.reservoir.cycle_weight - tuned["cycle_weight"]) < 1e-12
    assert emb.attrs["params"]["cycle_weight"] == 0.1  # the settings asked for, beside what was tuned
    assert {e.task for e in events} == {"tune", "embed"}


def test_a_spectrum_that_cannot_be_embedded_is_left_out_and_named(harps_store, tmp_path):
    from latentsky.store import SpectrumStoreWriter, atomic_directory

    flux, weight = harps_store.flux[:5], harps_store.weight[:5].copy()
    weight[2] = 0  # all masked
    weight[4, 100:] = 0  # valid pixels only inside the washout
    src = tmp_path / "store"
    with atomic_directory(src) as tmp:
        writer = SpectrumStoreWriter(tmp, harps_store.wave, capacity=5, chunk_rows=2)
        for f, w in zip(flux, weight):
            writer.append(f, w)
        writer.close(pd.DataFrame({"id": ["s0", "s1", "empty-one", "s3", "short-one"], "object": ["x"] * 5}))
    out = embed_store(src, tmp_path / "out", n_units=10, backend="numpy", washout=200)
    emb = open_embeddings(out)
    assert emb.catalog["id"].tolist() == ["s0", "s1", "s3"]
    assert emb.catalog["row"].tolist() == [0, 1, 3]
    rejected = emb.rejected
    assert rejected["id"].tolist() == ["empty-one", "short-one"] and rejected["row"].tolist() == [2, 4]
    assert "no valid pixels" in rejected["reason"][0] and "washout of 200" in rejected["reason"][1]
    assert emb.attrs["n_rejected"] == 2 and len(emb) == 3 and np.isfinite(emb.readout[:]).all()
    # the kept spectra get exactly the readouts of a run without the rejected ones
    model = ESNReadoutEmbedder(n_units=10, backend="numpy", washout=200).fit(
        np.asarray(flux[[0, 1, 3]], "f8"), weight=weight[[0, 1, 3]]
    )
    direct = model.transform(np.asarray(flux[[0, 1, 3]], "f8"), weight[[0, 1, 3]])
    np.testing.assert_allclose(emb.readout[:], direct, rtol=1e-10)
