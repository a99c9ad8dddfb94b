"""The phases of a fit, for each kind of map (:mod:`latentsky.autoencoder.maps`).

:class:`Fit` holds what one ``LatentAutoencoder.fit`` prepared (the source,
the training and validation rows, the standardisation and the mean
data-space metric) and trains models with either optimiser:

* full-batch L-BFGS in float64 (:mod:`latentsky.autoencoder.lbfgs`), as the
  method's reference code does, when the training inputs fit in memory;
* minibatch Adam through Keras (``tf.data`` pipelines of
  :mod:`latentsky.autoencoder.datasets`, in memory or streamed) otherwise.

End-to-end kinds train the whole network from ``restarts`` random starts and
keep the one with the lowest training loss (never a score on labels); the
``umap`` and ``pca`` kinds fix the encoder first (a regression onto
umap-learn's layout, or PCA exactly) and fit the decoder alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from latentsky.autoencoder import sources
from latentsky.autoencoder.events import Tracker, TrainingEvent

log = logging.getLogger(__name__)

#: Whether a fit of this process turned TensorFlow's op determinism on (process-wide, never off again;
#: Keras then refuses XLA, with a warning, so no later fit asks for it).
DETERMINISM = {"on": False}

#: L-BFGS iterations of the regression of the ``umap`` map's encoder onto umap-learn's layout.
LAYOUT_ITERATIONS = 2000


@dataclass
class Fit:
    """One fit's data and settings (``est``: the estimator, read for its parameters)."""

    est: object
    source: object  # sources.Source (the original rows, float64 statistics)
    train: np.ndarray  # boolean mask of the training rows
    val: np.ndarray  # boolean mask of the validation rows
    seed: int
    optimizer: str  # "lbfgs" or "adam"
    tracker: Tracker
    mean: np.ndarray = None
    std: np.ndarray = None
    cov: np.ndarray = None
    metric: np.ndarray = None
    metric_floor: float = None
    data_scale: float = 1.0  # the coupled term's divisor (:func:`data_scale`)
    umap_ab: dict = field(default_factory=dict)
    stream_source: object = None  # what Adam's pipelines read (the source, or its float32 cache)
    in_memory: bool = True  # Adam: prepare the rows in memory (else stream them)
    pairs: dict = None  # full-batch neighbour pairs (hybrid, L-BFGS)
    graph: object = None  # neighbour graph (hybrid, Adam)
    _inputs: dict = None

    # -- models -----------------------------------------------------------
    def new_model(self, seed: int, *, loss_kind: str, linear_encoder: bool = False, whiten: str = "metric"):
        """A fresh model with this fit's coordinates (``whiten``: "metric", "std" or "split")."""
        import keras

        from latentsky.autoencoder.model import ReadoutAutoencoder

        est = self.est
        keras.utils.set_random_seed(int(seed))
        neighbour = float(est.neighbour_weight) if est.map == "hybrid" else 0.0
        model = ReadoutAutoencoder(
            self.source.m,
            n_latent=est.n_latent,
            hidden=tuple(est.hidden),
            activation=est.activation,
            loss_kind=loss_kind,
            weight_decay=est.weight_decay,
            data_scale=self.data_scale,
            euclidean_weight=est.euclidean_weight,
            neighbour_weight=neighbour,
            negative_rate=est.negative_rate,
            linear_encoder=linear_encoder,
            **self.umap_ab,
        )
        if whiten == "std":
            model.set_standardisation(self.mean, self.std)
        else:
            model.set_metric(
                self.mean,
                self.std,
                self.metric,
                floor=self.metric_floor,
                cov=self.cov,
                encoder_input="std" if whiten == "split" else "metric",
            )
        return model

    # -- data for the optimisers -------------------------------------------
    def _coupled_inputs(self, raw: dict, dtype="f4") -> dict:
        """The model-coupled loss's inputs for rows read by :func:`sources.raw_rows`, with this fit's settings."""
        from latentsky.autoencoder.coupled import coupled_inputs

        return coupled_inputs(
            raw["readout"],
            raw["gram"],
            raw["xty"],
            raw["yty"],
            raw["n_steps"],
            self.est.normalise,
            ridge=self.source.ridge,
            dtype=dtype,
        )

    def full_batch_inputs(self) -> dict:
        """The training rows' float64 inputs of the loss (Gram as dense blocks), prepared once."""
        if self._inputs is None:
            from latentsky.autoencoder.coupled import gram_block_index, split_gram

            raw = sources.raw_rows(self.source, self.train)
            if "gram" in raw:
                inputs = self._coupled_inputs(raw, dtype="f8")
                inputs["gram"] = split_gram(inputs["gram"], gram_block_index(self.source.m))
            else:
                inputs = {"readout": raw["readout"]}
            self._inputs = inputs
        return self._inputs

    def train_readouts(self) -> np.ndarray:
        """The training rows' readouts (float64), without their statistics."""
        return sources.raw_rows(self.source, self.train, statistics=False)["readout"]

    # -- phases -----------------------------------------------------------
    def run(self, model, *, train: str = "all", seed: int = 0, latent=None) -> dict:
        """Train ``model`` (``train``: "all" or "decoder") with this fit's optimiser; the phase's summary.

        ``latent``: L-BFGS decoder phase only, the exact points of the fixed map (default: the encoder's)."""
        if self.optimizer == "lbfgs":
            return self._run_lbfgs(model, train, latent)
        return self._run_adam(model, train, seed)

    def _run_lbfgs(self, model, train: str, latent=None) -> dict:
        from latentsky.autoencoder.lbfgs import FullBatchObjective, minimise

        est = self.est
        objective = FullBatchObjective(
            model,
            self.full_batch_inputs(),
            train=train,
            latent=latent,
            pairs=self.pairs if model.neighbour_weight else None,
        )
        out = minimise(objective, max_iter=int(est.max_iter), tol=float(est.tol), on_iteration=self.tracker.step)
        log.info(
            "L-BFGS: %d iterations, %d evaluations, loss %.6g (%s)",
            out["n_iter"],
            out["n_eval"],
            out["loss"],
            out["message"],
        )
        if self.val.any():
            out["val_loss"] = self.validation_loss(model)
        return out

    def validation_loss(self, model) -> float:
        """The model's mean data-space (coupled) or readout (Euclidean) error on the validation rows."""
        import tensorflow as tf

        raw = sources.raw_rows(self.source, self.val)
        w = tf.constant(raw["readout"].astype("f4"))
        w_rec = model(w)
        if model.loss_kind == "coupled":
            data = self._coupled_inputs(raw)
            return float(tf.reduce_mean(model.data_error({k: tf.constant(v) for k, v in data.items()}, w_rec)))
        return float(tf.reduce_mean(model.readout_error({"readout": w}, w_rec)))

    def _run_adam(self, model, train: str, seed: int) -> dict:
        import tensorflow as tf

        from latentsky.autoencoder.datasets import make_dataset
        from latentsky.autoencoder.graphs import edge_dataset

        est = self.est
        statistics = self.source.has_statistics
        source = self.stream_source
        kw = dict(
            batch_size=int(est.batch_size),
            normalise=est.normalise,
            seed=seed,
            statistics=statistics,
            in_memory=self.in_memory,
            read_threads=int(est.read_threads),
        )
        train_ds = make_dataset(source, self.train, shuffle=True, **kw)
        if model.neighbour_weight and train == "all":
            per_step = max(1, int(round(est.edges_per_spectrum * min(int(est.batch_size), int(self.train.sum())))))
            edges = edge_dataset(
                self.train_readouts(), self.graph, seed, steps=int(train_ds.cardinality()), per_step=per_step
            )
            train_ds = tf.data.Dataset.zip((train_ds, edges)).map(lambda a, b: {**a, **b})
        val_ds = make_dataset(source, self.val, shuffle=False, **kw) if self.val.any() else None
        monitor = "val_loss" if val_ds is not None else "loss"
        if train != "all":
            model.encoder.trainable = False
        model.compile(**compile_options(est))
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=int(est.epochs),
            verbose=0,
            shuffle=False,
            callbacks=adam_callbacks(est, monitor, self.tracker.keras_callback()),
        )
        model.encoder.trainable = True
        steps = int(model.optimizer.iterations.numpy())
        # a fresh optimizer over all the weights, as `load` rebuilds it
        model.compile(**compile_options(est))
        model.optimizer.build(model.trainable_variables)
        history = model.history.history
        out = {
            "loss": float(min(history[monitor])),
            "n_iter": len(history["loss"]),
            "n_steps": steps,
            "history": history,
        }
        if val_ds is not None:
            out["val_loss"] = out["loss"]
        return out

    # -- the kinds ----------------------------------------------------------
    def end_to_end(self, loss_kind: str, whiten: str):
        """``restarts`` models trained end to end; the one with the lowest training loss, and every restart's loss."""
        est = self.est
        best, losses = None, []
        for r in range(int(est.restarts)):
            model = self.new_model(self.seed + 1000 * r, loss_kind=loss_kind, whiten=whiten)
            out = self.run(model, seed=self.seed + 1000 * r)
            losses.append(out["loss"])
            log.info("restart %d of %d: training loss %.6g", r + 1, est.restarts, out["loss"])
            if best is None or out["loss"] < best[1]["loss"]:
                best = (model, out)
        return best[0], best[1], losses

    def fixed_map(self, kind: str, whiten: str, layout=None):
        """The ``umap`` or ``pca`` map: the encoder fixed to the layout, then the decoder fitted alone.

        ``layout`` (``umap`` only): the training rows' points to use instead of umap-learn's layout."""
        from latentsky.autoencoder.graphs import fuzzy_graph, umap_layout

        est = self.est
        w = self.train_readouts()
        x = (w - self.mean) / np.where(self.std > 0, self.std, 1.0)
        model = self.new_model(
            self.seed,
            loss_kind="coupled" if self.source.has_statistics else "euclidean",
            linear_encoder=kind == "pca",
            whiten=whiten,
        )
        if kind == "pca":
            from sklearn.decomposition import PCA

            pca = PCA(n_components=int(est.n_latent)).fit(x)
            # the encoder sees the standardised readouts; the centring is the model's shift
            model.set_linear_encoder(pca.components_.T, -pca.mean_ @ pca.components_.T)
            layout_mse, z = 0.0, None
        else:
            from latentsky.autoencoder.lbfgs import FullBatchObjective, minimise

            if layout is None:
                self.tracker.emit("laying out the map with umap-learn")
                graph = fuzzy_graph(len(x), int(est.n_neighbors), self.seed, points=x)
                z = umap_layout(x, graph, int(est.n_latent), self.umap_ab, self.seed)
            else:
                z = np.asarray(layout, dtype="f8")
            # the encoder made to reproduce the layout (full-batch L-BFGS on the squared distance, whatever the
            # optimiser of the decoder): the map is umap-learn's, and new spectra can be placed on it
            regression = FullBatchObjective(model, {"readout": w}, train="encoder", target=z)
            layout_mse = minimise(regression, max_iter=LAYOUT_ITERATIONS, tol=0.0)["loss"]
            log.info(
                "encoder regressed onto umap-learn's layout: mean squared distance %.3g (layout variance %.3g)",
                layout_mse,
                float(z.var(0).sum()),
            )
        out = self.run(model, train="decoder", seed=self.seed, latent=z)
        out["layout_mse"] = float(layout_mse)
        return model, out, [out["loss"]]

    # -- set-up -------------------------------------------------------------
    def prepare_neighbours(self):
        """The hybrid map's graph: cross-prediction neighbours of the training spectra (and its pairs)."""
        from latentsky.autoencoder.coupled import metric_root
        from latentsky.autoencoder.graphs import cross_prediction_knn, full_batch_pairs, fuzzy_graph

        est = self.est
        self.tracker.emit("building the cross-prediction neighbour graph")
        raw = sources.raw_rows(self.source, self.train)
        a, _ = metric_root(self.metric, self.metric_floor)
        whitened = (raw["readout"] - self.mean) @ a.T
        knn = cross_prediction_knn(
            raw["readout"], raw["gram"], raw["xty"], raw["yty"], int(est.n_neighbors), whitened=whitened
        )
        self.graph = fuzzy_graph(len(raw["readout"]), int(est.n_neighbors), self.seed, knn=knn)
        self.pairs = full_batch_pairs(self.graph, len(raw["readout"]), int(est.negative_rate), self.seed)


def data_scale(setting, floor: float) -> float:
    """The divisor of the coupled loss term: ``floor`` (the stage-1 readouts' mean normalised error on the
    training rows) for ``setting="floor"``, else ``setting`` itself; 1.0 when the floor is not positive
    (readouts that predict their spectra exactly)."""
    if setting == "floor":
        if not floor > 0:
            log.warning("the stage-1 readouts' mean data-space error is %g: the coupled term is not rescaled", floor)
            return 1.0
        return float(floor)
    return float(setting)


def compile_options(est) -> dict:
    """``model.compile`` arguments of an Adam phase: a fresh Adam, XLA unless deterministic, steps per call."""
    import keras

    # Keras falls back from XLA (with a warning) when op determinism is on
    return {
        "optimizer": keras.optimizers.Adam(est.learning_rate),
        "jit_compile": bool(est.jit_compile) and not (est.deterministic or DETERMINISM["on"]),
        "steps_per_execution": int(est.steps_per_execution),
    }


def adam_callbacks(est, monitor: str, progress_cb) -> list:
    """Early stopping (best weights kept), learning-rate halving, checkpoints and progress of an Adam phase."""
    import keras

    callbacks = [
        keras.callbacks.EarlyStopping(monitor=monitor, patience=int(est.patience), restore_best_weights=True),
        progress_cb,
    ]
    if est.lr_patience:
        # halving the step when the loss stalls settles Adam into the narrow valleys of the coupled loss
        callbacks.insert(
            0,
            keras.callbacks.ReduceLROnPlateau(
                monitor=monitor, factor=0.5, patience=int(est.lr_patience), min_lr=est.learning_rate / 64
            ),
        )
    if est.checkpoint_dir is not None:
        ckpt = Path(est.checkpoint_dir)
        ckpt.mkdir(parents=True, exist_ok=True)
        callbacks.append(
            keras.callbacks.ModelCheckpoint(
                str(ckpt / "best.weights.h5"), monitor=monitor, save_best_only=True, save_weights_only=True
            )
        )
    return callbacks


#: Below this share of the encoder's gradient, a map the model-coupled loss is meant to shape is reported
#: (a warning, and ``fit["layout_note"]`` in metrics.json) as laid out by its other terms.
COUPLED_SHARE_MIN = 0.1
_TERM_NAMES = {"neighbour": "the neighbour term", "penalty": "the weight decay", "readout": "the Euclidean term"}


def layout_note(kind: str, shares: dict) -> str | None:
    """A sentence saying which term laid out a ``coupled``/``hybrid`` map when the model-coupled loss carried
    less than :data:`COUPLED_SHARE_MIN` of its encoder's gradient; None otherwise."""
    from latentsky.autoencoder.maps import COUPLED_KINDS

    data = shares.get("data")
    others = {k: v for k, v in shares.items() if k != "data"}
    if kind not in COUPLED_KINDS or data is None or data >= COUPLED_SHARE_MIN or not others:
        return None
    top = max(others, key=others.get)
    name = _TERM_NAMES.get(top, top)
    return (
        f"the model-coupled loss carried {data:.0%} of the encoder's gradient and {name} {others[top]:.0%}: "
        f"{name} laid out this map (map='coupled' trains on the model-coupled loss alone)"
    )


def gradient_shares(history: dict) -> dict:
    """Each loss term's share of the encoder's gradient over a training run.

    The mean over the run's steps of each term's gradient norm on the
    encoder's weights (``grad_<term>`` in ``history``), divided by their sum:
    how much each term moved the map.  Empty when the encoder was not
    trained (the ``umap`` and ``pca`` maps).
    """
    means = {k[len("grad_") :]: float(np.mean(v)) for k, v in history.items() if k.startswith("grad_") and len(v)}
    total = sum(means.values())
    return {k: v / total for k, v in means.items()} if total > 0 else {}


__all__ = ["Fit", "TrainingEvent", "gradient_shares", "layout_note"]
