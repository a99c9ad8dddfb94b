"""The neighbour term (parametric UMAP on the encoder), its graphs, and the encoder regression of the umap map."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from latentsky.exceptions import AutoencoderError


def test_neighbour_loss_is_umaps_cross_entropy_on_a_tiny_batch():
    """Two edges, one negative each: the value computed by hand from q = 1 / (1 + a d^(2b))."""
    import tensorflow as tf

    from latentsky.autoencoder.model import ReadoutAutoencoder

    model = ReadoutAutoencoder(
        3, n_latent=2, hidden=(4,), neighbour_weight=1.0, umap_a=1.5, umap_b=0.9, negative_rate=1
    )
    z = {"h0": [0.0, 0.0], "t0": [3.0, 4.0], "h1": [1.0, 1.0], "t1": [1.0, 2.0]}
    # replace the encoder by a lookup so the latent points are known: readout (i, j, 0) -> latent (i, j)
    model.encode = lambda w, training=False: w[:, :2]
    head = tf.constant([z["h0"] + [0.0], z["h1"] + [0.0]])
    tail = tf.constant([z["t0"] + [0.0], z["t1"] + [0.0]])

    def q(a, b):
        d2 = sum((x - y) ** 2 for x, y in zip(a, b))
        return 1.0 / (1.0 + 1.5 * d2**0.9)

    # positives: h0-t0, h1-t1; negatives: the tails rolled by one, h0-t1 and h1-t0
    want = np.mean(
        [
            -np.log(q(z["h0"], z["t0"])),
            -np.log(q(z["h1"], z["t1"])),
            -np.log(1 - q(z["h0"], z["t1"])),
            -np.log(1 - q(z["h1"], z["t0"])),
        ]
    )
    assert float(model.neighbour_loss(head, tail)) == pytest.approx(want, rel=1e-5)


def test_the_hybrid_map_with_adam_and_its_settings_survive_saving(sample_embeddings, readouts, adam, tmp_path):
    """Minibatch Adam draws edges of the cross-prediction graph per batch: the neighbour term is trained and
    recorded, and the saved model comes back with its settings."""
    from latentsky.autoencoder import LatentAutoencoder

    est = LatentAutoencoder(
        map="hybrid", neighbour_weight=0.3, edges_per_spectrum=4, random_state=0, **{**adam, "epochs": 4, "patience": 4}
    ).fit(sample_embeddings)
    assert est.optimizer_ == "adam" and "neighbour" in est.history_ and est.gradient_shares_["neighbour"] > 0
    path = est.save(tmp_path / "m.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a model saved with a partial optimizer warned on every load
        loaded = LatentAutoencoder.load(path)
    np.testing.assert_array_equal(loaded.transform(readouts), est.transform(readouts))
    assert loaded.map == "hybrid" and loaded.neighbour_weight == 0.3 and loaded.model_.neighbour_weight == 0.3


def test_neighbour_parameters_are_checked(readouts, stats):
    from latentsky.autoencoder import LatentAutoencoder

    for bad in (
        dict(neighbour_weight=-1),
        dict(n_neighbors=1),
        dict(min_dist=2.0),
        dict(edges_per_spectrum=0),
        dict(negative_rate=0),
        dict(data_scale=0.0),
        dict(data_scale="auto"),
    ):
        name = next(iter(bad))
        with pytest.raises(AutoencoderError, match=f"parameter {name}="):
            LatentAutoencoder(**bad).fit(readouts, stats=stats)


def test_a_model_of_an_older_version_is_refused_by_name(coupled_ae, tmp_path):
    from latentsky.autoencoder import LatentAutoencoder

    model = coupled_ae.model_
    saved = model.meta
    model.meta = {**saved, "params": {**saved["params"], "layout_init": "umap"}}  # a parameter of old versions
    try:
        path = tmp_path / "old.keras"
        model.save(path)
    finally:
        model.meta = saved
    with pytest.raises(AutoencoderError, match="old.keras: a model of another latentsky version .*layout_init"):
        LatentAutoencoder.load(path)


def test_regress_encoder_fits_the_encoder_alone_to_given_points(readouts):
    """A known 2-D target (the readouts' first two principal components): the encoder learns it, the decoder is
    untouched."""
    from latentsky.autoencoder.model import ReadoutAutoencoder

    std = (readouts - readouts.mean(0)) / readouts.std(0)
    z = std @ np.linalg.svd(std, full_matrices=False)[2][:2].T
    model = ReadoutAutoencoder(readouts.shape[1], hidden=(32,))
    model.set_standardisation(readouts.mean(0), readouts.std(0))
    decoder = [v.numpy().copy() for v in model.decoder.weights]
    start = float(np.mean(np.sum((model.encode(readouts.astype("f4")).numpy() - z) ** 2, axis=1)))
    mse = model.regress_encoder(readouts, z, steps=300)
    got = model.encode(readouts.astype("f4")).numpy()
    assert mse == pytest.approx(np.mean(np.sum((got - z) ** 2, axis=1)), rel=0.05, abs=1e-4)
    assert mse < 0.01 * start and mse < 0.01 * np.sum(z.var(0))
    for before, after in zip(decoder, model.decoder.weights):
        np.testing.assert_array_equal(before, after.numpy())
