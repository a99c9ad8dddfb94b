"""Tap on the autoencoder's map: the reconstruction from the latent point drawn over the spectrum.

Runs on the bundled sample's real pipeline output (embeddings, trained model, latent.parquet).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("panel")
pytest.importorskip("keras")

from latentsky.ui.data import LatentData  # noqa: E402
from latentsky.ui.explore import Explore  # noqa: E402


@pytest.fixture(scope="module")
def results_data(sample_results, sample_store):
    return LatentData.from_pipeline(sample_results, store=sample_store)


def test_reconstruction_error_is_the_one_the_model_is_scored_on(results_data, sample_results):
    """The drawn curve's error, from the rebuilt reservoir, equals latent.parquet's recon_error (which the
    pipeline computed from the stage-1 statistics without running any reservoir)."""
    t = results_data.table
    recon = results_data.source.reconstruct
    for i in (0, 40, 100):
        spec = results_data.spectrum(i)
        model, label = spec["model"], spec["model_label"]
        assert model.shape == spec["flux"].shape
        mse = float(label.split("MSE ")[1].rstrip(")"))  # three significant digits
        np.testing.assert_allclose(mse, t["recon_error"].iloc[i], rtol=6e-3)
        # the prediction follows the spectrum where stage 1 fitted it, and is absent elsewhere
        shown = np.isfinite(model)
        good = spec["weight"] > 0
        assert shown.sum() > 400 and not (shown & ~good).any()
        resid = model[shown] - spec["flux"][shown]
        # a model-coupled decoder's readout may be far from stage 1's along directions the spectrum hardly
        # constrains, where the float32 reservoir of stage 1 and this float64 run differ in the last digits
        np.testing.assert_allclose(np.mean(resid ** 2), t["recon_error"].iloc[i], rtol=5e-5)
        assert np.mean(resid ** 2) < 0.2 * np.var(spec["flux"][shown])
    # the stage-1 readout itself predicts at least as well as the decoded one (the floor)
    from latentsky.embed.runner import open_embeddings

    emb = open_embeddings(sample_results / "embeddings")
    spec = results_data.spectrum(100)
    row = int(emb.catalog.index[emb.catalog["id"].astype(str) == str(t["id"].iloc[100])][0])
    _, floor = recon.predict(emb.readout[row], spec["flux"], spec["weight"])
    assert floor <= t["recon_error"].iloc[100] + 1e-9


def test_reconstruction_follows_the_latent_point(results_data):
    """Moving the latent point changes the decoded readout and so the curve: it is not the stage-1 fit."""
    recon = results_data.source.reconstruct
    row = results_data.table.iloc[100].copy()
    spec = results_data.spectrum(100)
    here, _ = recon(row, spec["flux"], spec["weight"])
    t = results_data.table
    far = t.iloc[int(np.argmax((t["x"] - row["x"]) ** 2 + (t["y"] - row["y"]) ** 2))]
    row["x"], row["y"] = far["x"], far["y"]
    there, label = recon(row, spec["flux"], spec["weight"])
    ok = np.isfinite(here)
    assert np.abs(here[ok] - there[ok]).max() > 1e-3
    assert float(label.split("MSE ")[1].rstrip(")")) > t["recon_error"].iloc[100]


def test_tap_draws_the_reconstruction_with_its_error_in_the_legend(results_data):
    ex = Explore(results_data)
    t = results_data.table
    i = 100
    assert ex.tap(float(t["x"].iloc[i]), float(t["y"].iloc[i])) == i
    curves = ex._spectrum_pane.object.values()
    assert [c.label.split(" (")[0] for c in curves] == ["spectrum", "reconstruction from the latent point"]
    np.testing.assert_allclose(float(curves[1].label.split("MSE ")[1].rstrip(")")), t["recon_error"].iloc[i],
                               rtol=6e-3)
    import holoviews as hv

    fig = hv.render(ex._spectrum_pane.object, backend="bokeh")
    labels = [item.label["value"] for item in fig.legend[0].items]
    assert any(lbl.startswith("reconstruction from the latent point (MSE") for lbl in labels)


def test_results_without_a_model_show_the_spectrum_alone(sample_results, sample_store, tmp_path):
    import shutil

    shutil.copy(sample_results / "latent.parquet", tmp_path / "latent.parquet")
    data = LatentData.from_pipeline(tmp_path, store=sample_store)
    assert data.source.reconstruct is None
    spec = data.spectrum(3)
    assert spec["model"] is None and spec["flux"].shape == spec["weight"].shape
