"""The readout autoencoder: a ``keras.Model`` with the model-coupled loss.

Each spectrum's stage-1 embedding is a readout ``w*`` (N reservoir weights and
a bias weight, :mod:`latentsky.embed.esn`).  The autoencoder maps it to a few
latent coordinates and back to a reconstructed readout ``w``.  How good is
``w``?  Not how close it is to ``w*`` (the Euclidean loss), but how well it
still predicts the spectrum: the one-step squared error in data space

    sse(w) = sum_t (y_t - x_t . w)^2 = w' G w - 2 w' h + c

with ``G = X'X``, ``h = X'y`` and ``c = y'y`` from stage 1, so no spectrum is
needed while training.

Numerics
    Written as above, ``sse`` is the small difference of terms of order
    ``c`` (~4000 for a median-normalised spectrum) and float32 loses it.  With
    ``d = w - w*`` and ``r = h - G w*`` (computed once in float64) the same
    quantity is

        sse(w) = d' G d - 2 d' r + sse(w*)

    whose terms are all small near a good reconstruction, so training runs in
    float32 without cancellation (:func:`coupled_inputs` prepares ``G``,
    ``r`` and ``sse(w*)`` this way).

Normalisation per spectrum
    The loss of a spectrum is ``sse(w) / n_steps`` by default: the mean squared
    one-step prediction error in units of normalised flux squared.  Dividing
    by the number of steps makes spectra of different lengths or masked
    fractions count alike (a HARPS spectrum cut to 5000-6000 A has ~500 steps
    on the default grid, an SDSS one ~3900), and the training objective is
    then exactly the data-space reconstruction error that
    :mod:`latentsky.evaluate` reports.  ``"yty"`` (the fraction of the
    spectrum's energy left unexplained) and ``"floor"`` (the error relative to
    the best readout's, ``sse(w*)``, which weighs every spectrum in units of its
    own noise) are the alternatives.

Conditioning
    The Gram matrices have condition numbers ~1e6, so in plain readout
    coordinates the coupled loss is a narrow valley that gradient steps cross
    slowly.  :meth:`ReadoutAutoencoder.set_metric` lets the networks work in
    coordinates whitened by the training set's mean normalised Gram matrix,
    where the loss's curvature is close to the identity; on the bundled sample
    this lowers the excess data-space error from 0.0025 to 0.0015 (mean per
    step; stage-1 floor 0.049) and halves the epochs needed.  (Measured with
    per-feature standardisation instead, the Euclidean autoencoder reached a
    *lower* data-space error than the coupled one: 0.0018.)

Neighbour term
    A map is read by its neighbourhoods: repeat observations of one star
    should land next to each other.  Reconstruction alone does not ask for
    that (a 2-D code can be good for the decoder and still put near twins
    apart), so ``neighbour_weight > 0`` adds UMAP's cross-entropy on the
    encoder's output, as parametric UMAP does (Sainburg, McInnes & Gentner
    2021, Neural Computation 33, 2881): batches carry edges of the readouts'
    fuzzy neighbour graph (``head``, ``tail``; built by umap-learn), the
    encoder places both ends, and the loss pulls them together with the
    latent similarity ``q = 1 / (1 + a d^(2b))`` while pushing apart
    ``negative_rate`` shuffled pairs per edge.  The coupled loss still
    decides how the decoder reconstructs.  Minibatch Adam on this term
    settles the finest neighbourhoods less well than umap-learn's annealed
    sequential SGD does, so the estimator can start the encoder from
    umap-learn's layout of the same graph (:meth:`ReadoutAutoencoder.regress_encoder`)
    and let the joint training refine it.

The encoder and decoder are small dense networks; the readout shift and the
linear maps into and out of their coordinates are non-trainable weights, so
a saved model carries them.  Weight decay is an L2 penalty on the dense
kernels, added to the loss so that it works with any optimiser.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from latentsky.exceptions import AutoencoderError  # noqa: E402

LOSSES = ("coupled", "euclidean")
NORMALISATIONS = ("n_steps", "yty", "floor", "none")


def coupled_inputs(readout, gram_packed, xty, yty, n_steps, normalise: str = "n_steps",
                   ridge: float | None = None) -> dict:
    """The float32 training inputs of the model-coupled loss, prepared in float64.

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

    Returns
    -------
    dict of float32 arrays
        ``readout`` (n, M); ``gram`` (n, P) the packed Gram divided by the
        spectrum's divisor; ``resid`` (n, M)
        ``(h - G w*) / divisor``; ``floor`` (n,) ``sse(w*) / divisor``.  With
        them ``sse(w)/divisor = d' G d - 2 d' r + floor`` for ``d = w - w*``.
    """
    from latentsky.embed.runner import unpack_gram

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
    if normalise == "n_steps":
        div = np.maximum(np.asarray(n_steps, dtype="f8"), 1.0)
    elif normalise == "yty":
        div = np.maximum(np.asarray(yty, dtype="f8"), 1e-300)
    elif normalise == "floor":
        div = np.maximum(floor, 1e-12 * np.maximum(np.asarray(yty, dtype="f8"), 1e-300))
    else:
        div = np.ones(len(w))
    inv = 1.0 / div
    return {
        "readout": w.astype("f4"),
        # float32 before scaling: the Gram block is the bulk of the data (halves the work)
        "gram": np.multiply(gp.astype("f4"), inv.astype("f4")[:, None]),
        "resid": (resid * inv[:, None]).astype("f4"),
        "floor": (floor * inv).astype("f4"),
    }


def _metric_root(metric, floor: float):
    """``A = (metric + eps I)^(1/2)`` and its inverse (symmetric; ``eps = floor * largest eigenvalue``)."""
    vals, vecs = np.linalg.eigh(0.5 * (metric + metric.T))
    vals = np.clip(vals, 0.0, None) + floor * max(float(vals.max()), 1e-300)
    return (vecs * np.sqrt(vals)) @ vecs.T, (vecs / np.sqrt(vals)) @ vecs.T


def gram_blocks(m: int, leaf: int = 26) -> list[tuple[int, int, int, int]]:
    """Dense blocks ``(r0, r1, c0, c1)`` that cover a symmetric ``m x m`` matrix once.

    The index range is halved recursively: each halving stores the block
    below the diagonal (rows of the second half, columns of the first) and
    recurses into both halves, down to diagonal blocks of at most ``leaf``
    rows, stored whole.  For ``m = 101`` and ``leaf = 26``: 7 blocks, 6,376
    numbers instead of 10,201 for the full matrix (5,151 packed).

    Why: the batched mat-vec ``G d`` of the loss then runs on contiguous
    dense blocks, with no gather to unpack a triangle on every step (that
    gather was most of the step's time); off-diagonal blocks serve both
    ``B x`` and ``B' y``.
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


def _symmetric_matvec(blocks, parts, d):
    """``G d`` (B, M) for ``G`` given as the dense blocks of :func:`gram_blocks`."""
    m = d.shape[1]
    terms = []
    for (r0, r1, c0, c1), g in zip(blocks, parts):
        blk = tf.reshape(g, (-1, r1 - r0, c1 - c0))
        terms.append(tf.pad(tf.linalg.matvec(blk, d[:, c0:c1]), [[0, 0], [r0, m - r1]]))
        if r0 != c0:  # below the diagonal: it stands for its transpose above too
            terms.append(tf.pad(tf.linalg.matvec(blk, d[:, r0:r1], transpose_a=True), [[0, 0], [c0, m - c1]]))
    return tf.add_n(terms)


def _quadratic_form(d, parts, blocks):
    """``d' G d`` per row for the symmetric, blocked ``G`` (data: no gradient flows into it).

    The gradient ``2 G d`` reuses the forward mat-vec: automatic
    differentiation would make a second pass over every ``G`` (the bulk of
    the work) to form ``G' upstream``.
    """
    @tf.custom_gradient
    def quad(d):
        gd = _symmetric_matvec(blocks, parts, d)

        def grad(upstream):
            return 2.0 * upstream[:, None] * gd

        return tf.reduce_sum(d * gd, axis=1), grad

    return quad(d)


@keras.saving.register_keras_serializable(package="latentsky")
class ReadoutAutoencoder(keras.Model):
    """Dense autoencoder of ESN readouts trained with the model-coupled loss.

    Use it like any Keras model: ``compile(optimizer=...)`` then ``fit`` on
    dictionaries of :func:`coupled_inputs` (``"coupled"``) or on
    ``{"readout": w}`` alone (``"euclidean"``).

    Parameters
    ----------
    n_features : int
        Readout length M = N + 1.
    n_latent : int
        Latent dimensions (2 for a map).
    hidden : sequence of int
        Units of the hidden layers of the encoder (the decoder mirrors them).
    activation : str
        Activation of the hidden layers.
    loss_kind : {"coupled", "euclidean"}
        ``"coupled"``: mean over spectra of the normalised data-space squared
        error; ``"euclidean"``: mean squared difference of the standardised
        readouts (the baseline).
    weight_decay : float
        L2 penalty coefficient on every dense kernel.
    euclidean_weight : float
        With ``"coupled"``, adds this multiple of the Euclidean loss: a mild
        pull towards the stage-1 readouts along the directions the data-space
        error hardly sees (small eigenvalues of ``G``).
    neighbour_weight : float
        Weight of the UMAP neighbour term (see the module docstring); it is
        computed on batches that carry ``head`` and ``tail`` readouts.
    umap_a, umap_b : float
        The curve of the latent similarity ``1 / (1 + a d^(2b))`` (umap-learn's
        ``find_ab_params(1, min_dist)``; the defaults are those of min_dist 0.1).
    negative_rate : int
        Shuffled (negative) pairs per edge.
    meta : dict, optional
        JSON-serialisable extras saved with the model (the estimator's
        parameters and history).

    Notes
    -----
    Metrics: ``loss`` (what is minimised, penalty included), ``data_error``
    (the normalised data-space error, when the batch carries the statistics),
    ``readout_mse`` (standardised readout error), ``neighbour`` (the UMAP
    cross-entropy, when the batch carries edges) and ``penalty``.
    """

    def __init__(self, n_features, n_latent=2, hidden=(64,), activation="tanh", loss_kind="coupled",
                 weight_decay=1e-4, euclidean_weight=0.0, neighbour_weight=0.0, umap_a=1.5769, umap_b=0.8951,
                 negative_rate=5, meta=None, **kwargs):
        super().__init__(**kwargs)
        if loss_kind not in LOSSES:
            raise AutoencoderError(f"parameter loss_kind={loss_kind!r}: must be one of {LOSSES}")
        self.n_features = int(n_features)
        self.n_latent = int(n_latent)
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        self.loss_kind = loss_kind
        self.weight_decay = float(weight_decay)
        self.euclidean_weight = float(euclidean_weight)
        self.neighbour_weight = float(neighbour_weight)
        self.umap_a, self.umap_b = float(umap_a), float(umap_b)
        self.negative_rate = int(negative_rate)
        self.meta = dict(meta or {})
        dense = keras.layers.Dense
        self.encoder = keras.Sequential([keras.Input((self.n_features,))]
                                        + [dense(h, activation=activation) for h in self.hidden]
                                        + [dense(self.n_latent, name="latent")], name="encoder")
        self.decoder = keras.Sequential([keras.Input((self.n_latent,))]
                                        + [dense(h, activation=activation) for h in reversed(self.hidden)]
                                        + [dense(self.n_features, name="readout")], name="decoder")
        # Standardisation of the readouts, fixed before training and saved with the model.
        self.shift = self.add_weight(shape=(self.n_features,), initializer="zeros", trainable=False,
                                     name="shift")
        self.scale = self.add_weight(shape=(self.n_features,), initializer="ones", trainable=False,
                                     name="scale")
        # Linear maps into and out of the networks' coordinates: diag(1/scale) and diag(scale)
        # after set_standardisation, or the square root of the mean data-space metric and its
        # inverse after set_metric.
        self.in_map = self.add_weight(shape=(self.n_features, self.n_features), initializer="identity",
                                      trainable=False, name="in_map")
        self.out_map = self.add_weight(shape=(self.n_features, self.n_features), initializer="identity",
                                       trainable=False, name="out_map")
        # the dense blocks the loss reads the Gram matrices in, and where they lie in the packed triangle
        self.gram_blocks = gram_blocks(self.n_features)
        self._block_index = [tf.constant(ix) for ix in gram_block_index(self.n_features, self.gram_blocks)]
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.data_tracker = keras.metrics.Mean(name="data_error")
        self.readout_tracker = keras.metrics.Mean(name="readout_mse")
        self.penalty_tracker = keras.metrics.Mean(name="penalty")
        self.neighbour_tracker = keras.metrics.Mean(name="neighbour")

    # -- structure ---------------------------------------------------------
    def set_standardisation(self, mean, std) -> None:
        """Standardise each readout weight (training-set mean and std) on the way in, undo it on the way out."""
        std = np.where(np.asarray(std, dtype="f8") > 0, std, 1.0)
        self.shift.assign(np.asarray(mean, dtype="f4"))
        self.scale.assign(np.asarray(std, dtype="f4"))
        self.in_map.assign(np.diag(1.0 / std).astype("f4"))
        self.out_map.assign(np.diag(std).astype("f4"))

    def set_metric(self, mean, std, metric, *, floor: float = 1e-6, encoder_input: str = "metric") -> None:
        """Whiten the readouts with the mean data-space metric instead of per-feature scales.

        With ``A = (metric + eps I)^(1/2)`` (``metric`` the training set's mean
        normalised Gram matrix, ``eps = floor * its largest eigenvalue``) the
        networks see ``A (w - mean)`` and emit ``u`` with ``w = mean + A^-1 u``:
        Euclidean distances in the networks' coordinates are then data-space
        errors on average, so the coupled loss is well conditioned in them
        (its curvature ~ identity rather than condition numbers ~1e6) and
        plain gradient steps make progress along every direction.

        ``encoder_input="std"`` keeps the whitening for the decoder's output
        (where the loss needs it) but feeds the encoder per-feature
        standardised readouts, the coordinates the neighbour graph is built
        in, which the neighbour term finds easier to lay out.
        """
        if encoder_input not in ("metric", "std"):
            raise AutoencoderError(f"parameter encoder_input={encoder_input!r}: must be 'metric' or 'std'")
        std = np.where(np.asarray(std, dtype="f8") > 0, std, 1.0)
        a, a_inv = _metric_root(metric, floor)
        self.shift.assign(np.asarray(mean, dtype="f4"))
        self.scale.assign(np.asarray(std, dtype="f4"))
        # row vectors: (w - mean) @ A^T
        self.in_map.assign((a.T if encoder_input == "metric" else np.diag(1.0 / std)).astype("f4"))
        self.out_map.assign(a_inv.T.astype("f4"))

    def set_output_metric(self, metric, *, floor: float = 1e-6) -> None:
        """Move the decoder's output into metric-whitened coordinates without changing what it computes.

        The last dense layer absorbs the change of coordinates (``u' = u T``
        with ``T`` the old output map times ``A^T``), so reconstructions are
        the same before and after; training on from here sees the coupled
        loss well conditioned (see :meth:`set_metric`).
        """
        a, a_inv = _metric_root(metric, floor)
        t = self.out_map.numpy().astype("f8") @ a.T
        last = self.decoder.layers[-1]
        last.kernel.assign((last.kernel.numpy().astype("f8") @ t).astype("f4"))
        last.bias.assign((last.bias.numpy().astype("f8") @ t).astype("f4"))
        self.out_map.assign(a_inv.T.astype("f4"))

    def encode(self, w, training=False):
        """Readouts (B, M) -> latent coordinates (B, n_latent).

        The same as ``encoder((w - shift) @ in_map)``, with the fixed map into the
        networks' coordinates folded into the first layer's kernel: one
        M x M x H product per batch instead of an M x M mat-vec per spectrum
        (a third of the per-spectrum work of a training step, with
        :meth:`decode`).
        """
        first, *rest = self.encoder.layers
        x = first.activation(tf.matmul(w - self.shift, tf.matmul(self.in_map, first.kernel)) + first.bias)
        for layer in rest:
            x = layer(x, training=training)
        return x

    def decode(self, z, training=False):
        """Latent coordinates -> reconstructed readouts (original units).

        ``decoder(z) @ out_map + shift`` with ``out_map`` folded into the last
        layer (see :meth:`encode`).
        """
        *body, last = self.decoder.layers
        x = z
        for layer in body:
            x = layer(x, training=training)
        kernel = tf.matmul(last.kernel, self.out_map)
        bias = tf.linalg.matvec(self.out_map, last.bias, transpose_a=True) + self.shift
        return tf.matmul(x, kernel) + bias

    def regress_encoder(self, w, z, *, steps: int = 500, learning_rate: float = 1e-2) -> float:
        """Fit the encoder alone to map readouts ``w`` (n, M) onto given latent points ``z`` (n, n_latent).

        Full-batch Adam on the mean squared distance, ``steps`` steps; used to
        start the map from another layout (umap-learn's: see the estimator's
        ``layout_init``).  A plain loop rather than ``fit``: the compiled
        training step is the autoencoder's, and this is a one-off regression
        of part of the model.  Returns the final mean squared distance
        (latent units squared).
        """
        w = tf.constant(np.asarray(w, dtype="f4"))
        z = tf.constant(np.asarray(z, dtype="f4"))
        weights = self.encoder.trainable_variables
        optimizer = keras.optimizers.Adam(learning_rate)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                mse = tf.reduce_mean(tf.reduce_sum(tf.square(self.encode(w, training=True) - z), axis=1))
            optimizer.apply_gradients(zip(tape.gradient(mse, weights), weights))
            return mse

        for _ in range(int(steps)):
            mse = step()
        return float(mse)

    def call(self, w, training=False):
        return self.decode(self.encode(w, training=training), training=training)

    def build(self, input_shape=None):
        # Everything is created in __init__ (the sizes are parameters).
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker, self.data_tracker, self.readout_tracker, self.penalty_tracker,
                self.neighbour_tracker]

    # -- losses --------------------------------------------------------------
    def data_error(self, data, w_rec):
        """Per-spectrum normalised data-space squared error ``d'Gd - 2d'r + floor`` (B,).

        ``data["gram"]`` is either the tuple of blocks of :func:`gram_blocks`
        (what the estimator's pipelines deliver) or the packed triangle
        (n, P) of :func:`coupled_inputs`, cut into blocks here.
        """
        d = w_rec - data["readout"]
        parts = data["gram"]
        if not isinstance(parts, (tuple, list)):
            parts = [tf.gather(parts, ix, axis=1) for ix in self._block_index]
        quad = _quadratic_form(d, parts, self.gram_blocks)
        return quad - 2.0 * tf.reduce_sum(d * data["resid"], axis=1) + data["floor"]

    def readout_error(self, data, w_rec):
        """Per-spectrum mean squared difference of the standardised readouts (B,)."""
        return tf.reduce_mean(tf.square((w_rec - data["readout"]) / self.scale), axis=1)

    def neighbour_loss(self, head, tail, training=False):
        """UMAP's fuzzy cross-entropy of a batch of graph edges ``head -> tail`` (readouts, (E, M) each).

        Positive pairs are the edges; negatives pair every head with the
        tails of other edges of the batch (the batch rolled by 1..negative_rate),
        as in parametric UMAP.  Returns the mean cross-entropy over all pairs.
        """
        zh = self.encode(head, training=training)
        zt = self.encode(tail, training=training)
        rolled = [tf.roll(zt, shift=r + 1, axis=0) for r in range(self.negative_rate)]
        eps = 1e-4

        def similarity(a, b):
            d2 = tf.reduce_sum(tf.square(a - b), axis=1)
            return 1.0 / (1.0 + self.umap_a * tf.pow(d2 + 1e-12, self.umap_b))

        attract = -tf.math.log(tf.clip_by_value(similarity(zh, zt), eps, 1.0))
        repel = [-tf.math.log(tf.clip_by_value(1.0 - similarity(zh, zn), eps, 1.0)) for zn in rolled]
        return tf.reduce_mean(tf.concat([attract] + repel, axis=0))

    def penalty(self):
        if self.weight_decay == 0:
            return tf.constant(0.0)
        kernels = [v for v in self.trainable_weights if "kernel" in v.path]
        return self.weight_decay * tf.add_n([tf.reduce_sum(tf.square(k)) for k in kernels])

    def _loss_terms(self, data, training):
        if isinstance(data, tuple):  # Keras hands over (x,) or (x, y, sample_weight)
            data = data[0]
        w_rec = self(data["readout"], training=training)
        rec = self.readout_error(data, w_rec)
        coupled = "gram" in data
        if self.loss_kind == "coupled" and not coupled:
            raise AutoencoderError("loss_kind='coupled' needs the stage-1 statistics in every batch "
                             "('gram', 'resid', 'floor'; see coupled_inputs)")
        dat = self.data_error(data, w_rec) if coupled else None
        if self.loss_kind == "coupled":
            main = tf.reduce_mean(dat)
            if self.euclidean_weight:
                main = main + self.euclidean_weight * tf.reduce_mean(rec)
        else:
            main = tf.reduce_mean(rec)
        pen = self.penalty()
        nb = None
        if self.neighbour_weight and "head" in data:
            nb = self.neighbour_loss(data["head"], data["tail"], training=training)
            main = main + self.neighbour_weight * nb
        return main + pen, dat, rec, pen, nb

    def _update(self, loss, dat, rec, pen, nb=None):
        self.loss_tracker.update_state(loss)
        if dat is not None:
            self.data_tracker.update_state(dat)
        self.readout_tracker.update_state(rec)
        self.penalty_tracker.update_state(pen)
        out = {"loss": self.loss_tracker.result(), "readout_mse": self.readout_tracker.result(),
               "penalty": self.penalty_tracker.result()}
        if dat is not None:
            out["data_error"] = self.data_tracker.result()
        if nb is not None:
            self.neighbour_tracker.update_state(nb)
            out["neighbour"] = self.neighbour_tracker.result()
        return out

    def train_step(self, data):
        with tf.GradientTape() as tape:
            terms = self._loss_terms(data, training=True)
        grads = tape.gradient(terms[0], self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        return self._update(*terms)

    def test_step(self, data):
        return self._update(*self._loss_terms(data, training=False))

    # -- serialisation -----------------------------------------------------
    def get_config(self):
        return {"n_features": self.n_features, "n_latent": self.n_latent, "hidden": list(self.hidden),
                "activation": self.activation, "loss_kind": self.loss_kind, "weight_decay": self.weight_decay,
                "euclidean_weight": self.euclidean_weight, "neighbour_weight": self.neighbour_weight,
                "umap_a": self.umap_a, "umap_b": self.umap_b, "negative_rate": self.negative_rate, "meta": self.meta, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
