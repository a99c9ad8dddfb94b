"""The model-coupled loss: the data-space error of a readout, from the stage-1 statistics.

Each spectrum's stage-1 embedding is a readout ``w*`` (N reservoir weights and
a bias weight, :mod:`latentsky.embed.esn`).  How good is another readout
``w`` for that spectrum?  Not how close it is to ``w*`` (the Euclidean loss),
but how well it still predicts the spectrum: the one-step squared error in
data space

    sse(w) = sum_t (y_t - x_t . w)^2 = w' G w - 2 w' h + c

with ``G = X'X``, ``h = X'y`` and ``c = y'y`` from stage 1, so no spectrum is
needed while training.

Numerics
    Written as above, ``sse`` is the small difference of terms of order
    ``c`` (~4000 for a median-normalised spectrum) and float32 loses it.  With
    ``d = w - w*`` and ``r = h - G w*`` (computed once in float64) the same
    quantity is

        sse(w) = d' G d - 2 d' r + sse(w*)

    whose terms are all small near a good reconstruction (:func:`coupled_inputs`
    prepares ``G``, ``r`` and ``sse(w*)`` this way).

Normalisation per spectrum
    The loss of a spectrum is ``sse(w) / n_steps`` by default: the mean squared
    one-step prediction error in units of normalised flux squared, exactly the
    data-space reconstruction error :mod:`latentsky.evaluate` reports; spectra
    of different lengths or masked fractions count alike.  ``"yty"`` (the
    fraction of the spectrum's energy left unexplained) and ``"floor"`` (the
    error relative to the best readout's, ``sse(w*)``) are the alternatives.

Conditioning
    A spectrum's Gram matrix has a condition number of 1e9-1e12, and most of
    its 101 directions carry eigenvalues below the ridge of stage 1: the loss
    is a narrow valley.  :func:`metric_root` gives the square root ``A`` of the
    training set's mean normalised Gram matrix (floored at the ridge), and the
    networks work in the coordinates ``u = A (w - mean)``, where Euclidean
    distance is the data-space error on average (see
    :meth:`~latentsky.autoencoder.model.ReadoutAutoencoder.set_metric`).

The Gram matrices are held as the dense blocks of :func:`gram_blocks`, so the
batched mat-vec ``G d`` runs on contiguous memory.
"""

from __future__ import annotations

import numpy as np

from latentsky.exceptions import AutoencoderError

NORMALISATIONS = ("n_steps", "yty", "floor", "none")


def coupled_inputs(
    readout, gram_packed, xty, yty, n_steps, normalise: str = "n_steps", ridge: float | None = None, dtype="f4"
) -> dict:
    """The training inputs of the model-coupled loss, prepared in float64.

    Parameters
    ----------
    readout : ndarray (n, M)
        Stage-1 readouts ``w*``.
    gram_packed : ndarray (n, M(M+1)/2)
        ``X'X`` packed as in :func:`latentsky.embed.runner.pack_gram`.
    xty : ndarray (n, M)
    yty, n_steps : ndarray (n,)
    normalise : {"n_steps", "yty", "floor", "none"}
        Per-spectrum divisor of the squared error (see the module docstring).
    ridge : float, optional
        When the readouts are exactly the ridge solutions ``(G + ridge I)^-1 h``
        (as :func:`~latentsky.embed.runner.embed_store` writes them), then
        ``h - G w* = ridge w*`` and ``sse(w*) = c - w*'h - ridge |w*|^2``: no
        Gram matrix need be unpacked, which makes streaming several times
        faster.  None computes both from ``G``.
    dtype : str
        Of the returned arrays: float32 for minibatch training, float64 for
        the full-batch optimiser.

    Returns
    -------
    dict of arrays
        ``readout`` (n, M); ``gram`` (n, P) the packed Gram divided by the
        spectrum's divisor; ``resid`` (n, M) ``(h - G w*) / divisor``;
        ``floor`` (n,) ``sse(w*) / divisor``.  With them
        ``sse(w)/divisor = d' G d - 2 d' r + floor`` for ``d = w - w*``.
    """
    from latentsky.embed.layout import unpack_gram

    if normalise not in NORMALISATIONS:
        raise AutoencoderError(f"parameter normalise={normalise!r}: must be one of {NORMALISATIONS}")
    w = np.asarray(readout, dtype="f8")
    gp = np.asarray(gram_packed, dtype="f8")
    h = np.asarray(xty, dtype="f8")
    m = w.shape[1]
    c = np.asarray(yty, dtype="f8")
    if ridge is None:
        gw = np.einsum("nij,nj->ni", unpack_gram(gp, m), w)
        resid = h - gw
        floor = np.einsum("ni,ni->n", w, gw) - 2.0 * np.einsum("ni,ni->n", w, h) + c
    else:
        resid = ridge * w
        floor = c - np.einsum("ni,ni->n", w, h) - ridge * np.einsum("ni,ni->n", w, w)
    floor = np.maximum(floor, 0.0)
    div = divisors(normalise, n_steps, yty, floor)
    inv = 1.0 / div
    # float32 before scaling: the Gram block is the bulk of the data (halves the work)
    gram = gp.astype(dtype) if dtype != "f8" else gp
    return {
        "readout": w.astype(dtype),
        "gram": np.multiply(gram, inv.astype(dtype)[:, None]),
        "resid": (resid * inv[:, None]).astype(dtype),
        "floor": (floor * inv).astype(dtype),
    }


def divisors(normalise: str, n_steps, yty, floor) -> np.ndarray:
    """The per-spectrum divisor of the squared error for ``normalise`` (float64, > 0)."""
    if normalise == "n_steps":
        return np.maximum(np.asarray(n_steps, dtype="f8"), 1.0)
    if normalise == "yty":
        return np.maximum(np.asarray(yty, dtype="f8"), 1e-300)
    if normalise == "floor":
        return np.maximum(floor, 1e-12 * np.maximum(np.asarray(yty, dtype="f8"), 1e-300))
    return np.ones(len(np.asarray(floor)))


def metric_root(metric, floor: float):
    """``A = (metric + floor I)^(1/2)`` and its inverse (symmetric, float64).

    ``floor`` is absolute (in the units of ``metric``): directions of the
    mean Gram matrix below it are treated as if their curvature were
    ``floor``, so the networks' coordinates never stretch them without bound.
    """
    vals, vecs = np.linalg.eigh(0.5 * (metric + metric.T))
    vals = np.clip(vals, 0.0, None) + max(float(floor), 1e-300)
    return (vecs * np.sqrt(vals)) @ vecs.T, (vecs / np.sqrt(vals)) @ vecs.T


def gram_blocks(m: int, leaf: int = 26) -> list[tuple[int, int, int, int]]:
    """Dense blocks ``(r0, r1, c0, c1)`` that cover a symmetric ``m x m`` matrix once.

    The index range is halved recursively: each halving stores the block
    below the diagonal (rows of the second half, columns of the first) and
    recurses into both halves, down to diagonal blocks of at most ``leaf``
    rows, stored whole.  For ``m = 101`` and ``leaf = 26``: 7 blocks, 6,376
    numbers instead of 10,201 for the full matrix (5,151 packed).

    Why: the batched mat-vec ``G d`` of the loss then runs on contiguous
    dense blocks, with no gather to unpack a triangle on every step;
    off-diagonal blocks serve both ``B x`` and ``B' y``.
    """
    blocks: list[tuple[int, int, int, int]] = []

    def split(a, b):
        if b - a <= leaf:
            blocks.append((a, b, a, b))
            return
        mid = (a + b + 1) // 2
        split(a, mid)
        split(mid, b)
        blocks.append((mid, b, a, mid))

    split(0, int(m))
    return blocks


def gram_block_index(m: int, blocks=None) -> list[np.ndarray]:
    """For every block of :func:`gram_blocks`, the positions of its entries (row-major) in the packed upper triangle."""
    blocks = gram_blocks(m) if blocks is None else blocks
    iu, ju = np.triu_indices(m)
    pos = np.zeros((m, m), dtype="i4")
    pos[iu, ju] = np.arange(len(iu))
    pos[ju, iu] = np.arange(len(iu))
    return [pos[r0:r1, c0:c1].reshape(-1) for r0, r1, c0, c1 in blocks]


def split_gram(packed, index) -> tuple:
    """Packed Gram rows (n, P) -> the tuple of contiguous block arrays ``(n, size_k)`` of :func:`gram_blocks`."""
    packed = np.asarray(packed)
    return tuple(np.ascontiguousarray(packed[:, ix]) for ix in index)


def symmetric_matvec(blocks, parts, d):
    """``G d`` (B, M) for ``G`` given as the dense blocks of :func:`gram_blocks` (TensorFlow)."""
    import tensorflow as tf

    m = d.shape[1]
    terms = []
    for (r0, r1, c0, c1), g in zip(blocks, parts):
        blk = tf.reshape(g, (-1, r1 - r0, c1 - c0))
        terms.append(tf.pad(tf.linalg.matvec(blk, d[:, c0:c1]), [[0, 0], [r0, m - r1]]))
        if r0 != c0:  # below the diagonal: it stands for its transpose above too
            terms.append(tf.pad(tf.linalg.matvec(blk, d[:, r0:r1], transpose_a=True), [[0, 0], [c0, m - c1]]))
    return tf.add_n(terms)


def quadratic_form(d, parts, blocks):
    """``d' G d`` per row for the symmetric, blocked ``G`` (data: no gradient flows into it).

    The gradient ``2 G d`` reuses the forward mat-vec: automatic
    differentiation would make a second pass over every ``G`` (the bulk of
    the work) to form ``G' upstream``.
    """
    import tensorflow as tf

    @tf.custom_gradient
    def quad(d):
        gd = symmetric_matvec(blocks, parts, d)

        def grad(upstream):
            return 2.0 * upstream[:, None] * gd

        return tf.reduce_sum(d * gd, axis=1), grad

    return quad(d)


def data_error(data: dict, w_rec, blocks, block_index=None):
    """Per-spectrum normalised data-space squared error ``d'Gd - 2d'r + floor`` (TensorFlow, (B,)).

    ``data["gram"]`` is either the tuple of blocks of :func:`gram_blocks` or
    the packed triangle (n, P) of :func:`coupled_inputs` (then cut into
    blocks here with ``block_index``, :func:`gram_block_index`).
    """
    import tensorflow as tf

    d = w_rec - data["readout"]
    parts = data["gram"]
    if not isinstance(parts, (tuple, list)):
        parts = [tf.gather(parts, ix, axis=1) for ix in block_index]
    quad = quadratic_form(d, parts, blocks)
    return quad - 2.0 * tf.reduce_sum(d * data["resid"], axis=1) + data["floor"]
