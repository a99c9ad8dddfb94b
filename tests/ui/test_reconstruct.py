"""Tap on the autoencoder's map: the reconstruction from the latent point drawn over the spectrum.

Runs on the bundled sample's real pipeline output (embeddings, trained model, latent.parquet).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("panel")
pytest.importorskip("keras")

from latentsky.embed.series import bin_series  # noqa: E402
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
        # the prediction follows the spectrum (the mean flux of each stage-1 step, bin_pixels pixels)
        # where stage 1 fitted it, and is absent elsewhere
        shown = np.isfinite(model)
        good = spec["weight"] > 0
        assert shown.sum() > 200 and not (shown & ~good).any()  # HARPS: 1000 A less a 320-pixel washout
        d = recon.bin_pixels
        binned = bin_series(spec["flux"][None], spec["weight"][None], d)[0][0]
        pixels = np.flatnonzero(shown)
        steps, first = np.unique(pixels // d, return_index=True)  # one value per fitted step
        resid = model[pixels[first]] - binned[steps]
        np.testing.assert_allclose(
            np.mean(resid**2), t["recon_error"].iloc[i], rtol=5e-5
        )  # float32 stage 1 vs float64 decoding, last digits
        if t["instrument"].iloc[i] != "HARPS":
            # SDSS flux keeps its continuum; the sample's HARPS spectra (row 0) are continuum-normalised
            # and cut to 1000 Angstrom: ~30 steps of 16 pixels whose variance even stage 1's own readout
            # leaves half of
            assert np.mean(resid**2) < 0.2 * np.var(binned[steps])
    # the stage-1 readout itself predicts at least as well as the decoded one (the floor)
    from latentsky.embed.layout import open_embeddings

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
    np.testing.assert_allclose(float(curves[1].label.split("MSE ")[1].rstrip(")")), t["recon_error"].iloc[i], rtol=6e-3)
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


def test_prepared_decoded_readouts_draw_the_same_curve_without_tensorflow(sample_results, sample_store, tmp_path):
    """Prepared results carry every row's decoded readout: an app process opened on them draws the same
    reconstruction and never imports TensorFlow (600 MB of a Binder session's 2 GB)."""
    import json
    import shutil
    import subprocess
    import sys

    from latentsky.ui.reconstruct import DECODED_FILE, write_decoded

    folder = tmp_path / "prepared"
    shutil.copytree(sample_results, folder, ignore=shutil.ignore_patterns("checkpoints"))
    write_decoded(folder)
    assert (folder / DECODED_FILE).is_file()
    with_model = LatentData.from_pipeline(sample_results, store=sample_store)
    probe = (
        f"import json, sys; from latentsky.store import SpectrumStore; from latentsky.ui.data import LatentData; "
        f"d = LatentData.from_pipeline({str(folder)!r}, store=SpectrumStore({str(sample_store.path)!r})); "
        f"d.preload(); s = d.spectrum(40); "
        f"print(json.dumps({{'model': [None if v != v else v for v in s['model'].tolist()], "
        f"'label': s['model_label'], 'tf': 'tensorflow' in sys.modules or 'keras' in sys.modules}}))"
    )
    got = json.loads(
        subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300
        ).stdout.splitlines()[-1]
    )
    assert got["tf"] is False, "the app loaded TensorFlow although the readouts were prepared"
    expected = with_model.spectrum(40)
    # the decoder's float32 outputs, batched otherwise, round otherwise: 1.9e-6 apart seen with AVX2's oneDNN
    # kernels (another row's curve differs by 60% to 7x at its worst pixel, in the demo's results)
    np.testing.assert_allclose(np.array(got["model"], dtype=float), expected["model"], rtol=1e-5, equal_nan=True)
    assert got["label"] == expected["model_label"]
