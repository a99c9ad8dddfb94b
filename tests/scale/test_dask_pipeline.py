"""The pipeline on a Dask LocalCluster (2 worker processes) gives exactly what one process gives.

On the bundled sample of real spectra (ingest from FITS, embed, train, encode)
and on a synthetic store large enough to be trained on a sample of its chunks.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from latentsky.embed.layout import open_embeddings
from latentsky.pipeline import run_pipeline

ARRAYS = ("readout", "gram", "xty", "yty", "n_steps")


def assert_same_run(a, b):
    """Two pipeline folders hold identical embeddings, latent tables and scores."""
    ea, eb = open_embeddings(a / "embeddings"), open_embeddings(b / "embeddings")
    for name in ARRAYS:
        assert np.array_equal(getattr(ea, name)[:], getattr(eb, name)[:]), name
    pd.testing.assert_frame_equal(pd.read_parquet(a / "latent.parquet"), pd.read_parquet(b / "latent.parquet"))
    ma, mb = (json.loads((p / "metrics.json").read_text()) for p in (a, b))
    assert ma["scores"] == mb["scores"] and ma["most_anomalous"] == mb["most_anomalous"]


def test_ingest_on_dask_matches_single_process(client, sample, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(sample / "harps", folder / "harps")
    (folder / "sdss").mkdir()
    for path in sorted((sample / "sdss").glob("*.fit*"))[:22]:  # 48 real spectra of both kinds in all
        shutil.copy(path, folder / "sdss" / path.name)
    (folder / "login.fits").write_text("<html><body>Please log in</body></html>")
    from latentsky.ingest import ingest
    from latentsky.store import SpectrumStore

    one = ingest([folder], tmp_path / "one", chunk_rows=16)
    events = []
    many = ingest([folder], tmp_path / "dask", chunk_rows=16, client=client, progress=events.append)
    assert many.n_spectra == one.n_spectra == 48
    assert [str(e) for e in many.errors] == [str(e) for e in one.errors]
    assert "login.fits" in str(many.errors[0])
    a, b = SpectrumStore(tmp_path / "one"), SpectrumStore(tmp_path / "dask")
    pd.testing.assert_frame_equal(a.catalog, b.catalog)
    assert b.flux.chunks == (16, 4096)
    assert np.array_equal(a.flux[:], b.flux[:]) and np.array_equal(a.weight[:], b.weight[:])
    assert events[-1].finished and events[-1].done == 49  # every file counted, the bad one too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dask", "in", "one"]  # no temporary left


def test_pipeline_on_dask_matches_single_process(client, sample_store, synth_store, small, tmp_path, capsys):
    """One test, so that one cluster (whose workers load TensorFlow to encode) serves both data sets."""
    from latentsky.cli import main

    # the bundled sample of real spectra, through the notebook API with a Client
    single = tmp_path / "sample-single"
    run_pipeline(sample_store.path, single, **small, chunk_rows=32)
    events = []
    metrics = run_pipeline(
        sample_store.path, tmp_path / "sample-dask", **small, chunk_rows=32, client=client, progress=events.append
    )
    assert_same_run(single, tmp_path / "sample-dask")
    assert metrics["scores"]["n"] == len(sample_store) == 125
    encode = [e for e in events if e.task == "encode"]
    assert encode[-1].finished and encode[-1].done == 125
    assert not list((tmp_path / "sample-dask").glob(".*partial"))  # nothing of the chunked encode is left

    # synthetic spectra, through the command line with a scheduler address, trained on a sample
    args = [
        "--n-units",
        str(small["embed"]["n_units"]),
        "--epochs",
        str(small["train"]["epochs"]),
        "--max-iter",
        str(small["train"]["max_iter"]),
        "--restarts",
        "1",
        "--train-rows",
        "450",
        "--no-progress",
    ]
    single = tmp_path / "synth-single"
    assert main(["pipeline", str(synth_store.path), "--out", str(single)] + args) == 0
    capsys.readouterr()
    dask = tmp_path / "synth-dask"
    assert (
        main(["pipeline", str(synth_store.path), "--out", str(dask), "--scheduler", client.scheduler.address] + args)
        == 0
    )
    assert "latent.parquet" in capsys.readouterr().out
    assert_same_run(single, dask)
    # trained on 450 spectra: 4 whole chunks of 100 and half of a fifth, drawn at random
    sample = open_embeddings(single / "train-sample")
    rows = sample.catalog["row"].to_numpy()
    assert len(sample) == 450 and len(np.unique(rows)) == 450
    assert np.array_equal(sample.readout[:], open_embeddings(single / "embeddings").readout[:][rows])
    assert len(np.unique(rows // 100)) == 5 and not np.array_equal(np.unique(rows // 100), np.arange(5))
    metrics = json.loads((single / "metrics.json").read_text())
    assert metrics["n_train"] == 450 and metrics["scores"]["n"] == 1200
    table = pd.read_parquet(single / "latent.parquet")
    assert len(table) == 1200 and table["id"].tolist() == synth_store.catalog["id"].tolist()
    assert np.isfinite(table[["x", "y", "anomaly", "recon_error"]].to_numpy()).all()


def test_pipeline_refuses_bad_dask_and_training_settings(sample_store, tmp_path):
    from latentsky.exceptions import LatentskyError

    with pytest.raises(LatentskyError, match="at most one of client, scheduler, workers"):
        run_pipeline(sample_store.path, tmp_path / "x", scheduler="tcp://127.0.0.1:1", workers=2)
    with pytest.raises(LatentskyError, match="workers=0"):
        run_pipeline(sample_store.path, tmp_path / "x", workers=0)
    with pytest.raises(LatentskyError, match="cluster='yarn'"):
        run_pipeline(sample_store.path, tmp_path / "x", cluster="yarn")
    with pytest.raises(LatentskyError, match="train_rows=1"):
        run_pipeline(sample_store.path, tmp_path / "x", train_rows=1)
