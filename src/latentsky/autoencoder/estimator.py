"""A scikit-learn-style estimator around :class:`~latentsky.autoencoder.model.ReadoutAutoencoder`.

``LatentAutoencoder().fit(EMBEDDINGS)`` trains on a stage-1 embeddings
directory (:mod:`latentsky.embed.runner`), streaming it chunk by chunk through
``tf.data`` so that the statistics (about 40 kB per spectrum for N = 100) need
not fit in memory; ``fit(readouts, stats=...)`` trains on arrays already in
memory.  ``transform`` gives latent coordinates, ``inverse_transform``
readouts; ``save``/``load`` use the native ``.keras`` format.

With ``neighbour_weight > 0`` (the pipeline's maps) a fit has two phases: the
map is laid out by UMAP's neighbour term on the encoder together with the
``layout_loss`` reconstruction, then the encoder is frozen and the decoder
alone is fitted to ``loss`` (the model-coupled data-space error) for at most
``decoder_epochs``; progress events and ``history_`` run on across both.

TensorFlow is imported by ``fit``/``load``, not by importing this module.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import numbers
import os
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from latentsky.exceptions import AutoencoderError
from latentsky.progress import ProgressEvent

log = logging.getLogger(__name__)

# Estimator parameters kept in the saved model, so `load` rebuilds the same estimator.
_PARAMS = ("n_latent", "hidden", "activation", "loss", "normalise", "whiten", "euclidean_weight", "neighbour_weight",
           "n_neighbors", "min_dist", "edges_per_spectrum", "decoder_epochs", "layout_loss", "layout_init", "layout_learning_rate",
           "weight_decay", "learning_rate", "epochs",
           "batch_size", "validation_fraction", "patience", "lr_patience", "checkpoint_dir", "chunk_rows", "in_memory", "memory_limit_mb", "cache_dir", "read_threads", "jit_compile", "steps_per_execution", "deterministic",
           "random_state")


@dataclasses.dataclass(frozen=True)
class TrainingEvent(ProgressEvent):
    """A :class:`~latentsky.progress.ProgressEvent` of task ``"train"`` that carries the epoch's losses.

    Attributes
    ----------
    logs : dict
        The Keras logs of the epoch (``loss``, ``data_error``, ``readout_mse``,
        ``val_loss``...), for loss curves.
    """

    logs: dict = dataclasses.field(default_factory=dict)


def _keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    return keras


def _progress_callback(progress, total_epochs: int):
    """A Keras callback emitting :class:`TrainingEvent` objects (task ``"train"``, unit ``"epochs"``).

    One instance follows every phase of a fit (``model.fit`` called more than
    once): epochs are counted on across them, and the ``finished`` event is
    sent when the phase with ``last = True`` ends.
    """
    import time

    keras = _keras()

    class TrainingProgress(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.history: dict[str, list[float]] = {}
            self._start = None
            self._epoch = 0
            self.last = True

        def _emit(self, message="", finished=False, logs=None):
            if progress is not None:
                progress(TrainingEvent("train", self._epoch, total_epochs, "epochs", message, finished,
                                       time.monotonic() - self._start, dict(logs or {})))

        def on_train_begin(self, logs=None):
            if self._start is None:
                self._start = time.monotonic()
                self._emit()

        def on_epoch_end(self, epoch, logs=None):
            logs = {k: float(v) for k, v in (logs or {}).items()}
            for k, v in logs.items():
                self.history.setdefault(k, []).append(v)
            self._epoch += 1
            msg = " ".join(f"{k} {logs[k]:.4g}" for k in ("loss", "val_loss") if k in logs)
            self._emit(msg, logs=logs)

        def on_train_end(self, logs=None):
            if not self.last:
                return
            stopped = self._epoch < total_epochs
            self._emit(f"stopped early at epoch {self._epoch}" if stopped else "", finished=True)

    return TrainingProgress()


class _Source:
    """Rows of readouts and (optionally) statistics, read block by block.

    Wraps either arrays in memory or an EMBEDDINGS directory on disk, so one
    batching code path serves both.
    """

    blocked_gram = False  # read() gives the packed triangle

    def __init__(self, readout, gram=None, xty=None, yty=None, n_steps=None, block_rows=256, ridge=None,
                 path=None):
        self.readout, self.gram, self.xty, self.yty, self.n_steps = readout, gram, xty, yty, n_steps
        self.block_rows = int(block_rows)
        self.ridge = ridge
        self.path = path

    @property
    def n(self) -> int:
        return self.readout.shape[0]

    @property
    def m(self) -> int:
        return self.readout.shape[1]

    @property
    def has_statistics(self) -> bool:
        return self.gram is not None

    def blocks(self):
        return [(s, min(s + self.block_rows, self.n)) for s in range(0, self.n, self.block_rows)]

    def read(self, start, stop, rows=None, *, normalise=None, statistics=True) -> dict:
        """Training inputs of rows ``start:stop`` (optionally the subset ``rows``, relative to ``start``)."""
        from latentsky.autoencoder.model import coupled_inputs

        def take(a):
            x = np.asarray(a[start:stop])
            return x if rows is None else x[rows]

        if statistics and self.has_statistics:
            return coupled_inputs(take(self.readout), take(self.gram), take(self.xty), take(self.yty),
                                  take(self.n_steps), normalise, ridge=self.ridge)
        return {"readout": take(self.readout).astype("f4")}


class _CachedSource(_Source):
    """The prepared float32 training inputs in raw files, read back block by block.

    Written in one pass over an EMBEDDINGS directory; later epochs then read
    ready float32 rows (about 26 kB per spectrum for N = 100) instead of
    decompressing and converting float64 Zarr chunks, several times faster.
    The Gram matrices are stored as the dense blocks the loss reads
    (:func:`~latentsky.autoencoder.model.gram_blocks`, one file each), so a
    read needs no reshuffling of columns.  Read with plain file reads (not
    memory maps), so the process's resident memory stays at a few blocks.
    """

    blocked_gram = True

    def __init__(self, directory: Path, n: int, m: int, block_rows: int):
        from latentsky.autoencoder.model import gram_block_index

        self.directory, self._n, self._m = Path(directory), int(n), int(m)
        self.block_rows = int(block_rows)
        self.index = gram_block_index(m)
        self.widths = {"readout": m, "resid": m, "floor": 1}
        self.widths.update({f"gram_{k}": len(ix) for k, ix in enumerate(self.index)})
        self.ridge, self.path = None, self.directory

    n = property(lambda self: self._n)
    m = property(lambda self: self._m)
    has_statistics = property(lambda self: True)

    @classmethod
    def build(cls, source: _Source, directory, normalise: str) -> "_CachedSource":
        """The cache of ``source`` in ``directory``, written unless an identical one is there."""
        from latentsky.autoencoder.model import split_gram
        from latentsky.store.lineage import fingerprint, read_lineage

        directory = Path(directory)
        lineage = read_lineage(source.path) if source.path is not None else None
        key = fingerprint({"embeddings": (lineage or {}).get("key") or str(source.path), "n": source.n,
                           "m": source.m, "normalise": normalise, "ridge": source.ridge, "layout": 2})
        meta = directory / "cache.json"
        cache = cls(directory, source.n, source.m, source.block_rows)
        if meta.exists() and json.loads(meta.read_text()).get("key") == key:
            return cache
        directory.mkdir(parents=True, exist_ok=True)
        meta.unlink(missing_ok=True)  # written last: a cache without it is incomplete
        handles = {f: open(directory / f"{f}.f4", "wb") for f in cache.widths}
        try:
            for s, e in source.blocks():
                part = source.read(s, e, None, normalise=normalise)
                part.update({f"gram_{k}": g for k, g in enumerate(split_gram(part.pop("gram"), cache.index))})
                for f, fh in handles.items():
                    fh.write(np.ascontiguousarray(part[f], dtype="f4").tobytes())
        finally:
            for fh in handles.values():
                fh.close()
        meta.write_text(json.dumps({"key": key, "n": source.n, "m": source.m}))
        return cache

    def read(self, start, stop, rows=None, *, normalise=None, statistics=True) -> dict:
        return self.read_ranges([(start, stop)], None if rows is None else np.asarray(rows), statistics=statistics)

    def read_ranges(self, ranges, take=None, *, statistics=True) -> dict:
        """Rows of several ``(start, stop)`` ranges, read straight into one buffer per field.

        ``take`` (indices into the concatenated ranges) selects and orders the
        rows; the Gram comes as the tuple of its blocks.
        """
        n = sum(e - s for s, e in ranges)
        out = {}
        for f in (self.widths if statistics else ("readout",)):
            w = self.widths[f]
            buf = np.empty(n * w, dtype="f4")
            at = 0
            with open(self.directory / f"{f}.f4", "rb") as fh:
                for s, e in ranges:
                    fh.seek(s * w * 4)
                    fh.readinto(memoryview(buf)[at * w:(at + e - s) * w])
                    at += e - s
            arr = buf.reshape(n, w) if w > 1 else buf
            out[f] = arr if take is None else arr[take]
        if statistics:
            out["gram"] = tuple(out.pop(f"gram_{k}") for k in range(len(self.index)))
        return out


def _as_source(X, stats, chunk_rows) -> _Source:
    """An EMBEDDINGS path / object, or readouts (+ ReadoutStatistics) -> _Source."""
    from latentsky.embed.runner import Embeddings, open_embeddings, pack_gram

    if isinstance(X, (str, os.PathLike)):
        X = open_embeddings(X)
    if isinstance(X, Embeddings):
        block = int(chunk_rows or X.readout.chunks[0])
        return _Source(X.readout, X.gram, X.xty, X.yty, X.n_steps, block_rows=block, ridge=_exact_ridge(X),
                       path=X.path)
    X = np.asarray(X, dtype="f8")
    if X.ndim != 2:
        raise AutoencoderError(f"parameter X: expected readouts of shape (n, N+1), got shape {X.shape}")
    if stats is None:
        return _Source(X, block_rows=chunk_rows or 4096)
    if len(stats) != len(X):
        raise AutoencoderError(f"parameter stats: {len(stats)} spectra, but X has {len(X)} readouts")
    if stats.gram.ndim == 3:
        if stats.gram.shape[-1] != X.shape[1]:
            raise AutoencoderError(f"parameter stats: Gram matrices are {stats.gram.shape[-1]} wide, "
                                   f"readouts {X.shape[1]}")
        gram = pack_gram(stats.gram)
    else:
        gram = stats.gram
    return _Source(X, gram, stats.xty, stats.yty, stats.n_steps, block_rows=chunk_rows or 4096)


def _exact_ridge(emb, rows: int = 64) -> float | None:
    """The ridge of the stored readouts when they solve ``(G + ridge I) w = h`` (checked on a few rows).

    Then the coupled inputs need no unpacked Gram matrix (see
    :func:`~latentsky.autoencoder.model.coupled_inputs`); otherwise None.
    """
    from latentsky.embed.runner import unpack_gram

    ridge = emb.attrs.get("ridge")
    if ridge is None:
        return None
    w = np.asarray(emb.readout[:rows], dtype="f8")
    g = unpack_gram(np.asarray(emb.gram[:rows], dtype="f8"), w.shape[1])
    h = np.asarray(emb.xty[:rows], dtype="f8")
    gap = h - np.einsum("nij,nj->ni", g, w) - float(ridge) * w
    if np.max(np.abs(gap)) <= 1e-8 * max(1.0, float(np.max(np.abs(h)))):
        return float(ridge)
    log.warning("%s: readouts are not the ridge solutions of the stored statistics; using the slower "
                "general form of the coupled loss", emb.path)
    return None


class LatentAutoencoder(TransformerMixin, BaseEstimator):
    """Compress ESN readouts to a latent map with the model-coupled autoencoder.

    Parameters
    ----------
    n_latent : int
        Latent dimensions (2 for a map).
    hidden : tuple of int
        Hidden layer sizes of the encoder (the decoder mirrors them).
    activation : str
        Activation of the hidden layers.
    loss : {"coupled", "euclidean"}
        Train on the data-space squared error (needs the stage-1 statistics)
        or on the readouts' Euclidean distance (the baseline).
    normalise : {"n_steps", "yty", "floor", "none"}
        Per-spectrum normalisation of the coupled loss (see
        :mod:`latentsky.autoencoder.model`).
    whiten : {"auto", "std", "metric", "split"}
        How readouts are scaled for the networks: each weight to unit variance,
        or by the square root of the mean data-space metric (see
        :meth:`ReadoutAutoencoder.set_metric`; needs the statistics), or
        "split": standardised into the encoder, metric-whitened out of the
        decoder.  "auto": "metric" for the coupled loss, "std" for the
        Euclidean one (of the layout phase; a coupled decoder phase after a
        Euclidean layout moves the decoder's output to metric coordinates).
        On the bundled sample "metric" lowered the coupled autoencoder's
        excess data-space error from 0.0025 to 0.0015 and halved the epochs.
    euclidean_weight : float
        With ``loss="coupled"``, add this multiple of the Euclidean readout loss.
    neighbour_weight : float
        Add this multiple of UMAP's neighbour cross-entropy on the latent
        points (see :mod:`latentsky.autoencoder.model`), so that spectra
        whose readouts are neighbours stay neighbours on the map; 0: none.
    n_neighbors : int
        Neighbours per spectrum of the fuzzy graph of the standardised
        readouts (umap-learn's ``fuzzy_simplicial_set``; capped at n - 1).
    min_dist : float
        UMAP's ``min_dist``: how tightly neighbours may pack on the map.
    edges_per_spectrum : float
        Graph edges drawn (with probability proportional to their weight) per
        spectrum of each training batch.
    decoder_epochs : int, optional
        With the neighbour term: after the joint training, at most this many
        epochs of the decoder alone on the reconstruction loss, the encoder
        (the map) frozen (None: ``epochs``); 0 skips it.
    layout_loss : {None, "coupled", "euclidean"}
        With the neighbour term: the reconstruction loss of the joint phase,
        which lays out the map (None: ``loss``).  ``"euclidean"`` with
        ``loss="coupled"`` lays the map out on the standardised readouts (the
        coordinates of the neighbour graph) and then fits the decoder to the
        data-space error.
    layout_init : {"random", "umap"}
        With the neighbour term: where the joint phase starts.  ``"random"``:
        from Keras's initial weights.  ``"umap"``: the encoder is first
        regressed onto umap-learn's layout of the same neighbour graph (its
        sequential SGD, annealed over 200-500 epochs, settles neighbourhoods
        more finely than minibatch Adam does), and the joint phase refines
        that map with the neighbour and reconstruction losses.
    layout_learning_rate : float, optional
        With the neighbour term: the Adam step size of the joint phase
        (None: ``learning_rate``); a map
        started from umap-learn's layout is refined with a smaller step than
        the decoder is fitted with.
    weight_decay : float
        L2 penalty on the dense kernels.
    learning_rate : float
        Adam step size.
    epochs : int
        Maximum number of epochs.
    batch_size : int
        Spectra per gradient step.
    validation_fraction : float
        Fraction of the spectra held out (drawn with ``random_state``) to stop
        early on; 0 trains on all and stops on the training loss.
    patience : int
        Epochs without improvement before stopping (the best weights are kept).
    lr_patience : int
        Epochs without improvement before the learning rate is halved (down
        to 1/64 of ``learning_rate``); 0 keeps it constant.
    checkpoint_dir : path-like, optional
        Where to keep the best weights during training (``best.weights.h5``).
    chunk_rows : int, optional
        Spectra read per block when streaming (default: the Zarr chunking).
    in_memory : {"auto", True, False}
        Prepare all training inputs in memory once (fast), or stream them
        from the EMBEDDINGS directory every epoch (bounded memory); "auto"
        keeps them in memory when they take at most ``memory_limit_mb``.
    memory_limit_mb : float
        The limit of ``in_memory="auto"`` (the coupled inputs take about
        26 kB per spectrum for N = 100: the Gram blocks and three short rows;
        the default keeps the pipeline's training sample of 10,000 in memory).
    cache_dir : path-like, optional
        When streaming from an EMBEDDINGS directory, first write the prepared
        float32 inputs here (one pass, about 26 kB per spectrum for N = 100;
        reused while the embeddings and ``normalise`` are unchanged) and
        stream those: no decompression or conversion in later epochs.
    read_threads : int
        Threads reading and preparing blocks ahead of training when streaming.
    jit_compile : bool
        Compile the training step with XLA (faster on CPU after a second or
        two of compilation); Keras allows it only with ``deterministic=False``.
    steps_per_execution : int
        Training steps run per call into TensorFlow (Keras's ``compile``
        option): a step on a batch takes a few milliseconds, and Keras's
        Python loop around each call cost about as much again.  With 16,
        100,000 readouts in memory train about 1.5x faster per epoch
        (bench/train.py).  Every batch still gets its step, but Keras reads
        one element ahead at each epoch's end, so later epochs' shuffles,
        and with them the model of a given seed, differ from those of 1
        (reproducibly).
    deterministic : bool
        Make TensorFlow ops deterministic (``enable_op_determinism``), so that
        equal seeds give equal models.  The switch is process-wide and stays
        on for later fits.
    random_state : int
        Seed of the weights, the split and the shuffling.
    progress : callable, optional
        Receives :class:`TrainingEvent` objects.

    Attributes
    ----------
    model_ : ReadoutAutoencoder
    n_features_in_ : int
    history_ : dict of lists
        Per-epoch losses (``loss``, ``data_error``, ``val_loss``...).
    n_epochs_ : int
    in_memory_ : bool
        Whether the training inputs were held in memory.
    """

    def __init__(self, n_latent=2, hidden=(64,), activation="tanh", loss="coupled", normalise="n_steps",
                 whiten="auto", euclidean_weight=0.0, neighbour_weight=0.0, n_neighbors=15, min_dist=0.1,
                 edges_per_spectrum=4.0, decoder_epochs=None, layout_loss=None, layout_init="random", layout_learning_rate=None,
                 weight_decay=1e-4, learning_rate=3e-3, epochs=300, batch_size=32, validation_fraction=0.15,
                 patience=30, lr_patience=10, checkpoint_dir=None, chunk_rows=None, in_memory="auto",
                 memory_limit_mb=320, cache_dir=None, read_threads=2, jit_compile=True, steps_per_execution=16,
                 deterministic=True, random_state=0, progress=None):
        self.n_latent = n_latent
        self.hidden = hidden
        self.activation = activation
        self.loss = loss
        self.normalise = normalise
        self.euclidean_weight = euclidean_weight
        self.neighbour_weight = neighbour_weight
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.edges_per_spectrum = edges_per_spectrum
        self.decoder_epochs = decoder_epochs
        self.layout_loss = layout_loss
        self.layout_init = layout_init
        self.layout_learning_rate = layout_learning_rate
        self.whiten = whiten
        self.weight_decay = weight_decay
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
        self.jit_compile = jit_compile
        self.steps_per_execution = steps_per_execution
        self.read_threads = read_threads
        self.cache_dir = cache_dir
        self.deterministic = deterministic
        self.random_state = random_state
        self.progress = progress

    # -- checks ------------------------------------------------------------
    def _check_params(self):
        from latentsky.autoencoder.model import LOSSES, NORMALISATIONS

        def check(name, ok, what):
            if not ok:
                raise AutoencoderError(f"parameter {name}={getattr(self, name)!r}: {what}")

        check("n_latent", isinstance(self.n_latent, numbers.Integral) and self.n_latent >= 1,
              "must be a positive integer")
        check("hidden", all(isinstance(h, numbers.Integral) and h >= 1 for h in self.hidden),
              "must be a sequence of positive integers")
        check("loss", self.loss in LOSSES, f"must be one of {LOSSES}")
        check("normalise", self.normalise in NORMALISATIONS, f"must be one of {NORMALISATIONS}")
        check("weight_decay", isinstance(self.weight_decay, numbers.Real) and self.weight_decay >= 0,
              "must be >= 0")
        check("learning_rate", isinstance(self.learning_rate, numbers.Real) and self.learning_rate > 0,
              "must be > 0")
        check("epochs", isinstance(self.epochs, numbers.Integral) and self.epochs >= 1, "must be >= 1")
        check("batch_size", isinstance(self.batch_size, numbers.Integral) and self.batch_size >= 1,
              "must be >= 1")
        check("validation_fraction", isinstance(self.validation_fraction, numbers.Real)
              and 0 <= self.validation_fraction < 1, "must be in [0, 1)")
        check("steps_per_execution", isinstance(self.steps_per_execution, numbers.Integral)
              and self.steps_per_execution >= 1, "must be an integer >= 1")
        check("patience", isinstance(self.patience, numbers.Integral) and self.patience >= 0, "must be >= 0")
        check("neighbour_weight", isinstance(self.neighbour_weight, numbers.Real) and self.neighbour_weight >= 0,
              "must be >= 0")
        check("n_neighbors", isinstance(self.n_neighbors, numbers.Integral) and self.n_neighbors >= 2,
              "must be an integer >= 2")
        check("min_dist", isinstance(self.min_dist, numbers.Real) and 0 <= self.min_dist <= 1, "must be in [0, 1]")
        check("layout_init", self.layout_init in ("random", "umap"), "must be 'random' or 'umap'")
        check("layout_learning_rate", self.layout_learning_rate is None
              or (isinstance(self.layout_learning_rate, numbers.Real) and self.layout_learning_rate > 0),
              "must be None or > 0")
        check("layout_loss", self.layout_loss is None or self.layout_loss in LOSSES, f"must be None or one of {LOSSES}")
        check("decoder_epochs", self.decoder_epochs is None
              or (isinstance(self.decoder_epochs, numbers.Integral) and self.decoder_epochs >= 0),
              "must be None or an integer >= 0")
        check("edges_per_spectrum", isinstance(self.edges_per_spectrum, numbers.Real) and self.edges_per_spectrum > 0,
              "must be > 0")

    # -- data --------------------------------------------------------------
    def _dataset(self, source: _Source, mask: np.ndarray, *, shuffle: bool, seed: int, statistics: bool,
                 in_memory: bool):
        """A ``tf.data`` pipeline of batches over the rows where ``mask`` is True.

        Batches are dictionaries of float32 tensors: ``readout``, and with the
        statistics ``resid``, ``floor`` and ``gram``, the tuple of dense Gram
        blocks of :func:`~latentsky.autoencoder.model.gram_blocks`.

        In memory, the rows are prepared once into TensorFlow variables (one
        copy, filled block by block) and every batch is a ``tf.gather`` of
        shuffled row indices, all inside TensorFlow: no Python per batch.
        Streaming, blocks of rows are read in a shuffled order on worker
        threads, a few at a time, shuffled together and handed to ``tf.data``,
        which cuts them into batches and the Gram triangles into blocks: only
        those blocks of rows are in memory.
        """
        import tensorflow as tf

        from latentsky.autoencoder.model import gram_block_index, gram_blocks, split_gram

        batch = int(self.batch_size)
        normalise = self.normalise
        blocks = [(s, e) for s, e in source.blocks() if mask[s:e].any()]
        m = source.m
        index = gram_block_index(m, gram_blocks(m))
        spec = {"readout": tf.TensorSpec((None, m), tf.float32)}
        if statistics:
            spec.update(gram=tuple(tf.TensorSpec((None, len(ix)), tf.float32) for ix in index),
                        resid=tf.TensorSpec((None, m), tf.float32), floor=tf.TensorSpec((None,), tf.float32))
        n_rows = int(sum(mask[s:e].sum() for s, e in blocks))
        n_batches = int(np.ceil(n_rows / batch))

        if in_memory:
            def read(s, e):
                part = source.read(s, e, np.flatnonzero(mask[s:e]), normalise=normalise, statistics=statistics)
                if statistics and not source.blocked_gram:
                    part["gram"] = split_gram(part["gram"], index)
                return part

            def holder(sp):  # zeros are not written until assigned: one copy of the data in memory
                return tf.Variable(tf.zeros((n_rows,) + tuple(sp.shape[1:])), trainable=False)

            store = {k: [holder(x) for x in sp] if isinstance(sp, tuple) else holder(sp) for k, sp in spec.items()}
            at = 0
            for s, e in blocks:
                part = read(s, e)
                k = len(part["readout"])
                rows = tf.range(at, at + k)
                for key, v in part.items():
                    for var, x in (zip(store[key], v) if isinstance(v, tuple) else [(store[key], v)]):
                        # a scatter writes in place (a sliced assign here copied the whole variable first)
                        var.scatter_update(tf.IndexedSlices(x, rows))
                at += k

            def gather(rows):
                return {k: (tuple(tf.gather(x, rows) for x in v) if isinstance(v, list) else tf.gather(v, rows))
                        for k, v in store.items()}

            ds = tf.data.Dataset.range(n_rows)
            if shuffle:
                ds = ds.shuffle(n_rows, seed=seed, reshuffle_each_iteration=True)
            return ds.batch(batch).map(gather).prefetch(2)

        rng = np.random.default_rng(seed)
        # read enough blocks at once to mix a few batches' worth of rows
        per_read = max(1, int(np.ceil(max(4 * batch, 2048) / source.block_rows)))
        ix = [tf.constant(i) for i in index]

        def read_group(keys, perm):
            """Rows of these blocks, prepared, joined and shuffled: on a worker thread."""
            if source.blocked_gram:  # the cache: read into one buffer, select and shuffle in one copy
                ranges = [blocks[k] for k in keys]
                return source.read_ranges(ranges, np.flatnonzero(np.concatenate([mask[s:e] for s, e in ranges]))[perm],
                                          statistics=statistics)
            parts = [source.read(*blocks[k], np.flatnonzero(mask[slice(*blocks[k])]), normalise=normalise,
                                 statistics=statistics) for k in keys]
            return {k: np.concatenate([q[k] for q in parts])[perm] for k in parts[0]}

        def generate():
            from concurrent.futures import ThreadPoolExecutor

            order = rng.permutation(len(blocks)) if shuffle else np.arange(len(blocks))
            groups = [order[g:g + per_read] for g in range(0, len(order), per_read)]
            # the shuffles are drawn here, in order, so that the threads cannot change them
            sizes = [int(sum(mask[slice(*blocks[k])].sum() for k in g)) for g in groups]
            perms = [rng.permutation(n) if shuffle else np.arange(n) for n in sizes]
            # Read (decompress, prepare) the next groups on worker threads while this one is
            # trained on: Zarr's codecs and NumPy release the GIL.
            with ThreadPoolExecutor(max_workers=self.read_threads) as pool:
                pending = [pool.submit(read_group, g, q) for g, q in zip(groups[:self.read_threads + 1],
                                                                          perms[:self.read_threads + 1])]
                for gi in range(len(groups)):
                    group = pending[gi].result()
                    pending[gi] = None
                    nxt = gi + self.read_threads + 1
                    if nxt < len(groups):
                        pending.append(pool.submit(read_group, groups[nxt], perms[nxt]))
                    yield group

        def to_blocks(part):
            # the dense Gram blocks, cut in TensorFlow's threads (no Python, no GIL)
            return {**part, "gram": tuple(tf.gather(part["gram"], i, axis=1) for i in ix)}

        cut = statistics and not source.blocked_gram
        packed = dict(spec)
        if cut:
            packed["gram"] = tf.TensorSpec((None, m * (m + 1) // 2), tf.float32)
        # groups in, full batches out (every batch but the last of the epoch is full)
        ds = tf.data.Dataset.from_generator(generate, output_signature=packed).rebatch(batch)
        if cut:
            ds = ds.map(to_blocks, num_parallel_calls=2)
        ds = ds.apply(tf.data.experimental.assert_cardinality(n_batches))
        return ds.prefetch(2)

    # -- fitting -----------------------------------------------------------
    def fit(self, X, y=None, *, stats=None):
        """Train on an EMBEDDINGS directory (streamed) or on readouts in memory.

        Parameters
        ----------
        X : path-like, Embeddings or ndarray (n, N+1)
            An EMBEDDINGS directory written by :func:`latentsky.embed.runner.embed_store`
            (its statistics are used by the coupled loss), or readouts.
        y : ignored
        stats : ReadoutStatistics, optional
            The statistics of in-memory readouts (Gram full or packed); needed
            by ``loss="coupled"``.

        Returns
        -------
        self
        """
        self._check_params()
        keras = _keras()
        import tensorflow as tf

        from latentsky.autoencoder.model import ReadoutAutoencoder

        source = _as_source(X, stats, self.chunk_rows)
        if self.loss == "coupled" and not source.has_statistics:
            raise AutoencoderError("parameter loss='coupled' needs the stage-1 statistics: pass an EMBEDDINGS "
                                   "directory, or readouts with stats=ReadoutStatistics")
        n = source.n
        if n < 2:
            raise AutoencoderError(f"parameter X: need at least 2 spectra to train, got {n}")
        seed = int(self.random_state) if self.random_state is not None else 0
        keras.utils.set_random_seed(seed)
        if self.deterministic:
            # process-wide, and TensorFlow has no public switch back
            tf.config.experimental.enable_op_determinism()

        rng = np.random.default_rng(seed)
        n_val = int(round(self.validation_fraction * n))
        n_val = min(n_val, n - 1)
        val = np.zeros(n, dtype=bool)
        val[rng.choice(n, size=n_val, replace=False)] = True
        train = ~val

        mean, std = self._moments(source, train)
        umap_ab = self._umap_ab() if self.neighbour_weight else {}
        # the reconstruction loss of the phase that lays out the map (the only phase without the neighbour term)
        layout_loss = (self.layout_loss or self.loss) if self.neighbour_weight else self.loss
        if layout_loss == "coupled" and not source.has_statistics:
            raise AutoencoderError("parameter layout_loss='coupled' needs the stage-1 statistics")
        model = ReadoutAutoencoder(source.m, n_latent=self.n_latent, hidden=tuple(self.hidden),
                                   activation=self.activation, loss_kind=layout_loss,
                                   weight_decay=self.weight_decay, euclidean_weight=self.euclidean_weight,
                                   neighbour_weight=self.neighbour_weight, **umap_ab)
        whiten = self.whiten
        if whiten == "auto":
            whiten = "metric" if layout_loss == "coupled" else "std"
        metric = None
        if source.has_statistics and (whiten in ("metric", "split") or layout_loss != self.loss):
            metric = self._mean_metric(source, train)
        if whiten in ("metric", "split"):
            if not source.has_statistics:
                raise AutoencoderError(f"parameter whiten={whiten!r} needs the stage-1 statistics")
            model.set_metric(mean, std, metric,
                             encoder_input="std" if whiten == "split" else "metric")
        elif whiten == "std":
            model.set_standardisation(mean, std)
        else:
            raise AutoencoderError(f"parameter whiten={self.whiten!r}: must be 'auto', 'std', 'metric' or 'split'")

        statistics = source.has_statistics
        in_memory = self._in_memory(source)
        readout_rows = source  # the stage-1 readouts, for the neighbour graph
        if not in_memory and self.cache_dir is not None and statistics and source.path is not None:
            source = _CachedSource.build(source, self.cache_dir, self.normalise)
        train_ds = self._dataset(source, train, shuffle=True, seed=seed, statistics=statistics, in_memory=in_memory)
        plain_ds = train_ds
        refine = (int(self.epochs if self.decoder_epochs is None else self.decoder_epochs)
                  if self.neighbour_weight else 0)

        def setting_up(message):
            # the set-up before the first epoch (seconds to a minute at 10,000 spectra) shows as epoch 0
            if self.progress is not None:
                self.progress(TrainingEvent("train", 0, int(self.epochs) + refine, "epochs", message))

        if self.neighbour_weight:
            setting_up("building the readouts' neighbour graph")
            w, x, graph = self._neighbour_graph(readout_rows, train, mean, std, seed)
            edges = self._edge_dataset(w, graph, seed, steps=int(train_ds.cardinality()))
            if self.layout_init == "umap":
                setting_up("starting the map from umap-learn's layout")
                mse = model.regress_encoder(w, self._umap_layout(x, graph, umap_ab, seed))
                log.info("map started from umap-learn's layout (encoder fitted to it: mean squared distance %.3g)",
                         mse)

            def merge(spectra, edge_batch):
                return {**spectra, **edge_batch}

            train_ds = tf.data.Dataset.zip((train_ds, edges)).map(merge)
        val_ds = (self._dataset(source, val, shuffle=False, seed=seed, statistics=statistics, in_memory=in_memory)
                  if n_val else None)
        monitor = "val_loss" if n_val else "loss"
        progress_cb = _progress_callback(self.progress, int(self.epochs) + refine)
        progress_cb.last = not refine
        layout_rate = self.learning_rate
        if self.neighbour_weight and self.layout_learning_rate is not None:
            layout_rate = self.layout_learning_rate
        model.compile(**self._compile_options(keras, layout_rate))
        model.fit(train_ds, validation_data=val_ds, epochs=int(self.epochs), verbose=0, shuffle=False,
                  callbacks=self._callbacks(monitor, progress_cb, layout_rate))
        if refine:
            # The map is laid out; now fit the decoder alone to the reconstruction loss (the batches
            # without edges): the latent points stay where the neighbour term put them.
            model.encoder.trainable = False
            pull, model.euclidean_weight = model.euclidean_weight, 0.0  # the decoder fits the loss alone
            if model.loss_kind != self.loss:
                model.loss_kind = self.loss
                if self.loss == "coupled" and self.whiten == "auto":
                    # the coupled loss is well conditioned in metric-whitened output coordinates
                    model.set_output_metric(metric)
            model.compile(**self._compile_options(keras))
            progress_cb.last = True
            model.fit(plain_ds, validation_data=val_ds, epochs=refine, verbose=0, shuffle=False,
                      callbacks=self._callbacks(monitor, progress_cb))
            model.encoder.trainable, model.euclidean_weight = True, pull
            # a fresh optimizer over all the weights, as `load` rebuilds it (this phase's covered the
            # decoder alone, and a saved model carrying it warned on every load)
            model.compile(**self._compile_options(keras))
            model.optimizer.build(model.trainable_variables)
        self.in_memory_ = in_memory

        self.model_ = model
        self.n_features_in_ = source.m
        self.history_ = progress_cb.history
        self.n_epochs_ = len(next(iter(self.history_.values()), []))
        self.n_train_, self.n_val_ = int(train.sum()), int(n_val)
        model.meta = self._meta()
        log.info("trained %s autoencoder on %d spectra (%d held out) for %d epochs; best %s %.4g",
                 self.loss, self.n_train_, n_val, self.n_epochs_, monitor,
                 min(self.history_.get(monitor, [np.nan])))
        return self

    def _compile_options(self, keras, learning_rate: float | None = None) -> dict:
        """``model.compile`` arguments of a phase: a fresh Adam (step ``learning_rate``, None: the
        parameter's), XLA unless deterministic, steps per call."""
        # Keras falls back from XLA (with a warning) when op determinism is on
        return {"optimizer": keras.optimizers.Adam(learning_rate or self.learning_rate),
                "jit_compile": bool(self.jit_compile) and not self.deterministic,
                "steps_per_execution": int(self.steps_per_execution)}

    def _callbacks(self, monitor: str, progress_cb, learning_rate: float | None = None) -> list:
        """Early stopping (best weights kept), learning-rate halving (from ``learning_rate``, None: the
        parameter's), checkpoints and progress of one phase."""
        keras = _keras()
        rate = learning_rate or self.learning_rate
        callbacks = [keras.callbacks.EarlyStopping(monitor=monitor, patience=int(self.patience),
                                                   restore_best_weights=True), progress_cb]
        if self.lr_patience:
            # halving the step when the loss stalls settles Adam into the narrow valleys of the
            # coupled loss (its Gram matrices have condition numbers ~1e6)
            callbacks.insert(0, keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=0.5,
                                                                  patience=int(self.lr_patience),
                                                                  min_lr=rate / 64))
        if self.checkpoint_dir is not None:
            ckpt = Path(self.checkpoint_dir)
            ckpt.mkdir(parents=True, exist_ok=True)
            callbacks.append(keras.callbacks.ModelCheckpoint(str(ckpt / "best.weights.h5"), monitor=monitor,
                                                             save_best_only=True, save_weights_only=True))
        return callbacks

    def _umap_ab(self) -> dict:
        """umap-learn's curve parameters of the latent similarity for ``min_dist``."""
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        from umap.umap_ import find_ab_params

        a, b = find_ab_params(1.0, float(self.min_dist))
        return {"umap_a": float(a), "umap_b": float(b)}

    def _neighbour_graph(self, source: _Source, rows: np.ndarray, mean, std, seed: int):
        """The training rows' readouts (float64), standardised readouts and fuzzy neighbour graph (COO, no loops).

        The graph is umap-learn's ``fuzzy_simplicial_set`` of the standardised
        readouts (as :class:`~latentsky.autoencoder.baselines.ReadoutUMAP` maps
        them).  The readouts (4(N+1) bytes per spectrum) are held in memory
        even when the statistics are streamed.
        """
        from scipy.sparse import coo_matrix
        from umap.umap_ import fuzzy_simplicial_set

        w = np.concatenate([np.asarray(source.readout[s:e], dtype="f8")[rows[s:e]] for s, e in source.blocks()
                            if rows[s:e].any()])
        x = (w - mean) / np.where(std > 0, std, 1.0)
        graph = fuzzy_simplicial_set(x, min(int(self.n_neighbors), len(w) - 1), np.random.RandomState(seed),
                                     "euclidean")[0].tocoo()
        keep = graph.row != graph.col
        graph = coo_matrix((graph.data[keep], (graph.row[keep], graph.col[keep])), shape=graph.shape)
        if not graph.nnz:
            raise AutoencoderError("parameter neighbour_weight: the training rows have no neighbour graph "
                                   "(fewer than 2 distinct readouts)")
        return w, x, graph

    def _umap_layout(self, x, graph, umap_ab: dict, seed: int) -> np.ndarray:
        """umap-learn's layout (n, n_latent) of the neighbour ``graph`` of the standardised readouts ``x``.

        umap-learn's own embedding step with its defaults (spectral start,
        SGD annealed from step 1 to 0 over 500 epochs, 200 from 10,000
        points on; 5 negatives per edge), single-threaded and seeded.
        """
        from umap.umap_ import simplicial_set_embedding

        z, _ = simplicial_set_embedding(x, graph.tocsr(), int(self.n_latent), 1.0, umap_ab["umap_a"],
                                        umap_ab["umap_b"], 1.0, 5, None, "spectral",
                                        np.random.RandomState(seed), "euclidean", {}, False, {}, False)
        return z

    def _edge_dataset(self, w: np.ndarray, graph, seed: int, *, steps: int):
        """Endless batches of edges (``head``, ``tail`` readouts) of the fuzzy neighbour ``graph`` of readouts ``w``.

        Each epoch's ``steps * edges`` draws are made once with probabilities
        proportional to the edge weights (UMAP samples an edge as often as its
        weight says) and reshuffled every epoch.
        """
        import tensorflow as tf

        head, tail, weight = graph.row, graph.col, graph.data.astype("f8")
        per_step = max(1, int(round(self.edges_per_spectrum * min(int(self.batch_size), len(w)))))
        pick = np.random.default_rng(seed + 1).choice(len(weight), size=per_step * steps, p=weight / weight.sum())
        pairs = np.stack([head[pick], tail[pick]], axis=1).astype("i4")
        table = tf.constant(w.astype("f4"))
        ds = tf.data.Dataset.from_tensor_slices(pairs).shuffle(len(pairs), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(per_step, drop_remainder=True).repeat()

        def ends(pair):
            return {"head": tf.gather(table, pair[:, 0]), "tail": tf.gather(table, pair[:, 1])}

        return ds.map(ends)

    def _in_memory(self, source: _Source) -> bool:
        """Whether to prepare all rows in memory (the ``in_memory`` parameter; "auto": when they fit the limit)."""
        if self.in_memory != "auto":
            return bool(self.in_memory)
        from latentsky.autoencoder.model import gram_block_index

        gram = sum(len(ix) for ix in gram_block_index(source.m)) if source.has_statistics else 0
        per_row = 4 * (2 * source.m + 1 + gram)
        return source.n * per_row <= self.memory_limit_mb * 2 ** 20

    def _mean_metric(self, source: _Source, rows: np.ndarray) -> np.ndarray:
        """Mean over ``rows`` of the normalised Gram matrices (the loss's average curvature), in float64."""
        from latentsky.embed.runner import unpack_gram

        total = np.zeros(source.m * (source.m + 1) // 2)
        k = 0
        for s, e in source.blocks():
            sel = np.flatnonzero(rows[s:e])
            if len(sel):
                # the prepared "gram" is packed and divided by each spectrum's divisor
                total += source.read(s, e, sel, normalise=self.normalise)["gram"].astype("f8").sum(0)
                k += len(sel)
        return unpack_gram(total / k, source.m)

    @staticmethod
    def _moments(source: _Source, rows: np.ndarray):
        """Mean and std of the readouts of ``rows``, accumulated block by block in float64."""
        s1 = np.zeros(source.m)
        s2 = np.zeros(source.m)
        k = 0
        for s, e in source.blocks():
            sel = rows[s:e]
            if not sel.any():
                continue
            w = np.asarray(source.readout[s:e], dtype="f8")[sel]
            s1 += w.sum(0)
            s2 += (w * w).sum(0)
            k += len(w)
        mean = s1 / k
        var = np.maximum(s2 / k - mean ** 2, 0.0)
        return mean, np.sqrt(var)

    def _meta(self) -> dict:
        params = {k: getattr(self, k) for k in _PARAMS}
        params["hidden"] = list(params["hidden"])
        for k in ("checkpoint_dir", "cache_dir"):
            params[k] = None if params[k] is None else str(params[k])
        return {"params": params, "history": self.history_, "n_train": self.n_train_, "n_val": self.n_val_}

    # -- using the model ---------------------------------------------------
    def _check_fitted(self):
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "model_")

    def _readout_blocks(self, X):
        from latentsky.embed.runner import Embeddings, open_embeddings

        if isinstance(X, (str, os.PathLike)):
            X = open_embeddings(X)
        if isinstance(X, Embeddings):
            rows = X.readout.chunks[0]
            for s in range(0, len(X), rows):
                yield np.asarray(X.readout[s:s + rows], dtype="f4")
            return
        X = np.asarray(X, dtype="f4")
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise AutoencoderError(f"parameter X: expected readouts of shape (n, {self.n_features_in_}), "
                                   f"got shape {X.shape}")
        for s in range(0, len(X), 8192):
            yield X[s:s + 8192]

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
        out = [self.model_.decode(Z[s:s + 8192]).numpy() for s in range(0, len(Z), 8192)]
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
        est = cls(**params)
        est.model_ = model
        est.n_features_in_ = model.n_features
        est.history_ = meta.get("history", {})
        est.n_epochs_ = len(next(iter(est.history_.values()), []))
        est.n_train_, est.n_val_ = meta.get("n_train"), meta.get("n_val")
        return est

