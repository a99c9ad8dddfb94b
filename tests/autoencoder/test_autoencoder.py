"""The model-coupled autoencoder on the bundled real spectra: loss, training, streaming, saving."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from latentsky import evaluate as ev
from latentsky.exceptions import AutoencoderError


def test_importing_the_package_and_estimator_does_not_load_tensorflow():
    code = (
        "import sys, latentsky, latentsky.autoencoder, latentsky.autoencoder.estimator, "
        "latentsky.autoencoder.baselines, latentsky.evaluate, latentsky.pipeline, latentsky.cli;"
        "latentsky.cli.build_parser();"
        "print(sorted(m for m in ('tensorflow', 'keras', 'umap') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_coupled_loss_equals_the_data_space_error_of_stage_1(embeddings, readouts, stats):
    """The float32 form d'Gd - 2d'r + floor matches sse(w)/n_steps computed in float64."""
    from latentsky.autoencoder.coupled import coupled_inputs
    from latentsky.autoencoder.model import ReadoutAutoencoder

    rng = np.random.default_rng(1)
    w = readouts + 0.05 * rng.standard_normal(readouts.shape) * readouts.std(0)
    data = coupled_inputs(readouts, embeddings.gram[:], embeddings.xty[:], embeddings.yty[:], embeddings.n_steps[:])
    model = ReadoutAutoencoder(readouts.shape[1])
    got = model.data_error(data, w.astype("f4")).numpy()
    want = ev.reconstruction_error(stats, w)
    np.testing.assert_allclose(got, want, rtol=2e-4)
    # the floor is the stage-1 readout's own error
    np.testing.assert_allclose(data["floor"], ev.reconstruction_error(stats, readouts), rtol=1e-5)
    # why the centred form: the textbook w'Gw - 2w'h + c in float32 loses the small difference
    g32 = stats.gram.astype("f4")
    naive = (
        np.einsum("ni,nij,nj->n", w.astype("f4"), g32, w.astype("f4"))
        - 2 * np.einsum("ni,ni->n", w.astype("f4"), stats.xty.astype("f4"))
        + stats.yty.astype("f4")
    )
    naive_err = np.max(np.abs(naive / stats.n_steps - want) / want)
    ours_err = np.max(np.abs(got - want) / want)
    assert ours_err < naive_err / 10


@pytest.mark.parametrize("m, leaf", [(101, 26), (7, 2), (5, 16)])
def test_gram_blocks_hold_every_entry_of_the_symmetric_matrix_once(m, leaf):
    from latentsky.autoencoder.coupled import gram_blocks

    seen = np.zeros((m, m), dtype=int)
    for r0, r1, c0, c1 in gram_blocks(m, leaf):
        assert r1 - r0 <= max(leaf, (m + 1) // 2) and (r0 == c0 or r0 >= c1)  # diagonal or below it
        if r0 == c0:
            assert r1 - r0 <= leaf
            seen[r0:r1, c0:c1] += np.triu(np.ones((r1 - r0, r1 - r0), dtype=int))
        else:
            seen[c0:c1, r0:r1] += 1  # stands for its transpose above the diagonal too
    np.testing.assert_array_equal(seen, np.triu(np.ones((m, m), dtype=int)))


def test_the_blocked_gram_gives_the_same_loss_as_the_packed_one(embeddings, readouts):
    from latentsky.autoencoder.coupled import coupled_inputs, gram_block_index, split_gram
    from latentsky.autoencoder.model import ReadoutAutoencoder

    data = coupled_inputs(readouts, embeddings.gram[:], embeddings.xty[:], embeddings.yty[:], embeddings.n_steps[:])
    w = (readouts * 1.01).astype("f4")
    model = ReadoutAutoencoder(readouts.shape[1])
    packed = model.data_error(data, w).numpy()
    blocked = model.data_error({**data, "gram": split_gram(data["gram"], gram_block_index(101))}, w).numpy()
    np.testing.assert_allclose(blocked, packed, rtol=1e-5)


@pytest.mark.parametrize("normalise, divisor", [("yty", "yty"), ("none", None)])
def test_other_normalisations_divide_by_their_divisor(embeddings, readouts, stats, normalise, divisor):
    from latentsky.autoencoder.coupled import coupled_inputs

    data = coupled_inputs(
        readouts, embeddings.gram[:], embeddings.xty[:], embeddings.yty[:], embeddings.n_steps[:], normalise
    )
    sse = ev.reconstruction_error(stats, readouts, per="sum")
    want = sse / (stats.yty if divisor else 1.0)
    np.testing.assert_allclose(data["floor"], want, rtol=1e-5)
    with pytest.raises(AutoencoderError, match="parameter normalise"):
        coupled_inputs(
            readouts, embeddings.gram[:], embeddings.xty[:], embeddings.yty[:], embeddings.n_steps[:], "pixels"
        )


def test_training_lowers_the_model_coupled_loss(coupled_ae, readouts, stats, small):
    hist = coupled_ae.history_
    assert coupled_ae.optimizer_ == "lbfgs" and hist["loss"][-1] < 0.9 * hist["loss"][0]
    # measured independently of TensorFlow: the trained map reconstructs far better than a barely trained one
    from latentsky.autoencoder import LatentAutoencoder

    untrained = LatentAutoencoder(map="coupled", random_state=0, **{**small, "max_iter": 1})
    untrained.fit(readouts, stats=stats)
    before = ev.anomaly_scores(stats, untrained.reconstruct(readouts), readouts).mean()
    after = ev.anomaly_scores(stats, coupled_ae.reconstruct(readouts), readouts).mean()
    assert after < 0.5 * before
    # and the training loss is the data-space error of the saved float32 model (plus the weight penalty)
    final = ev.reconstruction_error(stats, coupled_ae.reconstruct(readouts)).mean()
    assert final == pytest.approx(hist["data_error"][-1], rel=1e-3)
    # the encoder moved by the coupled loss alone: no other term but the tiny weight penalty
    assert set(coupled_ae.gradient_shares_) == {"data", "penalty"} and coupled_ae.gradient_shares_["data"] > 0.9


def test_coupled_beats_euclidean_in_data_space_at_the_same_size(coupled_ae, euclidean_ae, readouts, stats):
    """Two maps, each trained its own way (not one map with two decoders)."""
    assert coupled_ae.model_.count_params() == euclidean_ae.model_.count_params()
    assert not np.allclose(coupled_ae.transform(readouts), euclidean_ae.transform(readouts))
    coupled = ev.anomaly_scores(stats, coupled_ae.reconstruct(readouts), readouts).mean()
    euclid = ev.anomaly_scores(stats, euclidean_ae.reconstruct(readouts), readouts).mean()
    assert coupled < 0.9 * euclid
    assert (
        ev.reconstruction_error(stats, coupled_ae.reconstruct(readouts)).mean()
        < ev.reconstruction_error(stats, euclidean_ae.reconstruct(readouts)).mean()
    )
    # ...while the Euclidean one is better at what it optimises
    assert np.mean(((euclidean_ae.reconstruct(readouts) - readouts) / readouts.std(0)) ** 2) < np.mean(
        ((coupled_ae.reconstruct(readouts) - readouts) / readouts.std(0)) ** 2
    )


def test_save_load_round_trip_gives_identical_latent_points(coupled_ae, sample_embeddings, readouts, tmp_path):
    from latentsky.autoencoder import LatentAutoencoder

    path = coupled_ae.save(tmp_path / "model.keras")
    loaded = LatentAutoencoder.load(path)
    z = coupled_ae.transform(readouts)
    assert z.shape == (len(readouts), 2)
    np.testing.assert_array_equal(loaded.transform(readouts), z)
    np.testing.assert_array_equal(loaded.transform(sample_embeddings), coupled_ae.transform(sample_embeddings))
    # read from disk in the store's chunks, the batches differ in size from the array's one batch, and
    # the float32 matrix products may round differently: float32 rounding of the map's scale, not of each
    # value (seen: 12 of 250 values 2e-8 apart with AVX-512; with AVX2 oneDNN kernels 2 values 2.3e-6 apart,
    # on a map spanning +-7)
    scale = np.abs(z).max()
    np.testing.assert_allclose(loaded.transform(sample_embeddings), z, rtol=1e-5, atol=1e-6 * scale)
    np.testing.assert_array_equal(loaded.inverse_transform(z), coupled_ae.inverse_transform(z))
    assert loaded.get_params()["hidden"] == (32,) and loaded.map == "coupled"
    assert loaded.history_ == coupled_ae.history_ and loaded.gradient_shares_ == coupled_ae.gradient_shares_
    assert loaded.optimizer_ == "lbfgs" and loaded.restart_losses_ == coupled_ae.restart_losses_
    with pytest.raises(AutoencoderError, match="no such model file"):
        LatentAutoencoder.load(tmp_path / "missing.keras")
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(AutoencoderError, match="junk.keras"):
        LatentAutoencoder.load(tmp_path / "junk.keras")
    with pytest.raises(AutoencoderError, match=r"\.keras name"):
        coupled_ae.save(tmp_path / "model.h5")


def test_streaming_and_in_memory_training_are_reproducible_and_report_progress(sample_embeddings, tmp_path, adam):
    from latentsky.autoencoder import LatentAutoencoder, TrainingEvent

    events = []
    kw = dict(adam, map="coupled", epochs=15, patience=5, validation_fraction=0.2, chunk_rows=16, random_state=3)
    a = LatentAutoencoder(in_memory=False, progress=events.append, checkpoint_dir=tmp_path / "ckpt", **kw)
    a.fit(sample_embeddings)
    b = LatentAutoencoder(in_memory=False, **kw).fit(sample_embeddings)
    assert not a.in_memory_
    np.testing.assert_array_equal(a.transform(sample_embeddings), b.transform(sample_embeddings))
    assert a.n_train_ == 100 and a.n_val_ == 25
    assert "val_loss" in a.history_ and (tmp_path / "ckpt" / "best.weights.h5").exists()
    # progress: one event per epoch, losses attached, a last "finished" event
    assert all(isinstance(e, TrainingEvent) and e.task == "train" and e.unit == "epochs" for e in events)
    per_epoch = [e for e in events if e.logs]
    assert [e.done for e in per_epoch] == list(range(1, a.n_epochs_ + 1))
    assert per_epoch[0].logs["loss"] == a.history_["loss"][0] and "val_loss" in per_epoch[0].message
    assert events[-1].finished and events[-1].total == 15
    c = LatentAutoencoder(in_memory=True, **kw).fit(sample_embeddings)
    assert c.in_memory_ and c.n_epochs_ >= 1
    # Adam records what moves the encoder too
    assert set(a.gradient_shares_) == {"data", "penalty"}


def test_the_stream_yields_every_selected_row_once_per_epoch(sample_embeddings, embeddings):
    from latentsky.autoencoder.coupled import gram_blocks
    from latentsky.autoencoder.datasets import make_dataset
    from latentsky.autoencoder.sources import as_source

    source = as_source(sample_embeddings, None, 16)
    mask = np.zeros(len(embeddings), dtype=bool)
    mask[::3] = True
    ds = make_dataset(
        source, mask, batch_size=7, normalise="n_steps", shuffle=True, seed=0, statistics=True, in_memory=False
    )
    assert int(ds.cardinality()) == int(np.ceil(mask.sum() / 7))
    for _ in range(2):
        batches = list(ds.as_numpy_iterator())
        assert all(len(b["readout"]) == 7 for b in batches[:-1])
        got = np.concatenate([b["readout"] for b in batches])
        want = embeddings.readout[:][mask].astype("f4")
        assert len(got) == len(want)
        np.testing.assert_array_equal(np.sort(got, axis=0), np.sort(want, axis=0))
        # the Gram matrices come as the dense blocks of gram_blocks, which hold each entry of G once
        sizes = [b.shape[1] for b in batches[0]["gram"]]
        assert sum(sizes) == sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in gram_blocks(101))


def test_errors_name_the_parameter(readouts, stats):
    from latentsky.autoencoder import LatentAutoencoder

    with pytest.raises(AutoencoderError, match="map='coupled' needs the stage-1 statistics"):
        LatentAutoencoder(map="coupled").fit(readouts)
    with pytest.raises(AutoencoderError, match="parameter map='tsne'"):
        LatentAutoencoder(map="tsne").fit(readouts, stats=stats)
    with pytest.raises(AutoencoderError, match="parameter optimizer='sgd'"):
        LatentAutoencoder(optimizer="sgd").fit(readouts, stats=stats)
    with pytest.raises(AutoencoderError, match="parameter restarts=0"):
        LatentAutoencoder(restarts=0).fit(readouts, stats=stats)
    with pytest.raises(AutoencoderError, match="parameter validation_fraction"):
        LatentAutoencoder(validation_fraction=1.0).fit(readouts, stats=stats)
    with pytest.raises(AutoencoderError, match="parameter stats: 124 spectra"):
        LatentAutoencoder().fit(readouts, stats=stats.take(slice(1, None)))
    with pytest.raises(AutoencoderError, match="parameter X"):
        LatentAutoencoder().fit(readouts[0], stats=stats)
    with pytest.raises(AutoencoderError, match="parameter steps_per_execution=0"):
        LatentAutoencoder(steps_per_execution=0).fit(readouts, stats=stats)


def test_steps_per_execution_runs_every_batch_of_every_epoch(readouts, stats, adam):
    from latentsky.autoencoder import LatentAutoencoder

    # 125 spectra, 80 % for training, batches of 16: 7 steps per epoch, so 3 steps per call end
    # an epoch part-way through a call, and 16 per call is more than an epoch has
    kw = {**adam, "map": "coupled", "epochs": 3, "patience": 3, "batch_size": 16, "validation_fraction": 0.2}
    steps = {}
    for spe in (1, 3, 16):
        est = LatentAutoencoder(**kw, steps_per_execution=spe).fit(readouts, stats=stats)
        steps[spe] = est.fit_summary_["n_steps"]
        assert est.n_epochs_ == 3 and len(est.history_["val_loss"]) == 3
    assert steps == {1: 21, 3: 21, 16: 21}


def test_non_deterministic_training_runs(readouts, stats, adam):
    from latentsky.autoencoder import LatentAutoencoder

    est = LatentAutoencoder(**{**adam, "map": "coupled", "epochs": 2}, deterministic=False, jit_compile=True).fit(
        readouts, stats=stats
    )
    assert est.n_epochs_ == 2 and np.isfinite(est.transform(readouts)).all()


def test_the_float32_cache_streams_the_same_rows_and_is_reused(
    sample_embeddings, embeddings, readouts, stats, tmp_path, adam
):
    from latentsky.autoencoder.datasets import make_dataset
    from latentsky.autoencoder.estimator import LatentAutoencoder
    from latentsky.autoencoder.sources import CachedSource, as_source

    source = as_source(sample_embeddings, None, 16)
    cache = CachedSource.build(source, tmp_path / "cache", "n_steps")
    mask = np.ones(len(embeddings), dtype=bool)
    mask[5:40] = False
    kw = dict(batch_size=10, normalise="n_steps", shuffle=False, seed=0, statistics=True, in_memory=False)
    direct = list(make_dataset(source, mask, **kw).as_numpy_iterator())
    cached = list(make_dataset(cache, mask, **kw).as_numpy_iterator())
    assert len(direct) == len(cached) == 9
    for a, b in zip(direct, cached):
        for k in ("readout", "resid", "floor"):
            np.testing.assert_array_equal(a[k], b[k])
        for x, y in zip(a["gram"], b["gram"], strict=True):
            np.testing.assert_array_equal(x, y)
    stamp = (tmp_path / "cache" / "gram_0.f4").stat().st_mtime_ns
    fitted = LatentAutoencoder(
        **{**adam, "map": "coupled", "epochs": 3}, in_memory=False, cache_dir=tmp_path / "cache", chunk_rows=16
    ).fit(sample_embeddings)
    assert (tmp_path / "cache" / "gram_0.f4").stat().st_mtime_ns == stamp  # same inputs: not rewritten
    assert fitted.n_epochs_ == 3 and np.isfinite(fitted.transform(readouts)).all()
    # another normalisation is another cache
    LatentAutoencoder(
        **{**adam, "map": "coupled", "epochs": 1},
        normalise="yty",
        in_memory=False,
        cache_dir=tmp_path / "cache",
        chunk_rows=16,
    ).fit(sample_embeddings)
    assert (tmp_path / "cache" / "gram_0.f4").stat().st_mtime_ns != stamp
