"""Echo-state-network readouts as embeddings of spectra (stage 1).

A spectrum on the common log-lambda grid is a series ``u_0 .. u_{T-1}`` (flux
along wavelength).  It drives one fixed reservoir (:mod:`.reservoir`); a ridge
regression readout ``w`` predicts the next flux value from the state and a
constant::

    y_t = u_{t+1} ~ [x_t, 1] . w,      w = (X^T X + lambda I)^-1 X^T y

and ``w`` (N reservoir weights, then the bias weight) is the spectrum's
embedding (Gianniotis, Kuegler, Tino & Polsterer, ESANN 2015 and
Neurocomputing 2016).  The reservoir is shared, so readouts are comparable.
Masked pixels, binning and the step mask: :mod:`.series`; the sufficient
statistics stage 2 uses: :mod:`.statistics`; tuning the reservoir:
:mod:`.tuning`; how good the readouts are: :mod:`.quality`.

Input
    The reservoir is driven by ``u_t - input_offset`` (``input_offset="mean"``:
    the weighted mean flux of the data seen by ``fit``), which keeps the states
    centred; this conditions ``X^T X`` far better (condition number ~1e5
    instead of ~1e9 for continuum-normalised HARPS flux), so the float32
    reservoir of the fast path stays within 1e-6 of a float64 reference.  The
    target ``y`` is the unshifted flux.  With ``position_scaling > 0`` the
    position along the spectrum is a second input (ours, not the paper's; see
    :mod:`.reservoir`).
"""

from __future__ import annotations

import logging
import numbers

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from latentsky.embed._errors import check_param
from latentsky.embed.defaults import ESN_DEFAULTS
from latentsky.embed.reservoir import Reservoir, random_sparse_reservoir, simple_cycle_reservoir
from latentsky.embed.series import batch_statistics, valid_pixels
from latentsky.embed.statistics import DEFAULT_RIDGE_GRID, ReadoutStatistics, gcv_ridge
from latentsky.exceptions import EmbeddingError

log = logging.getLogger(__name__)
_D = ESN_DEFAULTS

#: Most spectra in one slice of a batch (one thread's unit of work: masking, reservoir, sums, solve):
#: the slice's Gram matrices (83 kB each for N = 100) are still in cache when its readouts are solved.
SLICE_SPECTRA = 64
#: The parameters that define the reservoir's weights (what :func:`~latentsky.embed.tuning.tune_reservoir` may tune).
RESERVOIR_PARAMS = ("cycle_weight", "input_scaling", "bias", "leak_rate", "position_scaling")


class ESNReadoutEmbedder(TransformerMixin, BaseEstimator):
    """Embed series (spectra) as the readout weights of one shared echo-state network.

    ``fit`` freezes the reservoir (and learns the input offset and, with
    ``ridge="gcv"``, the ridge); ``transform`` returns one readout per row:
    ``n_units`` reservoir weights followed by the bias weight.

    The defaults are the recommended settings (:mod:`latentsky.embed.defaults`),
    the ones ``latentsky pipeline``, ``latentsky embed`` and the app use (chosen
    on the bundled sample, reported on independent SDSS and HARPS sets: a
    leaky simple cycle reservoir (leak 0.5) reading the flux binned by 16
    pixels, with the position along the spectrum as a second input (ours).
    ``ESNReadoutEmbedder(leak_rate=1, position_scaling=0, bin_pixels=1)`` is
    the reservoir of Gianniotis et al.

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
    position_scaling : float
        Magnitude of the weights of the second input, the position along the
        spectrum (0: none, the reservoir of the paper).
    bin_pixels : int
        Grid pixels averaged into one step of the series the reservoir reads
        (1: every pixel is a step).
    density : float
        Fraction of non-zero recurrent weights of a random reservoir.
    washout : int
        Steps after the first valid pixel left out of the regression.
    tune : int
        When > 0, ``fit`` first tunes the reservoir's ``tune_params`` on this
        many of its series (:func:`~latentsky.embed.tuning.tune_reservoir`:
        Nelder-Mead on the held-out one-step error of this very reservoir).
    tune_iter : int
        Nelder-Mead iterations of the tuning.
    tune_params : tuple of str
        Which of :data:`RESERVOIR_PARAMS` are tuned.
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
        float32 is faster and agrees with a float64 reference to ~1e-5 for the
        defaults at their ridge (~1e-4 at a ridge of 1e-6; ~1e-6 without leak
        and position input); poorly conditioned set-ups (strong leak, a bias
        that moves the states off centre) with a tiny ridge need float64.
    block_steps : int
        Steps per block of the batched Gram sums.
    batch_size : int
        Spectra per batch sent to the back end.
    n_threads : int or None
        Threads of the NumPy back end (None: all available cores).  Results do
        not depend on it.
    random_state : int, RandomState or None
        Seed of the random reservoir (the simple cycle needs none) and of the
        tuning subsample.

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
    tuned_ : dict or None
        With ``tune > 0``: the tuned parameters, ``error`` and ``initial_error``
        (see :func:`~latentsky.embed.tuning.tune_reservoir`); they override the
        constructor's in :attr:`reservoir_`.
    n_features_in_ : int
        Series length ``T`` seen in ``fit``.
    """

    #: The parameters that change the readouts (the others only how fast they are computed).
    SCIENCE_PARAMS = tuple(ESN_DEFAULTS)

    def __init__(
        self,
        n_units=_D["n_units"],
        reservoir=_D["reservoir"],
        cycle_weight=_D["cycle_weight"],
        input_scaling=_D["input_scaling"],
        bias=_D["bias"],
        leak_rate=_D["leak_rate"],
        position_scaling=_D["position_scaling"],
        bin_pixels=_D["bin_pixels"],
        density=_D["density"],
        washout=_D["washout"],
        ridge=_D["ridge"],
        ridge_grid=_D["ridge_grid"],
        input_offset=_D["input_offset"],
        tune=_D["tune"],
        tune_iter=_D["tune_iter"],
        tune_params=_D["tune_params"],
        backend="auto",
        state_dtype="float32",
        block_steps=1024,
        batch_size=512,
        n_threads=None,
        random_state=None,
    ):
        self.n_units = n_units
        self.reservoir = reservoir
        self.cycle_weight = cycle_weight
        self.input_scaling = input_scaling
        self.bias = bias
        self.leak_rate = leak_rate
        self.position_scaling = position_scaling
        self.bin_pixels = bin_pixels
        self.density = density
        self.washout = washout
        self.tune = tune
        self.tune_iter = tune_iter
        self.tune_params = tune_params
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
        tags.input_tags.allow_nan = True  # NaN flux is a masked pixel
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags

    # -- fitting -------------------------------------------------------------------------------

    def reservoir_params(self) -> dict:
        """The values of :data:`RESERVOIR_PARAMS` in use: the constructor's, or the tuned ones after ``fit``."""
        params = {name: getattr(self, name) for name in RESERVOIR_PARAMS}
        params.update({k: v for k, v in (getattr(self, "tuned_", None) or {}).items() if k in RESERVOIR_PARAMS})
        return params

    def make_reservoir(self, **overrides) -> Reservoir:
        """The reservoir these settings define (with ``overrides`` of :data:`RESERVOIR_PARAMS`)."""
        check_param("reservoir", self.reservoir, self.reservoir in ("cycle", "random"), "must be 'cycle' or 'random'")
        p = {**self.reservoir_params(), **overrides}
        if self.reservoir == "cycle":
            return simple_cycle_reservoir(
                self.n_units, p["cycle_weight"], p["input_scaling"], p["bias"], p["leak_rate"], p["position_scaling"]
            )
        return random_sparse_reservoir(
            self.n_units,
            p["cycle_weight"],
            p["input_scaling"],
            p["bias"],
            p["leak_rate"],
            self.density,
            self.random_state,
            p["position_scaling"],
        )

    def _check_series_params(self) -> None:
        check_param(
            "washout",
            self.washout,
            isinstance(self.washout, numbers.Integral) and self.washout >= 0,
            "must be a non-negative integer",
        )
        check_param(
            "bin_pixels",
            self.bin_pixels,
            isinstance(self.bin_pixels, numbers.Integral) and self.bin_pixels >= 1,
            "must be a positive integer",
        )
        check_param(
            "batch_size",
            self.batch_size,
            isinstance(self.batch_size, numbers.Integral) and self.batch_size >= 1,
            "must be >= 1",
        )

    def series_length(self, n_pixels: int) -> int:
        """Steps of the series the reservoir reads for spectra of ``n_pixels`` grid pixels."""
        return -(-int(n_pixels) // int(self.bin_pixels))

    def _backend(self):
        from latentsky.embed.backends import get_backend

        key = (self.backend, self.block_steps, self.n_threads, self.state_dtype)
        if getattr(self, "_backend_obj", None) is None or self._backend_obj_name != key:
            self._backend_obj = get_backend(
                self.backend, block_steps=self.block_steps, n_threads=self.n_threads, state_dtype=self.state_dtype
            )
            self._backend_obj_name = key
        return self._backend_obj

    def fit(self, X, y=None, weight=None, progress=None):
        """Freeze the reservoir (tuned first when ``tune > 0``); learn the input offset and the ridge.

        Parameters
        ----------
        X : array-like (n_series, T)
            Series (flux on the common grid); NaN marks a masked pixel.
        y : ignored
        weight : array-like (n_series, T), optional
            Inverse variance; 0 marks a masked pixel.
        progress : callable, optional
            Receives the tuning's :class:`latentsky.progress.ProgressEvent` (task ``"tune"``).

        Returns
        -------
        self
        """
        X = validate_data(self, X, dtype="float64", ensure_all_finite="allow-nan", reset=True)
        self._check_series_params()
        steps = self.series_length(X.shape[1])
        if steps < self.washout + 2:
            raise EmbeddingError(
                f"parameter washout={self.washout}: series of {steps} steps are too "
                f"short (need at least washout + 2 = {self.washout + 2})"
            )
        self._backend()  # checks backend and state_dtype
        self.tuned_ = None
        check_param(
            "tune",
            self.tune,
            isinstance(self.tune, numbers.Integral) and self.tune >= 0,
            "must be a non-negative integer (spectra to tune on; 0: no tuning)",
        )
        if self.tune:
            from latentsky.embed.tuning import tune_reservoir

            self.tuned_ = tune_reservoir(
                X,
                weight,
                embedder=self,
                n_series=int(self.tune),
                max_iter=self.tune_iter,
                random_state=self.random_state,
                progress=progress,
            )
            log.info(
                "tuned reservoir: %s (held-out error %.4g, from %.4g)",
                {k: round(self.tuned_[k], 4) for k in self.tune_params},
                self.tuned_["error"],
                self.tuned_["initial_error"],
            )
        self.reservoir_ = self.make_reservoir()
        valid = valid_pixels(X, weight)
        if isinstance(self.input_offset, str):
            check_param("input_offset", self.input_offset, self.input_offset == "mean", "must be a number or 'mean'")
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
            check_param(
                "ridge",
                self.ridge,
                isinstance(self.ridge, numbers.Real) and self.ridge > 0,
                "must be a positive number or 'gcv'",
            )
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
            pieces = max(min(n_par, hi - lo), -(-(hi - lo) // SLICE_SPECTRA))
            cuts = np.linspace(lo, hi, pieces + 1).astype(int)
            slices += [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]

        # every slice's sums go straight into the result (no concatenation, no second copy of the
        # Gram matrices, 83 kB per spectrum for N = 100)
        m = self.reservoir_.n_units + 1
        gram, xty = np.empty((n, m, m)), np.empty((n, m))
        readouts = None if ridge is None else np.empty((n, m))

        def work(part):
            lo, hi = part
            st = batch_statistics(
                X[lo:hi],
                None if weight is None else weight[lo:hi],
                self.reservoir_,
                offset=self.offset_,
                washout=self.washout,
                backend=backend,
                ids=np.arange(lo, hi) if ids is None else ids[lo:hi],
                threads=1,
                bin_pixels=self.bin_pixels,
                out=(gram[lo:hi], xty[lo:hi]),
            )
            if ridge is not None:
                readouts[lo:hi] = st.readouts(ridge)
            return st

        from latentsky.embed.backends import single_threaded_blas

        with single_threaded_blas():
            if n_par == 1 or len(slices) == 1:
                out = [work(p) for p in slices]
            else:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(n_par) as pool:
                    out = list(pool.map(work, slices))
        pers = None if any(o.persistence is None for o in out) else np.concatenate([o.persistence for o in out])
        stats = ReadoutStatistics(
            gram, xty, np.concatenate([o.yty for o in out]), np.concatenate([o.n_steps for o in out]), pers
        )
        return stats, readouts

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
        state.pop("_backend_obj", None)  # back ends hold compiled TensorFlow functions
        state.pop("_backend_obj_name", None)
        return state
