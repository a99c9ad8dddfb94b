"""Neighbour graphs of spectra and the UMAP pieces the maps use.

* :func:`cross_prediction_knn`: each spectrum's nearest others in the
  method's own geometry, the symmetrised cross-prediction error: how much
  worse spectrum ``j``'s readout predicts spectrum ``i`` than ``i``'s own
  does, and the other way round (from the stage-1 statistics alone);
* :func:`fuzzy_graph`: umap-learn's fuzzy neighbour graph of such a kNN
  list, or of Euclidean points (the ``umap`` map's standardised readouts);
* :func:`umap_layout`: umap-learn's own layout of a graph;
* :func:`full_batch_pairs` and :func:`edge_dataset`: the graph's edges and
  negative pairs for the neighbour term, fixed (full batch) or drawn per
  epoch (minibatches).

The graphs are umap-learn's (``fuzzy_simplicial_set``, the same as
:class:`umap.UMAP` builds); only the cross-prediction distance is ours, because
no library knows the model-coupled geometry.
"""

from __future__ import annotations

import os

import numpy as np

from latentsky.exceptions import AutoencoderError

#: Up to this many training spectra the cross-prediction errors of all pairs are computed; beyond, those of
#: candidates (the nearest in the metric-whitened readout space) only.
EXACT_MAX = 2048
#: Candidates per neighbour beyond :data:`EXACT_MAX`: on the bundled sample 4 per neighbour held 77-79% of the
#: exact cross-prediction neighbours, 8 held 86%.
CANDIDATES_PER_NEIGHBOUR = 8


def umap_ab(min_dist: float) -> dict:
    """umap-learn's curve parameters ``a, b`` of the latent similarity ``1 / (1 + a d^(2b))`` for ``min_dist``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from umap.umap_ import find_ab_params

    a, b = find_ab_params(1.0, float(min_dist))
    return {"umap_a": float(a), "umap_b": float(b)}


def _packed_outer(w: np.ndarray) -> np.ndarray:
    """Rows ``w`` (n, M) -> their outer products packed like the Gram matrices, off-diagonal entries doubled,
    so that ``packed_gram . packed_outer(w) = w' G w``."""
    m = w.shape[1]
    i, j = np.triu_indices(m)
    return w[:, i] * w[:, j] * np.where(i == j, 1.0, 2.0)


def cross_prediction_errors(gram_packed, xty, yty, readouts) -> np.ndarray:
    """``E[a, b] = sse_a(w_b)``: the one-step squared error on spectrum ``a`` of readout ``b`` (float64).

    ``gram_packed`` (na, P), ``xty`` (na, M), ``yty`` (na,) are spectrum
    ``a``'s statistics; ``readouts`` (nb, M) the readouts tried on it.
    """
    w = np.asarray(readouts, dtype="f8")
    return (
        np.asarray(gram_packed, dtype="f8") @ _packed_outer(w).T
        - 2.0 * np.asarray(xty, dtype="f8") @ w.T
        + np.asarray(yty, dtype="f8")[:, None]
    )


def _candidates(x: np.ndarray, k: int) -> np.ndarray:
    """Indices (n, k) of each row's ``k`` nearest other rows of ``x`` (Euclidean)."""
    from sklearn.neighbors import NearestNeighbors

    idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x, return_distance=False)
    out = np.empty((len(x), k), dtype=np.int64)
    for i, row in enumerate(idx):
        out[i] = row[row != i][:k]
    return out


def cross_prediction_knn(
    readouts, gram_packed, xty, yty, n_neighbors: int, *, whitened=None, block_rows: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Each spectrum's ``n_neighbors`` nearest in the symmetrised cross-prediction distance.

    ``d(i, j) = (E[i, j] / E[i, i] + E[j, i] / E[j, j]) / 2 - 1`` with
    ``E[a, b]`` the squared one-step error of readout ``b`` on spectrum ``a``
    (:func:`cross_prediction_errors`): 0 when either readout predicts the
    other spectrum as well as its own, 0.3 when 30% worse.  The ratio makes
    spectra of any noise level comparable; the mean of both directions makes
    it symmetric.

    Up to :data:`EXACT_MAX` spectra every pair is computed; beyond, the
    pairs of each spectrum with its ``CANDIDATES_PER_NEIGHBOUR n_neighbors`` nearest in ``whitened``
    (the readouts in metric-whitened coordinates, where Euclidean distance
    is the mean data-space error).

    Returns
    -------
    knn_indices, knn_dists : ndarray (n, min(n_neighbors, n))
        Each row starts with the spectrum itself at distance 0, then its
        nearest others, as umap-learn's ``fuzzy_simplicial_set`` expects
        (its ``n_neighbors`` counts the point itself).
    """
    w = np.asarray(readouts, dtype="f8")
    n = len(w)
    k = min(int(n_neighbors) - 1, n - 1)  # umap-learn counts the spectrum itself among its neighbours
    if k < 1:
        raise AutoencoderError(
            "parameter n_neighbors: need n_neighbors >= 2 and at least 2 spectra for a neighbour graph"
        )
    own = np.array(
        [
            cross_prediction_errors(gram_packed[i : i + 1], xty[i : i + 1], yty[i : i + 1], w[i : i + 1])[0, 0]
            for i in range(n)
        ]
    )
    own = np.maximum(own, 1e-300)
    if n <= EXACT_MAX:
        ratio = np.empty((n, n))
        for s in range(0, n, block_rows):
            e = min(s + block_rows, n)
            ratio[s:e] = cross_prediction_errors(gram_packed[s:e], xty[s:e], yty[s:e], w) / own[s:e, None]
        dist = np.clip(0.5 * (ratio + ratio.T) - 1.0, 0.0, None)
        np.fill_diagonal(dist, np.inf)
        order = np.argsort(dist, axis=1, kind="stable")[:, :k]
        dists = np.take_along_axis(dist, order, axis=1)
    else:
        if whitened is None:
            raise AutoencoderError("cross_prediction_knn: more than EXACT_MAX spectra need the whitened readouts")
        cand = _candidates(np.asarray(whitened, dtype="f8"), min(n - 1, CANDIDATES_PER_NEIGHBOUR * k))
        fwd = np.empty(cand.shape)
        back = np.empty(cand.shape)
        for i in range(n):  # E[i, c] with spectrum i's statistics, E[c, i] with each candidate's
            c = cand[i]
            fwd[i] = cross_prediction_errors(gram_packed[i : i + 1], xty[i : i + 1], yty[i : i + 1], w[c])[0] / own[i]
            back[i] = np.einsum("cp,p->c", np.asarray(gram_packed[c], dtype="f8"), _packed_outer(w[i : i + 1])[0])
            back[i] = (back[i] - 2.0 * np.asarray(xty[c], dtype="f8") @ w[i] + np.asarray(yty[c])) / own[c]
        dist_c = np.clip(0.5 * (fwd + back) - 1.0, 0.0, None)
        order = np.argsort(dist_c, axis=1, kind="stable")[:, :k]
        dists = np.take_along_axis(dist_c, order, axis=1)
        order = np.take_along_axis(cand, order, axis=1)
    knn_indices = np.concatenate([np.arange(n)[:, None], order], axis=1)
    knn_dists = np.concatenate([np.zeros((n, 1)), dists], axis=1)
    return knn_indices, knn_dists


def euclidean_knn(points, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
    """Each point's exact Euclidean nearest neighbours, itself first, in umap-learn's ``(indices, dists)`` form.

    Exact (scikit-learn), as :class:`umap.UMAP` computes them for small data: umap-learn's
    ``fuzzy_simplicial_set`` given bare points always builds an approximate index (pynndescent), whose
    compilation alone took minutes on a loaded 2-core machine.
    """
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(points, dtype="f8")
    k = min(int(n_neighbors), len(x))
    dist, idx = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(x)
    # a duplicate point may come before the point itself: put each point first, at distance 0
    for i in np.flatnonzero(idx[:, 0] != np.arange(len(x))):
        row = [i] + [j for j in idx[i] if j != i][: k - 1]
        idx[i], dist[i] = row, np.linalg.norm(x[row] - x[i], axis=1)
    return idx, dist


def fuzzy_graph(n: int, n_neighbors: int, seed: int, *, points=None, knn=None):
    """umap-learn's fuzzy neighbour graph (COO, no self loops) of Euclidean ``points`` or of a ``knn`` list.

    Parameters
    ----------
    n : int
        Spectra.
    n_neighbors : int
        Neighbours per spectrum, itself included (umap-learn's convention; capped at n - 1).
    seed : int
    points : ndarray (n, d), optional
        Points whose Euclidean neighbours make the graph.
    knn : tuple, optional
        ``(knn_indices, knn_dists)`` of :func:`cross_prediction_knn` instead.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from scipy.sparse import coo_matrix
    from umap.umap_ import fuzzy_simplicial_set

    if knn is None:
        knn = euclidean_knn(points, n_neighbors)
    idx, dist = knn
    x = np.zeros((n, 1))  # umap-learn reads only its length when the neighbours are given
    graph = fuzzy_simplicial_set(
        x,
        idx.shape[1],
        np.random.RandomState(seed),
        "euclidean",
        knn_indices=idx.astype(np.int64),
        knn_dists=dist.astype("f4"),
    )[0]
    graph = graph.tocoo()
    keep = graph.row != graph.col
    graph = coo_matrix((graph.data[keep], (graph.row[keep], graph.col[keep])), shape=graph.shape)
    if not graph.nnz:
        raise AutoencoderError("the training spectra have no neighbour graph (fewer than 2 distinct readouts)")
    return graph


def umap_layout(x, graph, n_latent: int, ab: dict, seed: int) -> np.ndarray:
    """umap-learn's layout (n, n_latent) of the neighbour ``graph`` of the points ``x``.

    umap-learn's own embedding step with its defaults (spectral start,
    SGD annealed from step 1 to 0 over 500 epochs, 200 from 10,000 points on;
    5 negatives per edge), single-threaded and seeded.
    """
    from umap.umap_ import simplicial_set_embedding

    z, _ = simplicial_set_embedding(
        x,
        graph.tocsr(),
        int(n_latent),
        1.0,
        ab["umap_a"],
        ab["umap_b"],
        1.0,
        5,
        None,
        "spectral",
        np.random.RandomState(seed),
        "euclidean",
        {},
        False,
        {},
        False,
    )
    return z


def full_batch_pairs(graph, n: int, negative_rate: int, seed: int) -> dict:
    """Every edge of ``graph`` (``head``, ``tail``, ``weight``) and ``negative_rate`` fixed random rows per edge.

    The negatives are drawn once, uniformly over the ``n`` spectra (as
    umap-learn draws them), so the full-batch neighbour term is a
    deterministic function of the weights.
    """
    rng = np.random.default_rng(seed + 2)
    return {
        "head": graph.row.astype("i4"),
        "tail": graph.col.astype("i4"),
        "weight": graph.data.astype("f8"),
        "negative": rng.integers(n, size=(graph.nnz, int(negative_rate))).astype("i4"),
    }


def edge_dataset(w: np.ndarray, graph, seed: int, *, steps: int, per_step: int):
    """Endless minibatches of edges (``head``, ``tail`` readouts) of ``graph`` over the readouts ``w``.

    Each epoch's ``steps * per_step`` draws are made once with probabilities
    proportional to the edge weights (UMAP samples an edge as often as its
    weight says) and reshuffled every epoch.
    """
    import tensorflow as tf

    head, tail, weight = graph.row, graph.col, graph.data.astype("f8")
    pick = np.random.default_rng(seed + 1).choice(len(weight), size=per_step * steps, p=weight / weight.sum())
    pairs = np.stack([head[pick], tail[pick]], axis=1).astype("i4")
    table = tf.constant(w.astype("f4"))
    ds = tf.data.Dataset.from_tensor_slices(pairs).shuffle(len(pairs), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(per_step, drop_remainder=True).repeat()

    def ends(pair):
        return {"head": tf.gather(table, pair[:, 0]), "tail": tf.gather(table, pair[:, 1])}

    return ds.map(ends)
