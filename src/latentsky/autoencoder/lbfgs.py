"""Full-batch L-BFGS training of a :class:`~latentsky.autoencoder.model.ReadoutAutoencoder`, in float64.

The method's reference code (Gianniotis et al.'s ``ESNAutoencoder.jl``)
minimises the model-coupled loss over all spectra at once with L-BFGS
(Optim.jl).  This module does the same on a float64 copy of the network's
weights, the loss and its gradient computed by
TensorFlow over every training spectrum per evaluation:

* full batch, the loss is a deterministic function of the weights, so a
  quasi-Newton method can build its curvature model (minibatch Adam cannot),
  which matters in the coupled loss's narrow valleys;
* float64, because the line search compares losses that differ by 1e-9 near
  the optimum, below float32's resolution of a loss of ~0.05.

:func:`minimise` is a plain L-BFGS loop around SciPy's line search (see its
docstring for why not SciPy's L-BFGS-B).

:class:`FullBatchObjective` holds the inputs (float64) and evaluates the
weighted loss terms (``data``: the coupled loss; ``readout``: the Euclidean
one; ``neighbour``: UMAP's cross-entropy over fixed edges and negatives;
``penalty``: weight decay) and, per term, the norm of its gradient on the
encoder's weights.  :func:`minimise` runs the optimiser and writes the result
back into the Keras model.  The memory is the float64 inputs, about 52 kB per
spectrum for N = 100: the estimator uses this path when they fit its memory
limit and minibatch Adam beyond.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

#: Default of the stopping tolerance: L-BFGS stops when an iteration lowers the loss (the data-space error
#: divided by the model's ``data_scale``, the stage-1 error by default, plus the other terms) by less than this.
TOLERANCE = 1e-10


class FullBatchObjective:
    """The loss of a model over every training spectrum at once, as a function of its flat float64 weights.

    Parameters
    ----------
    model : ReadoutAutoencoder
        Its dense layers' weights are the variables; the maps into and out
        of the networks' coordinates are constants.
    inputs : dict of float64 arrays
        ``readout`` (n, M), and for the coupled loss ``gram`` (the tuple of
        dense blocks of :func:`~latentsky.autoencoder.coupled.gram_blocks`),
        ``resid``, ``floor`` (:func:`~latentsky.autoencoder.coupled.coupled_inputs`).
    train : {"all", "decoder", "encoder"}
        Which weights are optimised: all, the decoder's alone (the encoder,
        and so the map, fixed), or the encoder's alone to reproduce
        ``target`` (the only term then: ``layout``, the mean squared
        distance to it).
    latent : ndarray (n, n_latent), optional
        ``train="decoder"``: the fixed latent points the decoder starts from
        (default: the encoder's points of the readouts).
    pairs : dict, optional
        The neighbour term's ``head``, ``tail`` (int arrays of graph edges,
        rows of ``inputs``), ``weight`` (edge weights) and ``negative``
        ((E, negative_rate) random rows paired with each head); needed when
        ``model.neighbour_weight > 0``.
    """

    def __init__(self, model, inputs: dict, *, train: str = "all", pairs: dict | None = None, target=None, latent=None):
        import tensorflow as tf

        self.model, self.train = model, train
        f8 = tf.float64
        self.enc_layers = [(layer.kernel, layer.bias, layer.activation) for layer in model.encoder.layers]
        self.dec_layers = [(layer.kernel, layer.bias, layer.activation) for layer in model.decoder.layers]
        encoder = [v for k, b, _ in self.enc_layers for v in (k, b)]
        decoder = [v for k, b, _ in self.dec_layers for v in (k, b)]
        self.variables = {"all": encoder + decoder, "decoder": decoder, "encoder": encoder}[train]
        self.n_encoder = len(encoder) if train in ("all", "encoder") else 0
        self.target = None if target is None else tf.constant(np.asarray(target, dtype="f8"))
        self.shapes = [tuple(v.shape) for v in self.variables]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.shift = tf.constant(model.shift.numpy(), f8)
        self.scale = tf.constant(model.scale.numpy(), f8)
        self.in_map = tf.constant(model.in_map.numpy(), f8)
        self.out_map = tf.constant(model.out_map.numpy(), f8)
        self.data = {
            k: (tuple(tf.constant(x, f8) for x in v) if isinstance(v, (tuple, list)) else tf.constant(v, f8))
            for k, v in inputs.items()
        }
        self.coupled = "gram" in self.data
        self.pairs = None
        if model.neighbour_weight and pairs is not None:
            self.pairs = {
                "head": tf.constant(pairs["head"], tf.int32),
                "tail": tf.constant(pairs["tail"], tf.int32),
                "weight": tf.constant(pairs["weight"], f8),
                "negative": tf.constant(pairs["negative"], tf.int32),
            }
        if train == "decoder":
            # the map is fixed: encode once (or take the points given)
            if latent is None:
                latent = self._encode(
                    self.data["readout"], [tf.cast(v, f8) for k, b, _ in self.enc_layers for v in (k, b)]
                )
            self.z_fixed = tf.constant(np.asarray(latent, dtype="f8"))
        self._evaluate = tf.function(self._value_and_grads, reduce_retracing=True)

    # -- the network, functionally ------------------------------------------
    def _encode(self, w, params):
        import tensorflow as tf

        x = tf.matmul(w - self.shift, self.in_map)
        for (_, _, act), kernel, bias in zip(self.enc_layers, params[0::2], params[1::2]):
            x = act(tf.matmul(x, kernel) + bias)
        return x

    def _decode(self, z, params):
        import tensorflow as tf

        x = z
        for (_, _, act), kernel, bias in zip(self.dec_layers, params[0::2], params[1::2]):
            x = act(tf.matmul(x, kernel) + bias)
        return tf.matmul(x, self.out_map) + self.shift

    def _terms(self, params):
        import tensorflow as tf

        from latentsky.autoencoder.coupled import data_error

        model = self.model
        enc, dec = params[: self.n_encoder], params[self.n_encoder :]
        if self.train == "encoder":
            z = self._encode(self.data["readout"], enc)
            layout = tf.reduce_mean(tf.reduce_sum(tf.square(z - self.target), axis=1))
            return {"layout": layout}, {"layout_mse": layout}
        z = self._encode(self.data["readout"], enc) if self.train == "all" else self.z_fixed
        w_rec = self._decode(z, dec)
        readout = tf.reduce_mean(tf.square((w_rec - self.data["readout"]) / self.scale))
        parts, logs = {}, {"readout_mse": readout}
        if self.coupled:
            logs["data_error"] = tf.reduce_mean(data_error(self.data, w_rec, model.gram_blocks))
        if model.loss_kind == "coupled":
            parts["data"] = logs["data_error"] / model.data_scale
            if model.euclidean_weight:
                parts["readout"] = model.euclidean_weight * readout
        else:
            parts["readout"] = readout
        if self.pairs is not None:
            nb = self._neighbour(z)
            logs["neighbour"] = nb
            parts["neighbour"] = model.neighbour_weight * nb
        kernels = params[0::2] if self.train == "all" else dec[0::2]
        if model.weight_decay:
            parts["penalty"] = model.weight_decay * tf.add_n([tf.reduce_sum(tf.square(k)) for k in kernels])
        return parts, logs

    def _neighbour(self, z):
        """UMAP's fuzzy cross-entropy over every edge (weighted) and its fixed negatives."""
        import tensorflow as tf

        model, p = self.model, self.pairs
        eps = 1e-4

        def similarity(a, b):
            d2 = tf.reduce_sum(tf.square(a - b), axis=-1)
            return 1.0 / (1.0 + model.umap_a * tf.pow(d2 + 1e-12, model.umap_b))

        zh = tf.gather(z, p["head"])
        attract = -tf.math.log(tf.clip_by_value(similarity(zh, tf.gather(z, p["tail"])), eps, 1.0))
        zn = tf.gather(z, p["negative"])  # (E, rate, d)
        repel = -tf.math.log(tf.clip_by_value(1.0 - similarity(zh[:, None, :], zn), eps, 1.0))
        w = p["weight"]
        rate = tf.cast(tf.shape(p["negative"])[1], w.dtype)
        return (tf.reduce_sum(w * attract) + tf.reduce_sum(w * tf.reduce_sum(repel, axis=1))) / (
            tf.reduce_sum(w) * (1.0 + rate)
        )

    def _value_and_grads(self, flat):
        import tensorflow as tf

        params = [tf.reshape(p, s) for p, s in zip(tf.split(flat, self.sizes), self.shapes)]
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(params)
            parts, logs = self._terms(params)
        grads, norms = None, {}
        for term, value in parts.items():
            g = tape.gradient(value, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            grads = g if grads is None else [a + b for a, b in zip(grads, g)]
            if self.n_encoder:
                norms[term] = tf.linalg.global_norm(g[: self.n_encoder])
        del tape
        loss = tf.add_n(list(parts.values()))
        flat_grad = tf.concat([tf.reshape(g, [-1]) for g in grads], axis=0)
        return loss, flat_grad, logs, norms

    # -- for the optimiser ----------------------------------------------------
    def initial(self) -> np.ndarray:
        """The model's current weights, flat, float64."""
        return np.concatenate([np.asarray(v.numpy(), dtype="f8").ravel() for v in self.variables])

    def __call__(self, x: np.ndarray):
        import tensorflow as tf

        loss, grad, logs, norms = self._evaluate(tf.constant(x, tf.float64))
        self.last = {
            "loss": float(loss),
            **{k: float(v) for k, v in logs.items()},
            **{f"grad_{k}": float(v) for k, v in norms.items()},
        }
        return float(loss), grad.numpy()

    def assign(self, x: np.ndarray) -> None:
        """Write flat weights ``x`` into the Keras model (float32)."""
        at = 0
        for v, shape, size in zip(self.variables, self.shapes, self.sizes):
            v.assign(np.asarray(x[at : at + size], dtype="f4").reshape(shape))
            at += size


class _Curvature:
    """The L-BFGS inverse-Hessian model of the last ``memory`` steps, in compact form.

    ``H = gamma I + [S gamma Y] M [S' ; gamma Y']`` (Byrd, Nocedal & Schnabel
    1994; Nocedal & Wright 2006, eq. 7.24), so that ``H g`` costs four
    matrix-vector products with the ``memory x n`` step and gradient-change
    buffers and a few tiny triangular solves, instead of the two-loop
    recursion's ``4 memory`` passes over vectors of ``n`` weights.
    """

    def __init__(self, n: int, memory: int):
        self.m = int(memory)
        self.S = np.zeros((self.m, n))
        self.Y = np.zeros((self.m, n))
        self.SY = np.zeros((self.m, self.m))  # s_i . y_j, in buffer slots
        self.YY = np.zeros((self.m, self.m))
        self.count, self.head = 0, 0

    def clear(self) -> None:
        self.count = 0

    def add(self, s: np.ndarray, y: np.ndarray) -> None:
        k = self.head
        self.S[k], self.Y[k] = s, y
        self.SY[k, :] = self.Y @ s
        self.SY[:, k] = self.S @ y
        self.YY[k, :] = self.YY[:, k] = self.Y @ y
        self.head = (k + 1) % self.m
        self.count = min(self.count + 1, self.m)

    def direction(self, g: np.ndarray) -> np.ndarray:
        """``-H g``."""
        from scipy.linalg import solve_triangular

        if not self.count:
            return -g
        order = [(self.head - self.count + i) % self.m for i in range(self.count)]  # oldest first
        a, b = (self.S @ g)[order], (self.Y @ g)[order]
        sy = self.SY[np.ix_(order, order)]
        last = order[-1]
        gamma = self.SY[last, last] / self.YY[last, last]
        r = np.triu(sy)
        u = solve_triangular(r, a)
        top = solve_triangular(r, np.diag(sy) * u + gamma * (self.YY[np.ix_(order, order)] @ u) - gamma * b, trans="T")
        cs, cy = np.zeros(self.m), np.zeros(self.m)
        cs[order], cy[order] = top, -gamma * u
        return -(gamma * g + self.S.T @ cs + self.Y.T @ cy)


def minimise(objective, *, max_iter: int, tol: float = TOLERANCE, memory: int = 20, on_iteration=None) -> dict:
    """L-BFGS on ``objective`` from the model's weights; the result is written back into the model.

    The limited-memory BFGS direction (:class:`_Curvature`) with SciPy's
    strong-Wolfe line search
    (:func:`scipy.optimize.line_search`).  Written here rather than calling
    :func:`scipy.optimize.minimize` because SciPy 1.17's L-BFGS-B spends
    about 90 ms of bookkeeping per iteration on the ~26,000 weights of the
    default network (measured), twenty times the cost of the loss itself.

    Parameters
    ----------
    objective : callable
        ``objective(x) -> (loss, gradient)`` with ``initial()`` and
        ``assign(x)`` (:class:`FullBatchObjective`).
    max_iter : int
        Iterations at most.
    tol : float
        Stop when an iteration lowers the loss by less than this (absolute).
    memory : int
        Correction pairs kept (the curvature model).
    on_iteration : callable, optional
        ``on_iteration(logs)`` after each iteration, with the losses of its
        last evaluation (``loss``, ``data_error``, ``grad_<term>``...).

    Returns
    -------
    dict
        ``history`` (per iteration: the logs), ``loss`` (final), ``n_iter``,
        ``n_eval``, ``message``, ``seconds``, ``final`` (the last logs).
    """
    from threadpoolctl import threadpool_limits

    # the bookkeeping is matrix-vector products on ~26,000 numbers: one BLAS thread is ~100x faster than
    # two on a busy machine (threads spinning on tiny tasks; measured 0.15 ms against 18 ms per product)
    with threadpool_limits(1, user_api="blas"):
        return _minimise(objective, max_iter, tol, memory, on_iteration)


def _minimise(objective, max_iter, tol, memory, on_iteration) -> dict:
    from scipy.optimize import line_search

    t0 = time.perf_counter()
    cache = {}
    n_eval = [0]

    def evaluate(x):
        key = x.tobytes()
        if key not in cache:
            cache.clear()  # only the latest point is asked for twice (value, then gradient)
            n_eval[0] += 1
            loss, grad = objective(x)
            cache[key] = (loss, grad, dict(getattr(objective, "last", {"loss": loss})))
        return cache[key]

    x = objective.initial()
    f, g, logs = evaluate(x)
    history: dict[str, list[float]] = {}
    curvature = _Curvature(len(x), memory)
    f_old = None
    message = f"stopped after {int(max_iter)} iterations"
    it = 0
    for it in range(1, int(max_iter) + 1):
        d = curvature.direction(g)
        if g @ d >= 0:  # not a descent direction (a stale curvature model): restart from steepest descent
            curvature.clear()
            d = -g
        step0 = 1.0 if curvature.count else min(1.0, 1.0 / max(float(np.linalg.norm(g)), 1e-300))
        with warnings.catch_warnings():  # a failed search is handled below, not reported
            warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"scipy\.optimize")
            alpha = line_search(
                lambda z: evaluate(z)[0], lambda z: evaluate(z)[1], x, step0 * d, g, f, f_old, maxiter=20
            )[0]
        if alpha is None:
            # the strong Wolfe conditions could not be met: backtrack on sufficient decrease alone
            alpha = 1.0
            while alpha > 1e-10 and evaluate(x + alpha * step0 * d)[0] > f + 1e-4 * alpha * step0 * (g @ d):
                alpha *= 0.5
            if alpha <= 1e-10:
                message = f"no decrease along the search direction at iteration {it}"
                it -= 1
                break
        x_new = x + alpha * step0 * d
        f_new, g_new, logs = evaluate(x_new)
        s_k, y_k = x_new - x, g_new - g
        sy = float(s_k @ y_k)
        if sy > 1e-12 * float(np.sqrt((s_k @ s_k) * (y_k @ y_k))):  # keep the model positive definite
            curvature.add(s_k, y_k)
        f_old, f, x, g = f, f_new, x_new, g_new
        for k, v in logs.items():
            history.setdefault(k, []).append(v)
        if on_iteration is not None:
            on_iteration(dict(logs))
        if f_old - f < tol:
            message = f"converged: the loss fell by less than {tol:g} at iteration {it}"
            break
    objective.assign(x)
    return {
        "history": history,
        "loss": float(f),
        "n_iter": int(it),
        "n_eval": int(n_eval[0]),
        "message": message,
        "seconds": time.perf_counter() - t0,
        "final": dict(logs),
    }
