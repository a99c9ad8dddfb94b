"""The kinds of map, the full-batch optimiser and the cross-prediction graph, on the bundled real spectra."""

from __future__ import annotations

import numpy as np
import pytest

from latentsky import evaluate as ev


def _objective(embeddings, rows, *, neighbour_weight=0.0, hidden=(3,)):
    """A tiny model's full-batch objective over a few real spectra (float64)."""
    from latentsky.autoencoder.coupled import coupled_inputs, gram_block_index, split_gram
    from latentsky.autoencoder.lbfgs import FullBatchObjective
    from latentsky.autoencoder.model import ReadoutAutoencoder

    w = np.asarray(embeddings.readout[rows], dtype="f8")
    inputs = coupled_inputs(
        w, embeddings.gram[rows], embeddings.xty[rows], embeddings.yty[rows], embeddings.n_steps[rows], dtype="f8"
    )
    inputs["gram"] = split_gram(inputs["gram"], gram_block_index(w.shape[1]))
    model = ReadoutAutoencoder(
        w.shape[1], hidden=hidden, neighbour_weight=neighbour_weight, weight_decay=1e-3, negative_rate=2
    )
    metric = np.mean(embeddings.statistics(rows).gram / embeddings.n_steps[rows][:, None, None], axis=0)
    model.set_metric(w.mean(0), w.std(0), metric, floor=1e-6)
    n = len(w)
    pairs = {
        "head": np.arange(n, dtype="i4"),
        "tail": np.roll(np.arange(n), 1).astype("i4"),
        "weight": np.linspace(0.5, 1.0, n),
        "negative": np.stack([np.roll(np.arange(n), 2), np.roll(np.arange(n), 3)], 1).astype("i4"),
    }
    return FullBatchObjective(model, inputs, pairs=pairs)


@pytest.mark.parametrize("neighbour_weight", [0.0, 0.5])
def test_the_full_batch_gradient_matches_finite_differences(embeddings, neighbour_weight):
    obj = _objective(embeddings, slice(0, 12), neighbour_weight=neighbour_weight)
    x = obj.initial() + np.random.default_rng(0).normal(0, 0.05, obj.initial().shape)
    loss, grad = obj(x)
    assert set(obj.last) >= {"loss", "data_error", "grad_data", "grad_penalty"}
    assert ("grad_neighbour" in obj.last) == bool(neighbour_weight)
    for k in np.random.default_rng(1).choice(len(x), 8, replace=False):
        # the loss, (w'Gw - 2w'h + y'y) / T, cancels large terms: its rounding (~1e-12 here) over 2h limits
        # the step from below, the curvature (truncation ~h^2) from above; a wrong gradient is off by far more
        h = 1e-4 * max(1.0, abs(x[k]))
        e = np.zeros_like(x)
        e[k] = h
        numeric = (obj(x + e)[0] - obj(x - e)[0]) / (2 * h)
        assert grad[k] == pytest.approx(numeric, rel=2e-3, abs=1e-9)


def test_lbfgs_finds_the_minimum_of_a_badly_conditioned_quadratic():
    from latentsky.autoencoder.lbfgs import minimise

    d = np.logspace(0, 4, 500)

    class Quadratic:
        def initial(self):
            return np.ones(500)

        def __call__(self, x):
            return 0.5 * float(np.sum(d * x * x)), d * x

        def assign(self, x):
            self.x = x

    q = Quadratic()
    out = minimise(q, max_iter=3000, tol=1e-20)
    assert out["loss"] < 1e-15 * 0.5 * d.sum() and np.abs(q.x).max() < 1e-6  # from 2.7e5 to nothing
    assert out["n_iter"] < 3000 and "converged" in out["message"]
    assert len(out["history"]["loss"]) == out["n_iter"]


def test_the_compact_curvature_model_equals_the_two_loop_recursion():
    from latentsky.autoencoder.lbfgs import _Curvature

    rng = np.random.default_rng(0)
    model, pairs = _Curvature(30, 4), []
    for _ in range(6):  # more pairs than it keeps: the oldest are dropped
        s = rng.normal(size=30)
        y = s * rng.uniform(0.5, 2.0, 30)
        model.add(s, y)
        pairs.append((s, y))
    g = rng.normal(size=30)
    q, alphas = g.copy(), []
    for s, y in reversed(pairs[-4:]):
        a = (s @ q) / (s @ y)
        q -= a * y
        alphas.append(a)
    s, y = pairs[-1]
    q *= (s @ y) / (y @ y)
    for (s, y), a in zip(pairs[-4:], reversed(alphas)):
        q += (a - (y @ q) / (s @ y)) * s
    np.testing.assert_allclose(model.direction(g), -q, rtol=1e-10)


def test_cross_prediction_neighbours_by_brute_force(embeddings, stats):
    from latentsky.autoencoder.graphs import cross_prediction_knn

    rows = np.arange(0, 125, 5)
    w = np.asarray(embeddings.readout[:], dtype="f8")[rows]
    sub = stats.take(rows)
    own = sub.sse(w)
    ratio = np.array([[sub.take([i]).sse(w[[j]])[0] / own[i] for j in range(len(rows))] for i in range(len(rows))])
    dist = np.clip((ratio + ratio.T) / 2 - 1, 0, None)
    np.fill_diagonal(dist, np.inf)
    idx, d = cross_prediction_knn(w, embeddings.gram[:][rows], sub.xty, sub.yty, 4)
    assert idx.shape == (len(rows), 4) and (idx[:, 0] == np.arange(len(rows))).all() and (d[:, 0] == 0).all()
    np.testing.assert_array_equal(idx[:, 1:], np.argsort(dist, axis=1, kind="stable")[:, :3])
    np.testing.assert_allclose(d[:, 1:], np.sort(dist, axis=1)[:, :3], rtol=1e-6)


def test_restarts_keep_the_lowest_training_loss(sample_embeddings, small):
    from latentsky.autoencoder import LatentAutoencoder

    events = []
    est = LatentAutoencoder(
        map="coupled", random_state=0, progress=events.append, **{**small, "restarts": 2, "max_iter": 15}
    ).fit(sample_embeddings)
    assert len(est.restart_losses_) == 2 and len(set(est.restart_losses_)) == 2
    assert est.fit_summary_["loss"] == min(est.restart_losses_)
    assert events[-1].finished and events[-1].unit == "iterations" and events[-1].done == est.n_epochs_ <= 30


@pytest.fixture(scope="module")
def pca_map(sample_embeddings, small):
    from latentsky.autoencoder import LatentAutoencoder

    return LatentAutoencoder(map="pca", random_state=0, **{**small, "max_iter": 60}).fit(sample_embeddings)


def test_the_pca_map_is_the_pca_of_the_standardised_readouts_with_a_coupled_decoder(pca_map, readouts, stats):
    from latentsky.autoencoder import ReadoutPCA

    z = pca_map.transform(readouts)
    want = ReadoutPCA().fit_transform(readouts)
    for k in range(2):  # up to the sign of each component
        assert abs(np.corrcoef(z[:, k], want[:, k])[0, 1]) > 0.99999
    assert pca_map.gradient_shares_ == {}  # the encoder is not trained
    # its decoder is fitted to the data-space error: far better there than PCA's own linear inverse
    mine = ev.reconstruction_error(stats, pca_map.inverse_transform(z)).mean()
    linear = ev.reconstruction_error(stats, ReadoutPCA().fit(readouts).inverse_transform(want)).mean()
    assert mine < linear


def test_the_umap_map_follows_umap_learns_layout(sample_embeddings, readouts, small, monkeypatch):
    from latentsky.autoencoder import LatentAutoencoder, fitting
    from latentsky.autoencoder.graphs import fuzzy_graph, umap_ab, umap_layout

    monkeypatch.setattr(fitting, "LAYOUT_ITERATIONS", 300)  # a shorter regression than the default's 2,000
    est = LatentAutoencoder(map="umap", random_state=0, **{**small, "max_iter": 5}).fit(sample_embeddings)
    # the encoder was regressed onto umap-learn's layout of the standardised readouts' graph (same seed), the
    # readouts standardised by the fit's own moments: umap-learn's float32 SGD turns differences in the last
    # digits of its input into a visibly different layout
    from latentsky.autoencoder.sources import as_source, moments

    mean, std, _ = moments(as_source(sample_embeddings, None, None), np.ones(len(readouts), bool))
    x = (readouts - mean) / np.where(std > 0, std, 1.0)
    layout = umap_layout(x, fuzzy_graph(len(x), est.n_neighbors, 0, points=x), 2, umap_ab(est.min_dist), 0)
    z = est.transform(readouts)
    assert est.fit_summary_["layout_mse"] == pytest.approx(np.mean(np.sum((z - layout) ** 2, axis=1)), rel=0.01)
    assert est.fit_summary_["layout_mse"] < 0.02 * np.sum(layout.var(0))
    assert est.gradient_shares_ == {}


def test_the_hybrid_map_pulls_cross_prediction_neighbours_together(
    sample_embeddings, embeddings, readouts, stats, coupled_ae, small
):
    from latentsky.autoencoder import LatentAutoencoder
    from latentsky.autoencoder.graphs import cross_prediction_knn

    hybrid = LatentAutoencoder(map="hybrid", neighbour_weight=0.3, random_state=0, **small).fit(sample_embeddings)
    shares = hybrid.gradient_shares_
    assert set(shares) == {"data", "neighbour", "penalty"} and shares["neighbour"] > 0.1
    assert "layout_note" not in hybrid.fit_summary_
    idx, _ = cross_prediction_knn(readouts, embeddings.gram[:], stats.xty, stats.yty, 6)

    def edge_over_random(z):
        z = (z - z.mean(0)) / z.std(0)
        edges = np.linalg.norm(z[idx[:, 1:]] - z[:, None, :], axis=2).mean()
        return edges / np.linalg.norm(z[:, None, :] - z[None, :, :], axis=2).mean()

    assert edge_over_random(hybrid.transform(readouts)) < 0.8 * edge_over_random(coupled_ae.transform(readouts))


def test_a_bare_estimator_is_the_pipelines_map():
    from latentsky.autoencoder import LatentAutoencoder
    from latentsky.autoencoder.maps import COUPLED_KINDS, DEFAULT_KIND, END_TO_END, KINDS, NAMES, describe
    from latentsky.pipeline_defaults import TRAIN_DEFAULTS, train_defaults

    est = LatentAutoencoder()
    assert est.map == DEFAULT_KIND and set(NAMES) == set(KINDS)
    # the default is a map whose encoder the model-coupled loss trains, never a baseline that scores better
    assert DEFAULT_KIND in COUPLED_KINDS and set(COUPLED_KINDS) <= set(END_TO_END)
    assert "(ours)" in describe(DEFAULT_KIND) and "(baseline)" in describe("umap")
    params = est.get_params()
    assert (
        train_defaults()
        == TRAIN_DEFAULTS
        == {k: v for k, v in params.items() if k not in ("checkpoint_dir", "cache_dir", "progress", "random_state")}
    )
    assert describe("hybrid") == "model-coupled autoencoder with a neighbour term (ours)"


def test_auto_chooses_adam_when_the_full_batch_does_not_fit(readouts, stats, small):
    from latentsky.autoencoder import LatentAutoencoder

    # 125 spectra x ~52 kB of float64 inputs do not fit in 1 MB
    est = LatentAutoencoder(map="coupled", memory_limit_mb=1, **{**small, "epochs": 2, "patience": 2})
    est.fit(readouts, stats=stats)
    assert est.optimizer_ == "adam" and est.n_epochs_ == 2


def test_beyond_exact_max_the_graph_comes_from_candidates(embeddings, readouts, stats, monkeypatch):
    """Above EXACT_MAX spectra only each spectrum's 8 k nearest in the whitened readouts are tried: on the
    sample (exact below the limit) they hold nearly all of the exact cross-prediction neighbours."""
    from latentsky.autoencoder import graphs
    from latentsky.autoencoder.coupled import metric_root

    gram = embeddings.gram[:]
    exact_idx, exact_d = graphs.cross_prediction_knn(readouts, gram, stats.xty, stats.yty, 6)
    metric = np.mean(stats.gram / stats.n_steps[:, None, None], axis=0)
    a, _ = metric_root(metric, 1e-2 * np.mean(1 / stats.n_steps))
    monkeypatch.setattr(graphs, "EXACT_MAX", 100)
    idx, d = graphs.cross_prediction_knn(
        readouts, gram, stats.xty, stats.yty, 6, whitened=(readouts - readouts.mean(0)) @ a.T
    )
    assert idx.shape == exact_idx.shape and (idx[:, 0] == np.arange(len(readouts))).all()
    found = np.mean([len(set(x[1:]) & set(y[1:])) / 5 for x, y in zip(idx, exact_idx)])
    assert found > 0.8
    # where a candidate is found, its distance is the exact one
    for i in range(len(readouts)):
        for j, dist in zip(idx[i, 1:], d[i, 1:]):
            if j in exact_idx[i]:
                # the same sums in another order: the error's cancelling terms leave ~1e-9 of rounding
                assert dist == pytest.approx(exact_d[i][list(exact_idx[i]).index(j)], rel=1e-7, abs=1e-12)


def test_the_coupled_term_weighs_the_same_in_any_flux_units(readouts, stats, small):
    """The same spectra with their flux 100 times smaller (HARPS's data-space errors are ~1e-3 of SDSS's):
    divided by the stage-1 floor, the coupled term keeps its share of the hybrid map's encoder gradient
    and lays out the same map; at a fixed scale (1.0) the neighbour term takes the map over."""
    from dataclasses import replace

    from latentsky.autoencoder import LatentAutoencoder

    s = 0.01  # same reservoir states, targets (and so readouts) times s: data-space errors times s^2
    scaled = replace(
        stats,
        xty=stats.xty * s,
        yty=stats.yty * s**2,
        persistence=None if stats.persistence is None else stats.persistence * s**2,
    )
    settings = dict(map="hybrid", neighbour_weight=3.0, random_state=0, **{**small, "max_iter": 60})
    plain = LatentAutoencoder(**settings).fit(readouts, stats=stats)
    small_flux = LatentAutoencoder(**settings).fit(readouts * s, stats=scaled)
    assert small_flux.fit_summary_["data_scale"] == pytest.approx(s**2 * plain.fit_summary_["data_scale"], rel=1e-4)
    assert plain.gradient_shares_["data"] > 0.2
    assert small_flux.gradient_shares_["data"] == pytest.approx(plain.gradient_shares_["data"], abs=0.02)
    z, z_small = plain.transform(readouts), small_flux.transform(readouts * s)
    assert np.abs(z - z_small).max() < 0.05 * np.abs(z).max()
    fixed = LatentAutoencoder(**settings, data_scale=1.0).fit(readouts * s, stats=scaled)
    assert fixed.gradient_shares_["data"] < 0.05 * plain.gradient_shares_["data"]


def test_a_map_the_neighbour_term_lays_out_says_so(readouts, stats, small, caplog):
    """When the model-coupled loss carries under a tenth of the encoder's gradient, the fit says which term laid
    out the map (a warning, and ``fit_summary_["layout_note"]``, which metrics.json carries)."""
    import logging

    from latentsky.autoencoder import LatentAutoencoder

    with caplog.at_level(logging.WARNING, logger="latentsky.autoencoder"):
        est = LatentAutoencoder(map="hybrid", neighbour_weight=1e4, random_state=0, **{**small, "max_iter": 20})
        est.fit(readouts, stats=stats)
    assert est.gradient_shares_["data"] < 0.1
    note = est.fit_summary_["layout_note"]
    assert "the neighbour term laid out this map" in note and note in caplog.text
