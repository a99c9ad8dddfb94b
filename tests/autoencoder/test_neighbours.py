"""The map's neighbour term (parametric UMAP on the encoder) and the two-phase fit it comes with."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from latentsky import evaluate as ev
from latentsky.exceptions import AutoencoderError


def test_neighbour_loss_is_umaps_cross_entropy_on_a_tiny_batch():
    """Two edges, one negative each: the value computed by hand from q = 1 / (1 + a d^(2b))."""
    import tensorflow as tf

    from latentsky.autoencoder.model import ReadoutAutoencoder

    model = ReadoutAutoencoder(3, n_latent=2, hidden=(4,), neighbour_weight=1.0, umap_a=1.5, umap_b=0.9,
                               negative_rate=1)
    z = {"h0": [0.0, 0.0], "t0": [3.0, 4.0], "h1": [1.0, 1.0], "t1": [1.0, 2.0]}
    # replace the encoder by a lookup so the latent points are known: readout (i, j, 0) -> latent (i, j)
    model.encode = lambda w, training=False: w[:, :2]
    head = tf.constant([z["h0"] + [0.0], z["h1"] + [0.0]])
    tail = tf.constant([z["t0"] + [0.0], z["t1"] + [0.0]])

    def q(a, b):
        d2 = sum((x - y) ** 2 for x, y in zip(a, b))
        return 1.0 / (1.0 + 1.5 * d2 ** 0.9)

    # positives: h0-t0, h1-t1; negatives: the tails rolled by one, h0-t1 and h1-t0
    want = np.mean([-np.log(q(z["h0"], z["t0"])), -np.log(q(z["h1"], z["t1"])),
                    -np.log(1 - q(z["h0"], z["t1"])), -np.log(1 - q(z["h1"], z["t0"]))])
    assert float(model.neighbour_loss(head, tail)) == pytest.approx(want, rel=1e-5)


def test_set_output_metric_changes_coordinates_not_reconstructions(readouts, stats):
    from latentsky.autoencoder.model import ReadoutAutoencoder

    model = ReadoutAutoencoder(readouts.shape[1], hidden=(8,))
    model.set_standardisation(readouts.mean(0), readouts.std(0))
    before = model(readouts.astype("f4")).numpy()
    metric = np.mean(stats.gram / stats.n_steps[:, None, None], axis=0)
    model.set_output_metric(metric)
    after = model(readouts.astype("f4")).numpy()
    np.testing.assert_allclose(after, before, rtol=1e-3, atol=1e-4 * np.abs(before).max())
    assert not np.allclose(np.diag(model.out_map.numpy()), readouts.std(0))


@pytest.fixture(scope="module")
def layout_pair(sample_embeddings, small):
    """The same two-phase fit (map laid out with the neighbour term on the Euclidean loss), then the
    decoder fitted to the coupled or to the Euclidean loss."""
    from latentsky.autoencoder import LatentAutoencoder

    kw = dict(small, epochs=120, decoder_epochs=120, neighbour_weight=1.0, edges_per_spectrum=8,
              layout_loss="euclidean", random_state=0)
    events = []
    coupled = LatentAutoencoder(loss="coupled", progress=events.append, **kw).fit(sample_embeddings)
    euclid = LatentAutoencoder(loss="euclidean", **kw).fit(sample_embeddings)
    return coupled, euclid, events


def test_the_same_layout_decoded_with_the_coupled_loss_reconstructs_better(layout_pair, readouts, stats):
    coupled, euclid, _ = layout_pair
    # phase 1 is the same fit, and phase 2 leaves the encoder alone: the maps are identical
    np.testing.assert_array_equal(coupled.transform(readouts), euclid.transform(readouts))
    exc_c = ev.anomaly_scores(stats, coupled.reconstruct(readouts), readouts).mean()
    exc_e = ev.anomaly_scores(stats, euclid.reconstruct(readouts), readouts).mean()
    assert exc_c < 0.9 * exc_e
    assert coupled.model_.loss_kind == "coupled" and coupled.model_.encoder.trainable


def test_the_neighbour_term_keeps_readout_neighbours_together(layout_pair, readouts, sample_embeddings, small):
    from latentsky.autoencoder import LatentAutoencoder

    coupled, _, _ = layout_pair
    plain = LatentAutoencoder(loss="coupled", random_state=0, **dict(small, epochs=120)).fit(sample_embeddings)
    std = (readouts - readouts.mean(0)) / readouts.std(0)
    with_term = ev.trustworthiness(std, coupled.transform(readouts), 5)
    without = ev.trustworthiness(std, plain.transform(readouts), 5)
    assert with_term > without + 0.02
    assert "neighbour" in coupled.history_


def test_two_phases_report_progress_as_one_fit(layout_pair):
    coupled, _, events = layout_pair
    per_epoch = [e for e in events if e.logs]
    assert [e.done for e in per_epoch] == list(range(1, coupled.n_epochs_ + 1))
    assert sum(e.finished for e in events) == 1 and events[-1].finished
    assert events[-1].total == 240
    # the neighbour term is in the first phase's logs only
    assert "neighbour" in per_epoch[0].logs and "neighbour" not in per_epoch[-1].logs


def test_save_load_keeps_the_neighbour_settings(layout_pair, readouts, tmp_path):
    from latentsky.autoencoder import LatentAutoencoder

    coupled, _, _ = layout_pair
    path = coupled.save(tmp_path / "m.keras")
    with warnings.catch_warnings():
        # the decoder phase's optimizer covers half the weights: saved as it was, Keras warned on loading
        warnings.simplefilter("error")
        loaded = LatentAutoencoder.load(path)
    np.testing.assert_array_equal(loaded.transform(readouts), coupled.transform(readouts))
    assert loaded.neighbour_weight == 1.0 and loaded.layout_loss == "euclidean"
    assert loaded.model_.neighbour_weight == 1.0


def test_neighbour_parameters_are_checked(readouts, stats):
    from latentsky.autoencoder import LatentAutoencoder

    for bad in (dict(neighbour_weight=-1), dict(n_neighbors=1), dict(min_dist=2.0), dict(edges_per_spectrum=0),
                dict(layout_loss="l2"), dict(decoder_epochs=-1), dict(layout_init="pca"),
                dict(layout_learning_rate=0.0)):
        name = next(iter(bad))
        with pytest.raises(AutoencoderError, match=f"parameter {name}="):
            LatentAutoencoder(**bad).fit(readouts, stats=stats)


def test_regress_encoder_fits_the_encoder_alone_to_given_points(readouts):
    """A known 2-D target (the readouts' first two principal components): the encoder learns it, the decoder is untouched."""
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


def test_a_map_started_from_umaps_layout_keeps_it(sample_embeddings, readouts, small, tmp_path):
    """With layout_init="umap" and a tiny refining step, the map is umap-learn's layout of the same graph
    (pairwise distances agree); started from random weights it is not."""
    from scipy.spatial.distance import pdist

    from latentsky.autoencoder import LatentAutoencoder
    from latentsky.autoencoder.estimator import _as_source

    kw = dict(small, loss="euclidean", epochs=1, decoder_epochs=0, neighbour_weight=1.0, edges_per_spectrum=4,
              validation_fraction=0.0, layout_learning_rate=1e-9, random_state=0)
    events = []
    started = LatentAutoencoder(layout_init="umap", progress=events.append, **kw).fit(sample_embeddings)
    # the set-up shows before the first epoch: the graph, then the umap-learn start
    assert [e.message for e in events[:2]] == ["building the readouts' neighbour graph",
                                               "starting the map from umap-learn's layout"]
    assert all(e.done == 0 and e.total == 1 and not e.logs for e in events[:2])
    cold = LatentAutoencoder(layout_init="random", **kw).fit(sample_embeddings)
    rows = np.ones(len(readouts), dtype=bool)
    mean, std = started._moments(_as_source(readouts, None, None), rows)
    _, x, graph = started._neighbour_graph(_as_source(readouts, None, None), rows, mean, std, 0)
    layout = started._umap_layout(x, graph, started._umap_ab(), 0)
    agree = np.corrcoef(pdist(started.transform(readouts)), pdist(layout))[0, 1]
    assert agree > 0.95
    assert np.corrcoef(pdist(cold.transform(readouts)), pdist(layout))[0, 1] < agree - 0.2
    assert LatentAutoencoder.load(started.save(tmp_path / "started.keras")).layout_init == "umap"
