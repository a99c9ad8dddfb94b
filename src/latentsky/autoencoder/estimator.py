"""A scikit-learn-style estimator of latent maps of ESN readouts: :class:`LatentAutoencoder`.

``LatentAutoencoder().fit(EMBEDDINGS)`` trains on a stage-1 embeddings
directory (:mod:`latentsky.embed.runner`); ``fit(readouts, stats=...)`` on
arrays in memory.  ``transform`` gives latent coordinates, ``inverse_transform``
readouts; ``save``/``load`` use the native ``.keras`` format.  The ``map``
parameter chooses the kind of map (:mod:`latentsky.autoencoder.maps`); a bare
``LatentAutoencoder()`` makes the recommended one, the pipeline's default
(the choice and its measurements: ``docs/decisions/``).

The pieces: :mod:`.sources` (where rows come from), :mod:`.datasets`
(minibatch pipelines), :mod:`.lbfgs` (full-batch L-BFGS), :mod:`.graphs`
(neighbour graphs, umap-learn), :mod:`.fitting` (the phases of each kind),
:mod:`.events` (progress).  TensorFlow is imported by ``fit``/``load``, not by
importing this module.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from latentsky.autoencoder.events import TrainingEvent, _keras
from latentsky.autoencoder.fitting import DETERMINISM, data_scale
from latentsky.autoencoder.maps import DEFAULT_KIND, END_TO_END
from latentsky.autoencoder.params import check_params
from latentsky.exceptions import AutoencoderError

log = logging.getLogger(__name__)

__all__ = ["LatentAutoencoder", "TrainingEvent"]

#: Training spectra from which ``validation_fraction=None`` holds out a tenth (fewer: none, the fit
#: stops on the training loss).
VALIDATE_FROM = 1000
#: Bytes per number of the float64 full-batch inputs (see ``_optimizer``).
_F8 = 8


class LatentAutoencoder(TransformerMixin, BaseEstimator):
    """Compress ESN readouts to a latent map: the model-coupled autoencoder and its baselines.

    The defaults are the recommended settings, and the pipeline's (``latentsky
    pipeline``, the app's Train step); they were chosen on the bundled sample
    by neighbour resemblance and confirmed on other data (``docs/decisions/``).

    Parameters
    ----------
    map : {"hybrid", "coupled", "umap", "euclidean", "pca"}
        The kind of map (:mod:`latentsky.autoencoder.maps`): the
        model-coupled autoencoder with (``hybrid``) or without (``coupled``)
        a neighbour term on the cross-prediction graph (the default is the
        one of these two with the best neighbour resemblance on the bundled
        sample, ``maps.DEFAULT_KIND``), or a baseline: UMAP or PCA of the
        readouts with a model-coupled decoder, the Euclidean autoencoder.
    n_latent : int
        Latent dimensions (2 for a map).
    hidden : tuple of int
        Hidden layer sizes of the encoder (the decoder mirrors them).
    activation : str
        Activation of the hidden layers.
    normalise : {"n_steps", "yty", "floor", "none"}
        Per-spectrum normalisation of the coupled loss
        (:mod:`latentsky.autoencoder.coupled`).
    whiten : {"auto", "metric", "std", "split"}
        The networks' coordinates: readouts whitened by the square root of the
        mean data-space metric (``metric``, well conditioned for the coupled
        loss), standardised per weight (``std``), or standardised into the
        encoder and metric-whitened out of the decoder (``split``).  "auto":
        ``metric`` for the coupled maps, ``std`` for the Euclidean one,
        ``split`` for ``umap`` and ``pca``.
    optimizer : {"auto", "lbfgs", "adam"}
        Full-batch L-BFGS in float64 (as the method's reference code), or
        minibatch Adam (streams data of any size).  "auto": L-BFGS when the
        float64 training inputs (about 52 kB per spectrum for N = 100) fit in
        ``memory_limit_mb``, else Adam.
    restarts : int
        End-to-end maps: random starts trained, the one with the lowest
        training loss kept.
    max_iter : int
        L-BFGS iterations at most (per restart and phase).
    tol : float
        L-BFGS stops when an iteration lowers the loss by less than this.
    neighbour_weight : float
        ``hybrid``: weight of the neighbour term (UMAP's cross-entropy) beside
        the coupled loss (the mean data-space error per step, divided by
        ``data_scale``).
    n_neighbors : int
        Neighbours per spectrum of the neighbour graphs (``hybrid``:
        cross-prediction; ``umap``: Euclidean on standardised readouts).
    min_dist : float
        UMAP's ``min_dist``: how tightly neighbours may pack on the map.
    negative_rate : int
        Negative pairs per edge of the neighbour term.
    edges_per_spectrum : float
        Adam: graph edges drawn per spectrum of each batch (neighbour term).
    euclidean_weight : float
        Coupled maps: add this multiple of the Euclidean readout loss.
    weight_decay : float
        L2 penalty on the dense kernels.
    data_scale : "floor" or float
        The coupled loss term is the mean data-space error divided by this:
        "floor" (default), the stage-1 readouts' own mean error on the
        training rows, so the term counts in multiples of the best any readout
        does and ``weight_decay`` and ``neighbour_weight`` weigh the same on
        spectra of any flux scale (SDSS's errors are ~100 times HARPS's
        continuum-normalised ones); a number fixes it (1.0: the error itself).
        Ours: a constant factor, which leaves the coupled loss's minimiser
        alone when it is the only term.
    learning_rate, epochs, batch_size, patience, lr_patience
        Adam: step size, epochs at most (per restart and phase), spectra per
        step, epochs without improvement before stopping (best weights kept)
        and before halving the step (down to 1/64; 0: never).
    validation_fraction : float or None
        Fraction of the spectra held out (drawn with ``random_state``): Adam
        stops early on them, L-BFGS reports their loss.  None: 0.1 from
        1,000 spectra on, else 0.
    checkpoint_dir : path-like, optional
        Adam: where to keep the best weights during training.
    chunk_rows : int, optional
        Spectra read per block (default: the Zarr chunking).
    in_memory : {"auto", True, False}
        Adam: prepare the float32 inputs in memory once, or stream them
        (bounded memory); "auto": in memory up to ``memory_limit_mb``.
    memory_limit_mb : float
        The limit of the "auto" choices.
    cache_dir : path-like, optional
        Adam, streaming from EMBEDDINGS: first write the prepared float32 inputs
        here and stream those (no decompression in later epochs).
    read_threads : int
        Adam, streaming: threads reading blocks ahead of training.
    jit_compile : bool
        Adam: compile the training step with XLA (not with ``deterministic``, nor after a deterministic fit
        in the same process: op determinism stays on).
    steps_per_execution : int
        Adam: training steps per call into TensorFlow.
    deterministic : bool
        Make TensorFlow ops deterministic (process-wide), so equal seeds give
        equal models.
    random_state : int
        Seed of the weights, the split, the graphs and the shuffling.
    progress : callable, optional
        Receives :class:`TrainingEvent` objects.

    Attributes
    ----------
    model_ : ReadoutAutoencoder
    n_features_in_ : int
    history_ : dict of lists
        Per step (epoch or iteration, every restart and phase): ``loss``,
        ``data_error``, ``grad_<term>``...
    n_epochs_ : int
        Steps trained in all.
    optimizer_ : str
        "lbfgs" or "adam".
    in_memory_ : bool
        Whether the training inputs were held in memory.
    restart_losses_ : list of float
        The final training loss of every restart.
    gradient_shares_ : dict
        Share of the encoder's gradient each loss term carried in the kept
        run (``data``, ``neighbour``, ``readout``, ``penalty``).
    """

    def __init__(
        self,
        map=DEFAULT_KIND,
        n_latent=2,
        hidden=(128,),
        activation="tanh",
        normalise="n_steps",
        whiten="auto",
        optimizer="auto",
        restarts=3,
        max_iter=1000,
        tol=1e-10,
        neighbour_weight=3.0,
        n_neighbors=5,
        min_dist=0.1,
        negative_rate=5,
        edges_per_spectrum=32,
        euclidean_weight=0.0,
        weight_decay=1e-6,
        data_scale="floor",
        learning_rate=1e-2,
        epochs=600,
        batch_size=32,
        validation_fraction=None,
        patience=60,
        lr_patience=10,
        checkpoint_dir=None,
        chunk_rows=None,
        in_memory="auto",
        memory_limit_mb=320,
        cache_dir=None,
        read_threads=2,
        jit_compile=True,
        steps_per_execution=16,
        deterministic=True,
        random_state=0,
        progress=None,
    ):
        self.map = map
        self.n_latent = n_latent
        self.hidden = hidden
        self.activation = activation
        self.normalise = normalise
        self.whiten = whiten
        self.optimizer = optimizer
        self.restarts = restarts
        self.max_iter = max_iter
        self.tol = tol
        self.neighbour_weight = neighbour_weight
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.negative_rate = negative_rate
        self.edges_per_spectrum = edges_per_spectrum
        self.euclidean_weight = euclidean_weight
        self.weight_decay = weight_decay
        self.data_scale = data_scale
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.lr_patience = lr_patience
        self.checkpoint_dir = checkpoint_dir
        self.chunk_rows = chunk_rows
        self.in_memory = in_memory
        self.memory_limit_mb = memory_limit_mb
        self.cache_dir = cache_dir
        self.read_threads = read_threads
        self.jit_compile = jit_compile
        self.steps_per_execution = steps_per_execution
        self.deterministic = deterministic
        self.random_state = random_state
        self.progress = progress

    # -- checks ------------------------------------------------------------
    # -- fitting -----------------------------------------------------------
    def fit(self, X, y=None, *, stats=None, layout=None):
        """Train on an EMBEDDINGS directory or on readouts in memory.

        Parameters
        ----------
        X : path-like, Embeddings or ndarray (n, N+1)
            An EMBEDDINGS directory written by :func:`latentsky.embed.runner.embed_store`
            (its statistics are used by the coupled loss), or readouts.
        y : ignored
        stats : ReadoutStatistics, optional
            The statistics of in-memory readouts (Gram full or packed); needed
            by every map but ``euclidean``.
        layout : ndarray (n, n_latent), optional
            ``map="umap"`` only: the spectra's points on a map made otherwise
            (a map of the flux, say), used instead of umap-learn's layout: the
            decoder is then fitted to the coupled loss from exactly these
            points, which scores how much of the data-space information that
            map keeps.  Needs ``validation_fraction=0``.

        Returns
        -------
        self
        """
        check_params(self)
        keras = _keras()
        import tensorflow as tf

        from latentsky.autoencoder import sources
        from latentsky.autoencoder.events import Tracker
        from latentsky.autoencoder.fitting import Fit, gradient_shares, layout_note
        from latentsky.autoencoder.graphs import umap_ab

        source = sources.as_source(X, stats, self.chunk_rows)
        if self.map != "euclidean" and not source.has_statistics:
            raise AutoencoderError(
                f"parameter map={self.map!r} needs the stage-1 statistics: pass an EMBEDDINGS "
                "directory, or readouts with stats=ReadoutStatistics"
            )
        n = source.n
        if n < 2:
            raise AutoencoderError(f"parameter X: need at least 2 spectra to train, got {n}")
        seed = int(self.random_state) if self.random_state is not None else 0
        keras.utils.set_random_seed(seed)
        if self.deterministic:
            # process-wide, and TensorFlow has no public switch back
            tf.config.experimental.enable_op_determinism()
            DETERMINISM["on"] = True
        fraction = self.validation_fraction
        if fraction is None:
            fraction = 0.1 if n >= VALIDATE_FROM else 0.0
        n_val = min(int(round(fraction * n)), n - 1)
        val = np.zeros(n, dtype=bool)
        val[np.random.default_rng(seed).choice(n, size=n_val, replace=False)] = True
        train = ~val

        if layout is not None:
            layout = np.asarray(layout, dtype="f8")
            if self.map != "umap" or n_val or layout.shape != (n, int(self.n_latent)):
                raise AutoencoderError(
                    f"parameter layout: needs map='umap', no validation rows and shape "
                    f"({n}, {self.n_latent}); got map={self.map!r}, {n_val} validation rows, "
                    f"shape {layout.shape}"
                )
        optimizer = self._optimizer(source, int(train.sum()))
        end_to_end = self.map in END_TO_END
        steps = int(self.max_iter if optimizer == "lbfgs" else self.epochs) * (int(self.restarts) if end_to_end else 1)
        tracker = Tracker(self.progress, steps, "iterations" if optimizer == "lbfgs" else "epochs")
        tracker.emit("preparing the training data")
        job = Fit(self, source, train, val, seed, optimizer, tracker)
        job.mean, job.std, job.cov = sources.moments(source, train)
        if source.has_statistics:
            job.metric, ridge, floor = sources.mean_metric(source, train, self.normalise)
            job.data_scale = data_scale(self.data_scale, floor)
            top = float(np.linalg.eigvalsh(job.metric)[-1])
            # the ridge of stage 1 is the curvature below which a direction does not matter
            job.metric_floor = ridge if ridge else 1e-6 * top
        if self.map in ("hybrid", "umap"):
            job.umap_ab = umap_ab(self.min_dist)
        job.stream_source, job.in_memory = source, True
        if optimizer == "adam":
            job.in_memory = self._in_memory(source)
            if not job.in_memory and self.cache_dir is not None and source.has_statistics and source.path is not None:
                job.stream_source = sources.CachedSource.build(source, self.cache_dir, self.normalise)
        if self.map == "hybrid" and self.neighbour_weight:
            job.prepare_neighbours()

        whiten = self.whiten
        if whiten == "auto":
            whiten = {"euclidean": "std", "umap": "split", "pca": "split"}.get(self.map, "metric")
        if end_to_end:
            loss = "euclidean" if self.map == "euclidean" else "coupled"
            model, out, losses = job.end_to_end(loss, whiten)
        else:
            model, out, losses = job.fixed_map(self.map, whiten, layout)
        tracker.finish()

        self.model_ = model
        self.n_features_in_ = source.m
        self.history_ = tracker.history
        self.n_epochs_ = tracker.done
        self.n_train_, self.n_val_ = int(train.sum()), int(n_val)
        self.optimizer_ = optimizer
        self.in_memory_ = job.in_memory
        self.restart_losses_ = [float(v) for v in losses]
        self.gradient_shares_ = gradient_shares(out["history"]) if end_to_end else {}
        self.fit_summary_ = {
            k: out[k] for k in ("loss", "val_loss", "n_iter", "n_eval", "n_steps", "message", "layout_mse") if k in out
        }
        # what the coupled term was divided by (stage-1 floor, normalised flux squared per step)
        self.fit_summary_["data_scale"] = float(job.data_scale)
        note = layout_note(self.map, self.gradient_shares_)
        if note:
            self.fit_summary_["layout_note"] = note
            log.warning("the %s map: %s", self.map, note)
        model.meta = self._meta()
        log.info(
            "trained the %s map (%s) on %d spectra (%d held out): %d steps, training loss %.6g",
            self.map,
            optimizer,
            self.n_train_,
            n_val,
            self.n_epochs_,
            out["loss"],
        )
        return self

    def _optimizer(self, source, n_train: int) -> str:
        """The optimiser of this fit: the parameter, or for "auto" L-BFGS when its float64 inputs fit the limit."""
        if self.optimizer != "auto":
            return self.optimizer
        from latentsky.autoencoder.coupled import gram_block_index

        gram = sum(len(ix) for ix in gram_block_index(source.m)) if source.has_statistics else 0
        per_row = _F8 * (2 * source.m + 1 + gram)
        return "lbfgs" if n_train * per_row <= self.memory_limit_mb * 2**20 else "adam"

    def _in_memory(self, source) -> bool:
        """Adam: whether to prepare all float32 rows in memory (the ``in_memory`` parameter; "auto": when they fit)."""
        if self.in_memory != "auto":
            return bool(self.in_memory)
        from latentsky.autoencoder.coupled import gram_block_index

        gram = sum(len(ix) for ix in gram_block_index(source.m)) if source.has_statistics else 0
        per_row = 4 * (2 * source.m + 1 + gram)
        return source.n * per_row <= self.memory_limit_mb * 2**20

    def _meta(self) -> dict:
        params = {k: v for k, v in self.get_params().items() if k != "progress"}
        params["hidden"] = list(params["hidden"])
        for k in ("checkpoint_dir", "cache_dir"):
            params[k] = None if params[k] is None else str(params[k])
        return {
            "params": params,
            "history": self.history_,
            "n_train": self.n_train_,
            "n_val": self.n_val_,
            "optimizer": self.optimizer_,
            "restart_losses": self.restart_losses_,
            "gradient_shares": self.gradient_shares_,
            "fit": self.fit_summary_,
        }

    # -- using the model ---------------------------------------------------
    def _check_fitted(self):
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "model_")

    def _readout_blocks(self, X):
        from latentsky.embed.layout import Embeddings, open_embeddings

        if isinstance(X, (str, os.PathLike)):
            X = open_embeddings(X)
        if isinstance(X, Embeddings):
            rows = X.readout.chunks[0]
            for s in range(0, len(X), rows):
                yield np.asarray(X.readout[s : s + rows], dtype="f4")
            return
        X = np.asarray(X, dtype="f4")
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise AutoencoderError(
                f"parameter X: expected readouts of shape (n, {self.n_features_in_}), got shape {X.shape}"
            )
        for s in range(0, len(X), 8192):
            yield X[s : s + 8192]

    def transform(self, X):
        """Latent coordinates (n, n_latent) of readouts or of an EMBEDDINGS directory."""
        self._check_fitted()
        out = [self.model_.encode(b).numpy() for b in self._readout_blocks(X)]
        return np.concatenate(out) if out else np.zeros((0, self.n_latent), dtype="f4")

    def inverse_transform(self, Z):
        """Reconstructed readouts (n, N+1) of latent coordinates (n, n_latent)."""
        self._check_fitted()
        Z = np.asarray(Z, dtype="f4")
        if Z.ndim != 2 or Z.shape[1] != self.model_.n_latent:
            raise AutoencoderError(f"parameter Z: expected shape (n, {self.model_.n_latent}), got {Z.shape}")
        out = [self.model_.decode(Z[s : s + 8192]).numpy() for s in range(0, len(Z), 8192)]
        return np.concatenate(out).astype("f8") if out else np.zeros((0, self.n_features_in_))

    def reconstruct(self, X):
        """Readouts passed through the autoencoder (float64)."""
        return self.inverse_transform(self.transform(X))

    # -- persistence -------------------------------------------------------
    def save(self, path) -> Path:
        """Write the trained model, its standardisation and these parameters to a ``.keras`` file."""
        self._check_fitted()
        path = Path(path)
        if path.suffix != ".keras":
            raise AutoencoderError(f"parameter path={str(path)!r}: the native Keras format needs a .keras name")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.model_.meta = self._meta()
        # write beside, then move: a crash never leaves a truncated model file
        tmp = path.with_name(f".{path.stem}.tmp.keras")
        self.model_.save(tmp)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path) -> "LatentAutoencoder":
        """Read an estimator written by :meth:`save`."""
        keras = _keras()
        from latentsky.autoencoder.model import ReadoutAutoencoder

        path = Path(path)
        if not path.is_file():
            raise AutoencoderError(f"{path}: no such model file")
        try:
            model = keras.saving.load_model(path, custom_objects={"ReadoutAutoencoder": ReadoutAutoencoder})
        except Exception as err:  # Keras raises many kinds; the file is what the user can act on
            raise AutoencoderError(f"{path}: not a readable latentsky model ({err})") from err
        if not isinstance(model, ReadoutAutoencoder):
            raise AutoencoderError(f"{path}: holds a {type(model).__name__}, not a latentsky ReadoutAutoencoder")
        meta = model.meta or {}
        params = dict(meta.get("params", {}))
        if "hidden" in params:
            params["hidden"] = tuple(params["hidden"])
        known = set(cls().get_params())
        unknown = sorted(set(params) - known)
        if unknown:
            raise AutoencoderError(
                f"{path}: a model of another latentsky version (parameters {', '.join(unknown)}); train it again"
            )
        est = cls(**params)
        est.model_ = model
        est.n_features_in_ = model.n_features
        est.history_ = meta.get("history", {})
        est.n_epochs_ = len(next(iter(est.history_.values()), []))
        est.n_train_, est.n_val_ = meta.get("n_train"), meta.get("n_val")
        est.optimizer_ = meta.get("optimizer")
        est.restart_losses_ = meta.get("restart_losses", [])
        est.gradient_shares_ = meta.get("gradient_shares", {})
        est.fit_summary_ = meta.get("fit", {})
        return est
