"""The synthetic data generator: tables derived from real spectra, reproducible, with real structure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from latentsky.synth import C_KMS, Templates, spectrum_for_row, synth_spectrum, synth_table, templates_from_store


@pytest.fixture(scope="module")
def templates(sample_store):
    return templates_from_store(sample_store)


def test_table_has_the_pipeline_columns_and_is_reproducible(templates):
    a = synth_table(templates, 5000, seed=3)
    b = synth_table(templates, 5000, seed=3)
    c = synth_table(templates, 5000, seed=4)
    for col in ("id", "path", "object", "ra", "dec", "mjd", "x", "y", "anomaly", "cluster", "snr", "rv", "tilt"):
        assert col in a.columns
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["x"], c["x"])
    assert a["id"].is_unique and a["id"].iloc[0] == "synth-00000000"
    # every row inherits its template's object and class
    cat = templates.catalog
    assert (a["object"].astype(str).to_numpy() == cat["object"].astype(str).to_numpy()[a["template"]]).all()
    assert ((a["dec"] >= -90) & (a["dec"] <= 90)).all() and ((a["ra"] >= 0) & (a["ra"] < 360)).all()


def test_map_structure_follows_the_templates_and_the_doppler_shift(templates):
    t = synth_table(templates, 20000, seed=0, anomaly_fraction=0.0)
    # rows of one template sit together: the spread inside a template is far below the spread of the map
    within = t.groupby("template", observed=True)[["x", "y"]].std().mean().mean()
    overall = t[["x", "y"]].std().mean()
    assert within < 0.5 * overall
    # inside a template the position moves linearly with the radial velocity
    one = t[t["template"] == t["template"].mode()[0]]
    r = max(abs(np.corrcoef(one["rv"], one["x"])[0, 1]), abs(np.corrcoef(one["rv"], one["y"])[0, 1]))
    assert r > 0.5


def test_anomalies_are_injected_and_scored(templates):
    t = synth_table(templates, 20000, seed=0, anomaly_fraction=0.01)
    flagged = t["anomaly"] > 5
    assert 100 <= flagged.sum() <= 300  # ~1 % of 20,000
    assert t.loc[flagged, "rv"].abs().min() > 5 * 30  # extreme shifts only


def test_spectrum_is_the_template_doppler_shifted(templates):
    k = int(np.argmax(templates.coverage.mean(axis=1)))
    wave = templates.wave
    pixel_kms = np.log(wave[1] / wave[0]) * C_KMS  # the grid is uniform in log wavelength
    rv = 10 * pixel_kms
    _, model, weight = synth_spectrum(templates, k, rv, 0.0, 50.0, seed=None)
    # a feature at w in the template appears at w * (1 + rv / c): 10 pixels to the red
    tmpl = templates.flux[k]
    cost = [np.nanmean((model[20 + lag : -40 + lag] - tmpl[20:-40]) ** 2) for lag in range(0, 21)]
    assert int(np.argmin(cost)) == 10
    assert cost[10] < 1e-6
    assert set(np.unique(weight)) <= {0.0, 50.0**2}


def test_noise_matches_the_snr_and_the_tilt_changes_the_continuum(templates):
    k = 0
    flux, model, _ = synth_spectrum(templates, k, 0.0, 0.0, 20.0, seed=1)
    good = np.isfinite(model)
    assert np.std(flux[good] - model[good]) == pytest.approx(1 / 20.0, rel=0.1)
    _, tilted, _ = synth_spectrum(templates, k, 0.0, 0.4, 20.0, seed=None)
    wave = templates.wave
    span = (wave - wave[0]) / (wave[-1] - wave[0]) - 0.5
    np.testing.assert_allclose(tilted[good] / model[good], 1 + 0.4 * span[good], rtol=1e-9)


def test_write_synth_round_trip(synth_dir):
    from latentsky.store import SpectrumStore

    table = pd.read_parquet(synth_dir / "latent.parquet")
    assert len(table) == 20_000
    templates = Templates.load(synth_dir)
    store = SpectrumStore(synth_dir / "store")
    assert len(store) == 30
    assert store.catalog["id"].tolist() == table["id"].iloc[:30].tolist()
    flux, _, weight = spectrum_for_row(templates, table.iloc[7])
    np.testing.assert_allclose(store.flux[7], flux.astype("f4"))
    np.testing.assert_allclose(store.weight[7], weight.astype("f4"))


def test_cli_synth(tmp_path, sample_store, monkeypatch):
    from latentsky.cli import main

    assert (
        main(["synth", "--n", "1000", "--out", str(tmp_path / "s"), "--store", str(sample_store.path), "--no-progress"])
        == 0
    )
    assert len(pd.read_parquet(tmp_path / "s" / "latent.parquet")) == 1000
    assert main(["synth", "--n", "10.5", "--out", str(tmp_path / "t"), "--no-progress"]) == 2
    assert (
        main(
            [
                "synth",
                "--n",
                "10",
                "--spectra",
                "20",
                "--out",
                str(tmp_path / "t"),
                "--store",
                str(sample_store.path),
                "--no-progress",
            ]
        )
        == 2
    )


def test_bad_arguments_are_named(templates):
    with pytest.raises(ValueError, match="anomaly_fraction"):
        synth_table(templates, 10, anomaly_fraction=2)
    with pytest.raises(ValueError, match="n:"):
        synth_table(templates, -1)
