"""`latentsky pipeline` end to end on the bundled sample of real spectra."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from latentsky.cli import main
from latentsky.exceptions import AutoencoderError


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, sample):
    out = tmp_path_factory.mktemp("pipeline") / "run"
    rc = main(["pipeline", str(sample), "--out", str(out), "--max-iter", "150", "--restarts", "1", "--no-progress"])
    return rc, out


def test_pipeline_writes_every_output(pipeline_run, capsys):
    rc, out = pipeline_run
    assert rc == 0
    table = pd.read_parquet(out / "latent.parquet")
    assert len(table) == 125
    assert {"id", "path", "object", "ra", "dec", "mjd", "x", "y", "anomaly"} <= set(table.columns)
    assert "z2" not in table
    assert np.isfinite(table[["x", "y", "anomaly"]].to_numpy()).all()
    assert table["x"].std() > 0 and table["y"].std() > 0
    assert (table.loc[table["object"] == "HD128621"].shape[0]) == 24
    metrics = json.loads((out / "metrics.json").read_text())
    # the map is the estimator's default kind, named in words, with what moved its encoder
    from latentsky.autoencoder.maps import DEFAULT_KIND, END_TO_END, describe

    assert metrics["map"] == DEFAULT_KIND and metrics["map_name"] == describe(DEFAULT_KIND)
    assert metrics["optimizer"] == "lbfgs" and len(metrics["restart_losses"]) == 1
    # the share of the encoder's gradient each loss term carried (none: a fixed map's encoder is not trained)
    shares = metrics["gradient_shares"]
    assert sum(shares.values()) == pytest.approx(1.0) if DEFAULT_KIND in END_TO_END else shares == {}
    scores = metrics["scores"]
    for key in (
        "purity_object_k1",
        "purity_object_k5",
        "trust_readouts",
        "continuity_readouts",
        "trust_data",
        "resemblance",
        "knn_r2_redshift",
        "recon_error",
        "recon_excess",
        "stage1_error",
    ):
        assert np.isfinite(scores[key]), key
    # the map is better in data space than the PCA of the readouts
    assert scores["recon_excess"] < metrics["pca_readouts"]["recon_excess"]
    # repeated observations are neighbours far more often than chance (~1/10 of the repeats)
    assert scores["purity_object_k1"] > 0.3
    # a spectrum's map neighbour resembles it (relative residual, 0 = same shape, 1 = nothing in common)
    assert scores["resemblance"] < 0.5
    assert metrics["most_anomalous"][0]["anomaly"] == pytest.approx(table["anomaly"].max())
    png = (out / "map.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    # the model file reproduces the table's coordinates
    from latentsky.autoencoder import LatentAutoencoder
    from latentsky.embed.layout import open_embeddings

    est = LatentAutoencoder.load(out / "model.keras")
    z = est.transform(open_embeddings(out / "embeddings").readout[:])
    np.testing.assert_array_equal(z[:, 0].astype("f8"), table["x"].to_numpy())


def test_pipeline_resumes_skipping_up_to_date_stages(pipeline_run, capsys):
    rc, out = pipeline_run
    before = [(out / f).stat().st_mtime_ns for f in ("model.keras", "latent.parquet")]
    scores = json.loads((out / "metrics.json").read_text())["scores"]
    capsys.readouterr()
    assert (
        main(
            ["pipeline", str(out / "store"), "--out", str(out), "--max-iter", "150", "--restarts", "1", "--no-progress"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "skipped: ingest, embed, train, encode" in printed
    assert [(out / f).stat().st_mtime_ns for f in ("model.keras", "latent.parquet")] == before
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["skipped"] == ["ingest", "embed", "train", "encode"]
    assert metrics["scores"] == scores


def test_pipeline_more_latent_dimensions_and_errors(tmp_path, pipeline_run):
    from latentsky.pipeline import run_pipeline

    _, out = pipeline_run
    events = []
    # the first run's embeddings are of the same store, settings and seed: linked, not computed again
    metrics = run_pipeline(
        out / "store",
        tmp_path / "three",
        n_latent=3,
        train={"map": "pca", "max_iter": 5},
        embeddings=out / "embeddings",
        baselines=False,
        progress=events.append,
    )
    table = pd.read_parquet(tmp_path / "three" / "latent.parquet")
    assert {"x", "y", "z2"} <= set(table.columns) and "z3" not in table
    assert metrics["n_latent"] == 3 and "pca_readouts" not in metrics and metrics["map"] == "pca"
    assert metrics["map_name"].startswith("PCA of the readouts")
    assert {e.task for e in events} == {"embed", "train", "encode"}
    assert any("reused" in e.message for e in events if e.task == "embed")
    readout = "embedding.zarr/readout/zarr.json"
    assert (tmp_path / "three" / "embeddings" / readout).stat().st_ino == (out / "embeddings" / readout).stat().st_ino
    with pytest.raises(AutoencoderError, match="parameter source"):
        run_pipeline(tmp_path / "nowhere", tmp_path / "x")
    assert main(["pipeline", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    with pytest.raises(AutoencoderError, match="parameter embeddings: .*nowhere is not an EMBEDDINGS"):
        run_pipeline(out / "store", tmp_path / "x", embeddings=tmp_path / "nowhere")
    assert (
        main(["pipeline", str(out / "store"), "--out", str(tmp_path / "x"), "--embeddings", str(tmp_path / "nowhere")])
        == 2
    )


def test_training_budget_cuts_epochs_of_big_training_sets(tmp_path, pipeline_run):
    from latentsky.pipeline import run_pipeline
    from latentsky.pipeline_defaults import MIN_EPOCHS, train_defaults, within_budget

    defaults = train_defaults()
    # the defaults on the pipeline's 10,000-spectrum sample (9,000 fitted): 56 epochs, patiences alike
    cut = within_budget(dict(defaults), 9000)
    assert cut["epochs"] == 56 and cut["patience"] == 6 and cut["lr_patience"] == 2
    assert cut["neighbour_weight"] == defaults["neighbour_weight"]
    # the bundled sample is within it: untouched; no budget: untouched; never below MIN_EPOCHS
    assert within_budget(dict(defaults), 125) == defaults
    assert within_budget(dict(defaults), 9000, None) == defaults
    assert within_budget(dict(defaults), 10**6)["epochs"] == MIN_EPOCHS
    # in a run with Adam: a budget of 125 spectra x 30 epochs stops a 200-epoch request at 30
    _, out = pipeline_run
    train = {"map": "coupled", "optimizer": "adam", "restarts": 1, "epochs": 200, "patience": 200}
    metrics = run_pipeline(
        out / "store", tmp_path / "budget", train=train, train_visits=125 * MIN_EPOCHS, baselines=False
    )
    assert metrics["n_epochs"] == MIN_EPOCHS and metrics["optimizer"] == "adam"
    with pytest.raises(AutoencoderError, match="parameter train_visits"):
        run_pipeline(out / "store", tmp_path / "x", train_visits=0)
    assert main(["pipeline", str(out / "store"), "--out", str(tmp_path / "x"), "--train-visits", "-5"]) == 2


def test_the_app_names_the_kind_of_map(pipeline_run):
    """The map's kind, in words, in the app's legend (read from metrics.json)."""
    from latentsky.autoencoder.maps import DEFAULT_KIND, describe
    from latentsky.ui.data import LatentData
    from latentsky.ui.explore import Explore

    _, out = pipeline_run
    data = LatentData.from_pipeline(out)
    assert data.map_name == describe(DEFAULT_KIND)
    explore = Explore(data=data)
    explore.__panel__()
    assert f"<b>map:</b> {describe(DEFAULT_KIND)}" in explore.legend_html()
