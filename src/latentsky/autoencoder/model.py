"""The readout autoencoder: a ``keras.Model`` trained with the model-coupled loss.

The encoder maps a spectrum's stage-1 readout ``w*`` to a few latent
coordinates, the decoder maps them back to a readout ``w``, and the loss
judges ``w`` by the one-step squared error it makes on the spectrum (data
space; :mod:`latentsky.autoencoder.coupled` computes it from the stage-1
statistics).  ``loss_kind="euclidean"`` judges it by the mean squared
difference of the standardised readouts instead (the baseline).

Neighbour term
    ``neighbour_weight > 0`` adds UMAP's fuzzy cross-entropy on the encoder's
    output, as parametric UMAP does (Sainburg, McInnes & Gentner 2021, Neural
    Computation 33, 2881): batches carry edges of a neighbour graph (``head``,
    ``tail`` readouts), the encoder places both ends, and the loss pulls them
    together with the latent similarity ``q = 1 / (1 + a d^(2b))`` while
    pushing apart ``negative_rate`` shuffled pairs per edge.  Which graph is
    the estimator's choice (:mod:`latentsky.autoencoder.graphs`).

Gradient shares
    Every training step also records the norm of each loss term's gradient
    with respect to the encoder's weights (``grad_data``, ``grad_readout``,
    ``grad_neighbour``, ``grad_penalty``): what moves the map.

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

from latentsky.autoencoder.coupled import (  # noqa: E402
    data_error,
    gram_block_index,
    gram_blocks,
    metric_root,
)
from latentsky.exceptions import AutoencoderError  # noqa: E402

LOSSES = ("coupled", "euclidean")
#: Loss terms whose share of the encoder's gradient the training reports (``grad_<term>`` metrics).
GRADIENT_TERMS = ("data", "readout", "neighbour", "penalty")


@keras.saving.register_keras_serializable(package="latentsky")
class ReadoutAutoencoder(keras.Model):
    """Dense autoencoder of ESN readouts trained with the model-coupled loss.

    Use it like any Keras model: ``compile(optimizer=...)`` then ``fit`` on
    dictionaries of :func:`~latentsky.autoencoder.coupled.coupled_inputs`
    (``"coupled"``) or on ``{"readout": w}`` alone (``"euclidean"``).

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
    data_scale : float
        The coupled loss term is the mean normalised data-space error divided
        by this constant (> 0; the estimator passes the stage-1 readouts' own
        mean error, so the term reads "times the floor" whatever the flux
        units, and its balance with ``weight_decay`` and ``neighbour_weight``
        does not depend on the data set).  A constant factor: the coupled
        loss's minimiser is unchanged when it is the only term.  The
        ``data_error`` metric stays unscaled.
    euclidean_weight : float
        With ``"coupled"``, adds this multiple of the Euclidean loss.
    neighbour_weight : float
        Weight of the UMAP neighbour term (see the module docstring); it is
        computed on batches that carry ``head`` and ``tail`` readouts.
    umap_a, umap_b : float
        The curve of the latent similarity ``1 / (1 + a d^(2b))`` (umap-learn's
        ``find_ab_params(1, min_dist)``; the defaults are those of min_dist 0.1).
    negative_rate : int
        Shuffled (negative) pairs per edge.
    linear_encoder : bool
        The encoder is one linear layer (no hidden layers): a linear map such
        as PCA (:meth:`set_linear_encoder`).
    meta : dict, optional
        JSON-serialisable extras saved with the model (the estimator's
        parameters and history).

    Notes
    -----
    Metrics: ``loss`` (what is minimised, penalty included), ``data_error``
    (the normalised data-space error, when the batch carries the statistics),
    ``readout_mse`` (standardised readout error), ``neighbour`` (the UMAP
    cross-entropy, when the batch carries edges), ``penalty``, and in
    training the gradient norms ``grad_<term>`` (see the module docstring).
    """

    def __init__(
        self,
        n_features,
        n_latent=2,
        hidden=(128,),
        activation="tanh",
        loss_kind="coupled",
        weight_decay=1e-4,
        data_scale=1.0,
        euclidean_weight=0.0,
        neighbour_weight=0.0,
        umap_a=1.5769,
        umap_b=0.8951,
        negative_rate=5,
        linear_encoder=False,
        meta=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if loss_kind not in LOSSES:
            raise AutoencoderError(f"parameter loss_kind={loss_kind!r}: must be one of {LOSSES}")
        self.n_features = int(n_features)
        self.n_latent = int(n_latent)
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        self.loss_kind = loss_kind
        self.weight_decay = float(weight_decay)
        self.data_scale = float(data_scale)
        if not self.data_scale > 0:
            raise AutoencoderError(f"parameter data_scale={data_scale!r}: must be > 0")
        self.euclidean_weight = float(euclidean_weight)
        self.neighbour_weight = float(neighbour_weight)
        self.umap_a, self.umap_b = float(umap_a), float(umap_b)
        self.negative_rate = int(negative_rate)
        self.linear_encoder = bool(linear_encoder)
        self.meta = dict(meta or {})
        dense = keras.layers.Dense
        encoder_hidden = () if self.linear_encoder else self.hidden
        self.encoder = keras.Sequential(
            [keras.Input((self.n_features,))]
            + [dense(h, activation=activation) for h in encoder_hidden]
            + [dense(self.n_latent, name="latent")],
            name="encoder",
        )
        self.decoder = keras.Sequential(
            [keras.Input((self.n_latent,))]
            + [dense(h, activation=activation) for h in reversed(self.hidden)]
            + [dense(self.n_features, name="readout")],
            name="decoder",
        )
        # Standardisation of the readouts, fixed before training and saved with the model.
        self.shift = self.add_weight(shape=(self.n_features,), initializer="zeros", trainable=False, name="shift")
        self.scale = self.add_weight(shape=(self.n_features,), initializer="ones", trainable=False, name="scale")
        # Linear maps into and out of the networks' coordinates: diag(1/scale) and diag(scale)
        # after set_standardisation, or the square root of the mean data-space metric and its
        # inverse after set_metric.
        self.in_map = self.add_weight(
            shape=(self.n_features, self.n_features), initializer="identity", trainable=False, name="in_map"
        )
        self.out_map = self.add_weight(
            shape=(self.n_features, self.n_features), initializer="identity", trainable=False, name="out_map"
        )
        # the dense blocks the loss reads the Gram matrices in, and where they lie in the packed triangle
        self.gram_blocks = gram_blocks(self.n_features)
        self._block_index = [tf.constant(ix) for ix in gram_block_index(self.n_features, self.gram_blocks)]
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.data_tracker = keras.metrics.Mean(name="data_error")
        self.readout_tracker = keras.metrics.Mean(name="readout_mse")
        self.penalty_tracker = keras.metrics.Mean(name="penalty")
        self.neighbour_tracker = keras.metrics.Mean(name="neighbour")
        self.grad_trackers = {t: keras.metrics.Mean(name=f"grad_{t}") for t in GRADIENT_TERMS}
        self.built = True  # every weight exists now (a full-batch fit never calls the model through Keras)

    # -- structure ---------------------------------------------------------
    def set_standardisation(self, mean, std) -> None:
        """Standardise each readout weight (training-set mean and std) on the way in, undo it on the way out."""
        std = np.where(np.asarray(std, dtype="f8") > 0, std, 1.0)
        self.shift.assign(np.asarray(mean, dtype="f4"))
        self.scale.assign(np.asarray(std, dtype="f4"))
        self.in_map.assign(np.diag(1.0 / std).astype("f4"))
        self.out_map.assign(np.diag(std).astype("f4"))

    def set_metric(self, mean, std, metric, *, floor: float, encoder_input: str = "metric", cov=None) -> None:
        """Work in coordinates whitened by the mean data-space metric instead of per-feature scales.

        With ``A = (metric + floor I)^(1/2)`` (``metric`` the training set's
        mean normalised Gram matrix, ``floor`` absolute, in its units) the
        networks see ``A (w - mean) / s`` and emit ``u`` with
        ``w = mean + s A^-1 u``: Euclidean distances in the networks'
        coordinates are then data-space errors on average, so the coupled
        loss is well conditioned in them and gradient steps make progress
        along every direction.  ``s`` (from the readouts' covariance ``cov``;
        1 without it) scales the whitened readouts to unit variance per
        coordinate on average, so the networks' units start in their
        working range (a spectrum's data-space spread is ~1e-3 of normalised
        flux squared, far below it).

        ``encoder_input="std"`` keeps the whitening for the decoder's output
        (where the loss needs it) but feeds the encoder per-feature
        standardised readouts.
        """
        if encoder_input not in ("metric", "std"):
            raise AutoencoderError(f"parameter encoder_input={encoder_input!r}: must be 'metric' or 'std'")
        std = np.where(np.asarray(std, dtype="f8") > 0, std, 1.0)
        a, a_inv = metric_root(metric, floor)
        spread = 1.0
        if cov is not None:
            spread = float(np.sqrt(max(np.trace(a @ np.asarray(cov, dtype="f8") @ a.T) / len(a), 1e-300)))
        self.shift.assign(np.asarray(mean, dtype="f4"))
        self.scale.assign(np.asarray(std, dtype="f4"))
        # row vectors: (w - mean) @ A^T / s
        self.in_map.assign((a.T / spread if encoder_input == "metric" else np.diag(1.0 / std)).astype("f4"))
        self.out_map.assign((spread * a_inv.T).astype("f4"))

    def set_linear_encoder(self, kernel, bias) -> None:
        """Make the (linear) encoder ``z = ((w - shift) @ in_map) @ kernel + bias`` (a fixed linear map such as PCA)."""
        if not self.linear_encoder:
            raise AutoencoderError("set_linear_encoder: the model was built with hidden encoder layers")
        layer = self.encoder.layers[-1]
        layer.kernel.assign(np.asarray(kernel, dtype="f4"))
        layer.bias.assign(np.asarray(bias, dtype="f4"))

    def encode(self, w, training=False):
        """Readouts (B, M) -> latent coordinates (B, n_latent).

        The same as ``encoder((w - shift) @ in_map)``, with the fixed map into the
        networks' coordinates folded into the first layer's kernel: one
        M x M x H product per batch instead of an M x M mat-vec per spectrum.
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
        make a parametric encoder of a layout computed otherwise (umap-learn's:
        the ``umap`` map).  Returns the final mean squared distance (latent
        units squared).
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
            step()
        # the distance after the last step (each step's own value is the one before its update)
        return float(tf.reduce_mean(tf.reduce_sum(tf.square(self.encode(w) - z), axis=1)))

    def call(self, w, training=False):
        return self.decode(self.encode(w, training=training), training=training)

    def build(self, input_shape=None):
        # Everything is created in __init__ (the sizes are parameters).
        self.built = True

    @property
    def metrics(self):
        return [
            self.loss_tracker,
            self.data_tracker,
            self.readout_tracker,
            self.penalty_tracker,
            self.neighbour_tracker,
            *self.grad_trackers.values(),
        ]

    # -- losses --------------------------------------------------------------
    def data_error(self, data, w_rec):
        """Per-spectrum normalised data-space squared error ``d'Gd - 2d'r + floor`` (B,).

        ``data["gram"]`` is either the tuple of blocks of
        :func:`~latentsky.autoencoder.coupled.gram_blocks` (what the
        estimator's pipelines deliver) or the packed triangle (n, P).
        """
        return data_error(data, w_rec, self.gram_blocks, self._block_index)

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
        kernels = [v for v in self.trainable_weights if "kernel" in v.path]
        if self.weight_decay == 0 or not kernels:
            return tf.constant(0.0)
        return self.weight_decay * tf.add_n([tf.reduce_sum(tf.square(k)) for k in kernels])

    def _loss_terms(self, data, training):
        """The weighted loss terms (a dict: ``data``, ``readout``, ``neighbour``, ``penalty``) and the
        unweighted per-spectrum errors for the metrics."""
        if isinstance(data, tuple):  # Keras hands over (x,) or (x, y, sample_weight)
            data = data[0]
        w_rec = self(data["readout"], training=training)
        rec = self.readout_error(data, w_rec)
        coupled = "gram" in data
        if self.loss_kind == "coupled" and not coupled:
            raise AutoencoderError(
                "loss_kind='coupled' needs the stage-1 statistics in every batch "
                "('gram', 'resid', 'floor'; see coupled_inputs)"
            )
        dat = self.data_error(data, w_rec) if coupled else None
        parts = {}
        if self.loss_kind == "coupled":
            parts["data"] = tf.reduce_mean(dat) / self.data_scale
            if self.euclidean_weight:
                parts["readout"] = self.euclidean_weight * tf.reduce_mean(rec)
        else:
            parts["readout"] = tf.reduce_mean(rec)
        nb = None
        if self.neighbour_weight and "head" in data:
            nb = self.neighbour_loss(data["head"], data["tail"], training=training)
            parts["neighbour"] = self.neighbour_weight * nb
        parts["penalty"] = self.penalty()
        return parts, {"data": dat, "readout": rec, "neighbour": nb}

    def _update(self, parts, errors, grad_norms=None):
        self.loss_tracker.update_state(tf.add_n(list(parts.values())))
        self.readout_tracker.update_state(errors["readout"])
        self.penalty_tracker.update_state(parts["penalty"])
        out = {
            "loss": self.loss_tracker.result(),
            "readout_mse": self.readout_tracker.result(),
            "penalty": self.penalty_tracker.result(),
        }
        if errors["data"] is not None:
            self.data_tracker.update_state(errors["data"])
            out["data_error"] = self.data_tracker.result()
        if errors["neighbour"] is not None:
            self.neighbour_tracker.update_state(errors["neighbour"])
            out["neighbour"] = self.neighbour_tracker.result()
        for term, norm in (grad_norms or {}).items():
            self.grad_trackers[term].update_state(norm)
            out[f"grad_{term}"] = self.grad_trackers[term].result()
        return out

    def train_step(self, data):
        weights = self.trainable_weights
        encoder_ids = {id(v) for v in self.encoder.trainable_weights}
        on_encoder = [k for k, v in enumerate(weights) if id(v) in encoder_ids]
        with tf.GradientTape(persistent=True) as tape:
            parts, errors = self._loss_terms(data, training=True)
        # each term's gradient apart (their sum is the step), to record what moves the encoder
        grads, norms = None, {}
        for term, value in parts.items():
            g = [
                tf.zeros(w.shape, dtype=value.dtype) if x is None else x
                for w, x in zip(weights, tape.gradient(value, weights))
            ]
            grads = g if grads is None else [a + b for a, b in zip(grads, g)]
            if on_encoder:
                norms[term] = tf.linalg.global_norm([g[k] for k in on_encoder])
        del tape
        self.optimizer.apply_gradients(zip(grads, weights))
        return self._update(parts, errors, norms)

    def test_step(self, data):
        return self._update(*self._loss_terms(data, training=False))

    # -- serialisation -----------------------------------------------------
    def get_config(self):
        return {
            "n_features": self.n_features,
            "n_latent": self.n_latent,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "loss_kind": self.loss_kind,
            "weight_decay": self.weight_decay,
            "data_scale": self.data_scale,
            "euclidean_weight": self.euclidean_weight,
            "neighbour_weight": self.neighbour_weight,
            "umap_a": self.umap_a,
            "umap_b": self.umap_b,
            "negative_rate": self.negative_rate,
            "linear_encoder": self.linear_encoder,
            "meta": self.meta,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
