"""Echo-state-network readouts as embeddings of spectra (stage 1).

A spectrum on the common log-lambda grid is a series ``u_0 .. u_{T-1}`` (flux
along wavelength).  It drives one fixed reservoir (:mod:`.reservoir`); a ridge
regression readout ``w`` predicts the next flux value from the state and a
constant::

    y_t = u_{t+1} ~ [x_t, 1] . w,      w = (X^T X + lambda I)^-1 X^T y

and ``w`` (N reservoir weights, then the bias weight) is the spectrum's
embedding (Gianniotis, Kuegler, Tino & Polsterer, ESANN 2015 and
Neurocomputing 2016).  The reservoir is shared, so readouts are comparable.

Masked pixels
    A pixel is valid when its weight (inverse variance) is > 0 and its flux is
    finite.  Step ``t`` enters the regression only when both ``u_t`` (the
    input) and ``u_{t+1}`` (the target) are valid and ``t`` is at least
    ``washout`` steps after the spectrum's first valid pixel.  The reservoir
    still runs through gaps so that time stays aligned with wavelength: at an
    invalid pixel it is fed the *neutral value* ``input_offset`` (after the
    shift, an input of exactly 0), i.e. featureless flux at the data set's
    mean level, so a gap injects no structure and its memory fades at the rate
    ``cycle_weight``.  Those steps are left out of the sums (they are not
    "zeros" in the regression).

Input
    The reservoir is driven by ``u_t - input_offset`` (``input_offset="mean"``:
    the weighted mean flux of the data seen by ``fit``), which keeps the states
    centred; this conditions ``X^T X`` far better (condition number ~1e5
    instead of ~1e9 for continuum-normalised HARPS flux), so the float32
    reservoir of the fast path stays within 1e-6 of a float64 reference.  The
    target ``y`` is the unshifted flux.

Sufficient statistics
    Besides ``w``, every spectrum yields ``X^T X`` (N+1 x N+1), ``X^T y``,
    ``y^T y`` and the number of steps used.  From them stage 2 measures the
    reconstruction error of any readout ``v`` in data space without the
    spectrum: ``||X v - y||^2 = v^T X^T X v - 2 v^T X^T y + y^T y``
    (:meth:`ReadoutStatistics.sse`), and the ridge can be re-chosen without
    re-running the reservoir.
"""

from __future__ import annotations

import dataclasses
import logging
import numbers

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from latentsky.embed._errors import check_param
from latentsky.embed.reservoir import Reservoir, random_sparse_reservoir, simple_cycle_reservoir
from latentsky.exceptions import EmbeddingError
from latentsky.progress import Progress

log = logging.getLogger(__name__)

#: Default ridge grid for generalised cross-validation.
DEFAULT_RIDGE_GRID = tuple(10.0 ** np.arange(-8, 2))


@dataclasses.dataclass
class ReadoutStatistics:
    """Per-spectrum sufficient statistics of the readout least-squares problem.

    Attributes
    ----------
    gram : ndarray (n, N+1, N+1) float64
        ``X^T X`` over the steps used; the last row/column belongs to the
        constant (bias) column of the design matrix.
    xty : ndarray (n, N+1) float64
        ``X^T y``.
    yty : ndarray (n,) float64
        ``y^T y``.
    n_steps : ndarray (n,) int64
        Number of steps (rows of ``X``) used.
    """

    gram: np.ndarray
    xty: np.ndarray
    yty: np.ndarray
    n_steps: np.ndarray

    def __len__(self) -> int:
        return len(self.yty)

    def readouts(self, ridge: float) -> np.ndarray:
        """Ridge readouts ``(X^T X + ridge I)^-1 X^T y``, shape (n, N+1)."""
        return solve_readouts(self.gram, self.xty, ridge)

    def sse(self, w: np.ndarray) -> np.ndarray:
        """Sum of squared one-step errors ``||X w - y||^2`` of readouts ``w`` (n, N+1)."""
        w = np.asarray(w, dtype="f8")
        gw = np.einsum("nij,nj->ni", self.gram, w)
        return np.einsum("ni,ni->n", w, gw) - 2.0 * np.einsum("ni,ni->n", w, self.xty) + self.yty

    def gcv(self, ridges) -> np.ndarray:
        """Generalised cross-validation scores, shape (len(ridges), n).

        ``GCV = n * RSS / (n - df)^2`` with ``df = tr(X (X^T X + l I)^-1 X^T)``,
        evaluated from the eigen-decomposition of each ``X^T X``.
        """
        from latentsky.embed.backends import single_threaded_blas

        ridges = np.asarray(ridges, dtype="f8")
        with single_threaded_blas():      # a stack of small problems: threads only contend
            s, q = np.linalg.eigh(self.gram)
        s = np.clip(s, 0.0, None)
        c = np.einsum("nji,nj->ni", q, self.xty)            # Q^T X^T y
        n = self.n_steps.astype("f8")
        out = np.empty((len(ridges), len(self)))
        for k, lam in enumerate(ridges):
            # RSS = y'y - 2 c'(S+l)^-1 c + c'(S+l)^-1 S (S+l)^-1 c
            inv = 1.0 / (s + lam)
            rss = self.yty - np.sum(c * c * (2.0 * inv - s * inv * inv), axis=1)
            df = np.sum(s * inv, axis=1)
            out[k] = n * np.clip(rss, 0.0, None) / np.maximum(n - df, 1e-12) ** 2
        return out

    def take(self, index) -> "ReadoutStatistics":
        """The statistics of a subset of spectra."""
        return ReadoutStatistics(self.gram[index], self.xty[index], self.yty[index], self.n_steps[index])

    @staticmethod
    def concatenate(parts) -> "ReadoutStatistics":
        """Join statistics of consecutive batches."""
        parts = list(parts)
        return ReadoutStatistics(*(np.concatenate([getattr(p, f) for p in parts])
                                   for f in ("gram", "xty", "yty", "n_steps")))


def solve_readouts(gram: np.ndarray, xty: np.ndarray, ridge: float) -> np.ndarray:
    """Solve ``(gram + ridge I) w = xty`` for a stack of problems (float64).

    Parameters
    ----------
    gram : ndarray (n, M, M)
    xty : ndarray (n, M)
    ridge : float
        Ridge strength ``lambda`` > 0.
    """
    from latentsky.embed.backends import single_threaded_blas

    check_param("ridge", ridge, isinstance(ridge, numbers.Real) and np.isfinite(ridge) and ridge > 0,
                "must be a positive number")
    from scipy.linalg.lapack import dposv

    gram = np.asarray(gram, dtype="f8")
    xty = np.asarray(xty, dtype="f8")
    eye = ridge * np.eye(gram.shape[-1])
    out = np.empty(xty.shape)
    # One LAPACK Cholesky solve per spectrum: the systems are symmetric positive
    # definite once the ridge is added.  Multi-threaded BLAS on these 101x101
    # problems was up to 10x slower than one thread here (threads fight over
    # tiny problems; callers parallelise over spectra instead).
    with single_threaded_blas():
        for i in range(len(gram)):
            _, w, info = dposv(gram[i] + eye, xty[i], lower=0, overwrite_a=1)
            if info != 0:   # pragma: no cover - not positive definite in floating point
                w = np.linalg.lstsq(gram[i] + eye, xty[i], rcond=None)[0]
            out[i] = w
    return out


def gcv_ridge(stats: ReadoutStatistics, ridges=DEFAULT_RIDGE_GRID) -> tuple[float, np.ndarray]:
    """The ridge of ``ridges`` with the smallest total GCV score over the data set.

    Returns
    -------
    ridge : float
    scores : ndarray (len(ridges),)
        Sum over spectra of each spectrum's GCV score divided by its median
        over the grid, so spectra of different noise levels weigh alike.
    """
    ridges = np.asarray(ridges, dtype="f8")
    check_param("ridge_grid", ridges.tolist(), ridges.ndim == 1 and ridges.size >= 1 and np.all(ridges > 0),
                "must be a non-empty list of positive numbers")
    g = stats.gcv(ridges)
    g = g / np.maximum(np.median(g, axis=0, keepdims=True), 1e-300)
    scores = g.sum(axis=1)
    return float(ridges[int(np.argmin(scores))]), scores


@dataclasses.dataclass
class Batch:
    """A batch of spectra prepared for a back end (see :func:`prepare_batch`)."""

    u: np.ndarray        # (B, T) shifted input in the state dtype, 0 at invalid pixels
    mask: np.ndarray     # (B, T) float64, 1 where step t enters the regression
    y: np.ndarray        # (B, T) float64 target u_{t+1}, 0 where mask is 0
    yty: np.ndarray      # (B,)
    n_steps: np.ndarray  # (B,) int64


def valid_pixels(flux: np.ndarray, weight: np.ndarray | None) -> np.ndarray:
    """Boolean (B, T): finite flux with weight > 0 (weight None: finite flux)."""
    valid = np.isfinite(flux)
    if weight is not None:
        valid &= np.asarray(weight) > 0
    return valid


def prepare_batch(flux, weight=None, *, offset: float, washout: int, ids=None, dtype="float32") -> Batch:
    """Inputs, step mask and targets of a batch (the masking rules of the module docstring).

    Raises
    ------
    EmbeddingError
        Naming the spectrum id when a spectrum has no valid pixel, or too few
        valid steps after the washout.
    """
    flux = np.atleast_2d(np.asarray(flux, dtype="f8"))
    if weight is not None:
        weight = np.atleast_2d(np.asarray(weight))
        if weight.shape != flux.shape:
            raise EmbeddingError(f"weight shape {weight.shape} differs from flux shape {flux.shape}")
    B, T = flux.shape
    ids = np.arange(B) if ids is None else np.asarray(ids)
    check_param("washout", washout, isinstance(washout, numbers.Integral) and 0 <= washout,
                "must be a non-negative integer")
    if T < washout + 2:
        raise EmbeddingError(f"parameter washout={washout}: series of {T} steps are too short "
                             f"(need at least washout + 2 = {washout + 2})")
    valid = valid_pixels(flux, weight)
    empty = ~valid.any(axis=1)
    if empty.any():
        bad = ", ".join(str(i) for i in ids[empty][:5])
        raise EmbeddingError(f"spectrum {bad}: no valid pixels (all NaN or zero weight)")
    u = np.where(valid, flux - offset, 0.0).astype(dtype)
    first = np.argmax(valid, axis=1)
    t = np.arange(T - 1)
    step_ok = valid[:, :-1] & valid[:, 1:] & (t[None, :] >= (first + washout)[:, None])
    mask = np.zeros((B, T))
    mask[:, :-1] = step_ok
    y = np.zeros((B, T))
    y[:, :-1] = np.where(step_ok, flux[:, 1:], 0.0)
    n_steps = step_ok.sum(axis=1).astype("i8")
    short = n_steps < 1
    if short.any():
        bad = ", ".join(str(i) for i in ids[short][:5])
        raise EmbeddingError(f"spectrum {bad}: no usable step after a washout of {washout} "
                             f"(no two consecutive valid pixels past the washout)")
    return Batch(u, mask, y, np.einsum("bt,bt->b", y, y), n_steps)


def batch_statistics(flux, weight, reservoir: Reservoir, *, offset: float, washout: int, backend,
                     ids=None, threads: int | None = None) -> ReadoutStatistics:
    """Statistics of a batch of spectra with a back end (the fast path)."""
    b = prepare_batch(flux, weight, offset=offset, washout=washout, ids=ids,
                      dtype=getattr(backend, "state_dtype", "float32"))
    gram, xty = backend.statistics(b.u, b.mask, b.y, reservoir, threads=threads)
    return ReadoutStatistics(gram, xty, b.yty, b.n_steps)


def reference_statistics(flux, weight, reservoir: Reservoir, *, offset: float, washout: int,
                         ids=None) -> ReadoutStatistics:
    """The plain float64 path: one spectrum at a time, full design matrix.

    Slow by design; the tests hold the fast back ends to it, and the benchmark
    times it as the "plain NumPy loop".
    """
    flux = np.atleast_2d(np.asarray(flux, dtype="f8"))
    b = prepare_batch(flux, weight, offset=offset, washout=washout, ids=ids)
    valid = valid_pixels(flux, None if weight is None else np.atleast_2d(weight))
    parts = []
    for i in range(len(flux)):
        u = np.where(valid[i], flux[i] - offset, 0.0)
        X = reservoir.run(u)
        sel = b.mask[i] > 0
        Xd = np.hstack([X[sel], np.ones((sel.sum(), 1))])
        y = b.y[i, sel]
        parts.append(ReadoutStatistics((Xd.T @ Xd)[None], (Xd.T @ y)[None], np.array([y @ y]),
                                       np.array([sel.sum()], dtype="i8")))
    return ReadoutStatistics.concatenate(parts)


class ESNReadoutEmbedder(TransformerMixin, BaseEstimator):
    """Embed series (spectra) as the readout weights of one shared echo-state network.

    ``fit`` freezes the reservoir (and learns the input offset and, with
    ``ridge="gcv"``, the ridge); ``transform`` returns one readout per row:
    ``n_units`` reservoir weights followed by the bias weight.

    Parameters
    ----------
    n_units : int
        Reservoir size ``N``.
    reservoir : {"cycle", "random"}
        Simple cycle reservoir (deterministic) or random sparse.
    cycle_weight : float
        Cycle weight ``r`` (for ``"random"``: the spectral radius).
    input_scaling : float
        Magnitude ``v`` of the input weights.
    bias : float
        Bias ``b`` of every unit.
    leak_rate : float
        Leak rate ``a`` in (0, 1].
    density : float
        Fraction of non-zero recurrent weights of a random reservoir.
    washout : int
        Steps after the first valid pixel left out of the regression.
    ridge : float or "gcv"
        Ridge strength, or ``"gcv"`` to choose it from ``ridge_grid`` by
        generalised cross-validation on the data given to ``fit``.
    ridge_grid : sequence of float or None
        Candidates for ``ridge="gcv"`` (None: 1e-8 ... 10).
    input_offset : float or "mean"
        Subtracted from the flux before it drives the reservoir; ``"mean"``
        learns the weighted mean flux in ``fit``.  Also the neutral value fed
        at masked pixels.
    backend : {"auto", "numpy", "tensorflow"}
        Computation back end (:mod:`latentsky.embed.backends`).
    state_dtype : {"float32", "float64"}
        Precision of the reservoir states (the sums are always float64).
        float32 is faster and agrees with a float64 reference to ~1e-6 for the
        defaults; poorly conditioned set-ups (strong leak, a bias that moves
        the states off centre) with a tiny ridge need float64.
    block_steps : int
        Steps per block of the batched Gram sums.
    batch_size : int
        Spectra per batch sent to the back end.
    n_threads : int or None
        Threads of the NumPy back end (None: all available cores).  Results do
        not depend on it.
    random_state : int, RandomState or None
        Seed of the random reservoir (the simple cycle needs none).

    Attributes
    ----------
    reservoir_ : Reservoir
        The frozen reservoir.
    offset_ : float
        The input offset in use.
    ridge_ : float
        The ridge in use.
    gcv_scores_ : ndarray or None
        Total GCV score per candidate when ``ridge="gcv"``.
    n_features_in_ : int
        Series length ``T`` seen in ``fit``.
    """

    def __init__(self, n_units=100, reservoir="cycle", cycle_weight=0.9, input_scaling=0.5, bias=0.0,
                 leak_rate=1.0, density=0.1, washout=20, ridge=1e-2, ridge_grid=None, input_offset="mean",
                 backend="auto", state_dtype="float32", block_steps=1024, batch_size=512, n_threads=None,
                 random_state=None):
        self.n_units = n_units
        self.reservoir = reservoir
        self.cycle_weight = cycle_weight
        self.input_scaling = input_scaling
        self.bias = bias
        self.leak_rate = leak_rate
        self.density = density
        self.washout = washout
        self.ridge = ridge
        self.ridge_grid = ridge_grid
        self.input_offset = input_offset
        self.backend = backend
        self.state_dtype = state_dtype
        self.block_steps = block_steps
        self.batch_size = batch_size
        self.n_threads = n_threads
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True   # NaN flux is a masked pixel
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags

    # -- fitting -------------------------------------------------------------------------------

    def _make_reservoir(self) -> Reservoir:
        check_param("reservoir", self.reservoir, self.reservoir in ("cycle", "random"),
                    "must be 'cycle' or 'random'")
        if self.reservoir == "cycle":
            return simple_cycle_reservoir(self.n_units, self.cycle_weight, self.input_scaling, self.bias,
                                          self.leak_rate)
        return random_sparse_reservoir(self.n_units, self.cycle_weight, self.input_scaling, self.bias,
                                       self.leak_rate, self.density, self.random_state)

    def _backend(self):
        from latentsky.embed.backends import get_backend

        key = (self.backend, self.block_steps, self.n_threads, self.state_dtype)
        if getattr(self, "_backend_obj", None) is None or self._backend_obj_name != key:
            self._backend_obj = get_backend(self.backend, block_steps=self.block_steps, n_threads=self.n_threads,
                                            state_dtype=self.state_dtype)
            self._backend_obj_name = key
        return self._backend_obj

    def fit(self, X, y=None, weight=None):
        """Freeze the reservoir; learn the input offset and (``ridge="gcv"``) the ridge.

        Parameters
        ----------
        X : array-like (n_series, T)
            Series (flux on the common grid); NaN marks a masked pixel.
        y : ignored
        weight : array-like (n_series, T), optional
            Inverse variance; 0 marks a masked pixel.

        Returns
        -------
        self
        """
        X = validate_data(self, X, dtype="float64", ensure_all_finite="allow-nan", reset=True)
        check_param("washout", self.washout, isinstance(self.washout, numbers.Integral) and self.washout >= 0,
                    "must be a non-negative integer")
        check_param("batch_size", self.batch_size,
                    isinstance(self.batch_size, numbers.Integral) and self.batch_size >= 1, "must be >= 1")
        if X.shape[1] < self.washout + 2:
            raise EmbeddingError(f"parameter washout={self.washout}: series of {X.shape[1]} steps are too "
                                 f"short (need at least washout + 2 = {self.washout + 2})")
        self.reservoir_ = self._make_reservoir()
        self._backend()       # checks backend and state_dtype
        valid = valid_pixels(X, weight)
        if isinstance(self.input_offset, str):
            check_param("input_offset", self.input_offset, self.input_offset == "mean",
                        "must be a number or 'mean'")
            self.offset_ = float(np.mean(X[valid])) if valid.any() else 0.0
        else:
            check_param("input_offset", self.input_offset, np.isfinite(self.input_offset), "must be finite")
            self.offset_ = float(self.input_offset)
        self.gcv_scores_ = None
        if isinstance(self.ridge, str):
            check_param("ridge", self.ridge, self.ridge == "gcv", "must be a positive number or 'gcv'")
            grid = DEFAULT_RIDGE_GRID if self.ridge_grid is None else self.ridge_grid
            self.ridge_, self.gcv_scores_ = gcv_ridge(self._statistics(X, weight), grid)
            log.info("ridge chosen by GCV: %g", self.ridge_)
        else:
            check_param("ridge", self.ridge, isinstance(self.ridge, numbers.Real) and self.ridge > 0,
                        "must be a positive number or 'gcv'")
            self.ridge_ = float(self.ridge)
        return self

    # -- embedding -----------------------------------------------------------------------------

    def _run(self, X, weight=None, ids=None, ridge=None) -> tuple[ReadoutStatistics, np.ndarray | None]:
        """Statistics (and, given a ridge, readouts) of every row, batch by batch.

        With a multi-threaded back end each batch is cut into one slice per
        thread and every slice runs the whole pipeline (masking, reservoir,
        sums, solve) on its own thread: all stages run in parallel, not only
        the reservoir.  Slices are independent, so results do not depend on
        the number of threads.
        """
        backend = self._backend()
        n_par = max(1, int(getattr(backend, "threads", 1)))
        n = len(X)
        weight = None if weight is None else np.asarray(weight)
        ids = None if ids is None else np.asarray(ids)
        slices = []
        for lo in range(0, n, self.batch_size):
            hi = min(lo + self.batch_size, n)
            cuts = np.linspace(lo, hi, min(n_par, hi - lo) + 1).astype(int)
            slices += [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]

        def work(part):
            lo, hi = part
            st = batch_statistics(X[lo:hi], None if weight is None else weight[lo:hi], self.reservoir_,
                                  offset=self.offset_, washout=self.washout, backend=backend,
                                  ids=np.arange(lo, hi) if ids is None else ids[lo:hi], threads=1)
            return st, (None if ridge is None else st.readouts(ridge))

        from latentsky.embed.backends import single_threaded_blas

        with single_threaded_blas():
            if n_par == 1 or len(slices) == 1:
                out = [work(p) for p in slices]
            else:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(n_par) as pool:
                    out = list(pool.map(work, slices))
        stats = ReadoutStatistics.concatenate(o[0] for o in out)
        return stats, (None if ridge is None else np.concatenate([o[1] for o in out]))

    def _statistics(self, X, weight=None, ids=None) -> ReadoutStatistics:
        return self._run(X, weight, ids)[0]

    def statistics(self, X, weight=None, ids=None) -> ReadoutStatistics:
        """The sufficient statistics of every series (see :class:`ReadoutStatistics`).

        Parameters
        ----------
        X : array-like (n_series, T)
        weight : array-like (n_series, T), optional
        ids : sequence, optional
            Names of the series for error messages (default: row numbers).
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype="float64", ensure_all_finite="allow-nan", reset=False)
        return self._statistics(X, weight, ids)

    def fit_transform(self, X, y=None, weight=None, ids=None):
        """``fit`` then ``transform``, both with the same ``weight`` (masked pixels)."""
        return self.fit(X, y, weight=weight).transform(X, weight=weight, ids=ids)

    def transform(self, X, weight=None, ids=None):
        """Readouts, shape (n_series, n_units + 1): reservoir weights, then the bias weight."""
        return self.transform_with_statistics(X, weight, ids)[0]

    def transform_with_statistics(self, X, weight=None, ids=None) -> tuple[np.ndarray, ReadoutStatistics]:
        """Readouts and the sufficient statistics in one pass."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype="float64", ensure_all_finite="allow-nan", reset=False)
        stats, w = self._run(X, weight, ids, ridge=self.ridge_)
        return w, stats

    def get_feature_names_out(self, input_features=None):
        """``w0 .. w{N-1}`` and ``bias``."""
        check_is_fitted(self)
        return np.array([f"w{i}" for i in range(self.n_units)] + ["bias"], dtype=object)

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_backend_obj", None)    # back ends hold compiled TensorFlow functions
        state.pop("_backend_obj_name", None)
        return state


def tune_reservoir(X, weight=None, *, n_units: int = 100, washout: int = 20, ridge: float = 1e-2,
                   x0=(0.9, 0.5, 0.0), n_series: int = 64, max_iter: int = 60, input_offset="mean",
                   backend="auto", random_state=None, progress=None) -> dict:
    """Tune the simple cycle reservoir's (r, v, b) by Nelder-Mead.

    The objective (Gianniotis et al. 2016): on a random subsample of series,
    fit each series' readout on the steps of its first half and measure the
    mean squared error of predicting the steps of its second half, averaged
    over the series (each normalised by its second half's variance, so bright
    and faint spectra count alike).

    Parameters
    ----------
    X : array-like (n_series, T)
    weight : array-like, optional
    n_units, washout, ridge, input_offset, backend :
        As for :class:`ESNReadoutEmbedder`.
    x0 : (float, float, float)
        Starting (cycle_weight, input_scaling, bias).
    n_series : int
        Size of the subsample.
    max_iter : int
        Nelder-Mead iterations.
    random_state : int or None
        Seed of the subsample.
    progress : callable, optional
        Receives :class:`latentsky.progress.ProgressEvent` (task ``"tune"``,
        counted in objective evaluations).

    Returns
    -------
    dict
        ``cycle_weight, input_scaling, bias`` (the best found), ``error`` (its
        objective), ``initial_error`` and ``n_evaluations``.
    """
    from scipy.optimize import minimize
    from sklearn.utils import check_random_state

    from latentsky.embed.backends import get_backend

    X = np.atleast_2d(np.asarray(X, dtype="f8"))
    check_param("n_series", n_series, n_series >= 1, "must be >= 1")
    check_param("max_iter", max_iter, max_iter >= 1, "must be >= 1")
    rng = check_random_state(random_state)
    idx = np.sort(rng.choice(len(X), size=min(n_series, len(X)), replace=False))
    Xs = X[idx]
    Ws = None if weight is None else np.asarray(weight)[idx]
    valid = valid_pixels(Xs, Ws)
    offset = float(np.mean(Xs[valid])) if input_offset == "mean" else float(input_offset)
    b = prepare_batch(Xs, Ws, offset=offset, washout=washout, ids=idx)
    half = Xs.shape[1] // 2
    first = b.mask.copy()
    first[:, half:] = 0
    second = b.mask - first
    if np.any(first.sum(1) < 1) or np.any(second.sum(1) < 1):
        raise EmbeddingError(f"parameter washout={washout}: series too short to split into two halves "
                             f"with valid steps each")
    y1, y2 = b.y * first, b.y * second
    var2 = np.array([np.var(b.y[i, second[i] > 0]) for i in range(len(Xs))])
    var2 = np.maximum(var2, 1e-12)
    be = get_backend(backend)
    n_eval = 0

    def objective(p, prog):
        nonlocal n_eval
        r, v, bias = (float(q) for q in p)
        n_eval += 1
        if not (abs(r) < 1.0 and np.isfinite(v) and np.isfinite(bias)):
            return 1e6   # outside the echo-state region: reject
        res = simple_cycle_reservoir(n_units, r, v, bias)
        g1, c1 = be.statistics(b.u, first, y1, res)
        g2, c2 = be.statistics(b.u, second, y2, res)
        w = solve_readouts(g1, c1, ridge)
        s2 = ReadoutStatistics(g2, c2, np.einsum("bt,bt->b", y2, y2), second.sum(1).astype("i8"))
        err = float(np.mean(s2.sse(w) / s2.n_steps / var2))
        prog.advance(1, f"error {err:.4g}")
        return err

    x0 = np.asarray(x0, dtype="f8")
    # scipy's default simplex moves each coordinate by 5%, far too little from
    # a small start (and nothing for a zero bias): take steps of useful size.
    simplex = np.vstack([x0, x0 + [0.2 if x0[0] < 0.7 else -0.2, 0, 0],
                         x0 + [0, max(0.5 * abs(x0[1]), 0.1), 0], x0 + [0, 0, 0.1]])
    with Progress("tune", total=max_iter, unit="evaluations", callback=progress) as prog:
        initial = objective(x0, prog)
        result = minimize(objective, x0, args=(prog,), method="Nelder-Mead",
                          options={"maxiter": max_iter, "maxfev": max_iter, "xatol": 1e-3, "fatol": 1e-6,
                                   "initial_simplex": simplex})
    r, v, bias = (float(q) for q in result.x)
    return {"cycle_weight": r, "input_scaling": v, "bias": bias, "error": float(result.fun),
            "initial_error": initial, "n_evaluations": n_eval}
