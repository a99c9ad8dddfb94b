"""Tune the reservoir of an :class:`~latentsky.embed.esn.ESNReadoutEmbedder` on its own held-out error.

The objective judges exactly the reservoir the embedder will build: every
setting (leak rate, position input, binning, washout, ridge, input offset, back
end) is the embedder's; only the parameters being tuned move.  It is measured
out of sample: each series' steps are cut into ``n_blocks`` contiguous blocks
and split into two folds, even and odd blocks (interleaved, so both folds span
the whole spectrum and a position input never has to extrapolate); a readout
fitted on one fold predicts the other.  The score is the geometric mean over
series of that held-out one-step error divided by the error of persistence
("the next value equals this one") on the same steps: the figure
:mod:`latentsky.embed.quality` reports, so bright and faint, smooth and noisy
spectra count alike.  Nelder-Mead (as in Gianniotis et al. 2016) searches it.
"""

from __future__ import annotations

import numpy as np

from latentsky.embed._errors import check_param
from latentsky.embed.series import embeddable, prepare_batch, valid_pixels
from latentsky.embed.statistics import DEFAULT_RIDGE_GRID, ReadoutStatistics, gcv_ridge, solve_readouts
from latentsky.exceptions import EmbeddingError
from latentsky.progress import Progress

#: Initial simplex step of each tunable parameter (scipy's default 5% step is far too small from a small start).
_STEPS = {"cycle_weight": 0.2, "input_scaling": 0.25, "bias": 0.1, "leak_rate": 0.2, "position_scaling": 0.5}


def _feasible(p: dict) -> bool:
    if not all(np.isfinite(v) for v in p.values()):
        return False
    return abs(p["cycle_weight"]) < 1.0 and 0.0 < p["leak_rate"] <= 1.0


class HeldOutError:
    """The held-out one-step error over persistence's of some series, for any reservoir parameters.

    Prepares the series, their two folds of interleaved blocks and persistence's
    error once (the module docstring); :meth:`ratios` then runs a reservoir.

    Parameters
    ----------
    X, weight : array-like (n_series, T)
        Flux and inverse variance on the grid; every series must be embeddable.
    embedder : ESNReadoutEmbedder
        Its settings (washout, binning, ridge, offset, back end, reservoir).
    n_blocks : int
        Blocks per series; even blocks make one fold, odd ones the other.
    offset : float, optional
        The input offset (default: ``embedder.input_offset``, ``"mean"``: the mean valid flux of ``X``).
    ids : sequence, optional
        Names of the series for error messages.
    """

    def __init__(self, X, weight, embedder, *, n_blocks: int = 16, offset: float | None = None, ids=None):
        check_param("n_blocks", n_blocks, n_blocks >= 2, "must be >= 2")
        X = np.atleast_2d(np.asarray(X, dtype="f8"))
        if offset is None:
            offset = (
                float(np.mean(X[valid_pixels(X, weight)]))
                if isinstance(embedder.input_offset, str)
                else float(embedder.input_offset)
            )
        b = prepare_batch(
            X, weight, offset=offset, washout=embedder.washout, ids=ids, dtype="f8", bin_pixels=embedder.bin_pixels
        )
        T = b.u.shape[1]
        fold = (np.arange(T) * n_blocks // T) % 2
        self.masks = [b.mask * (fold == k) for k in (0, 1)]
        if any(np.any(m.sum(axis=1) < 1) for m in self.masks):
            raise EmbeddingError(
                f"tune: series too short to split into {n_blocks} blocks with valid steps in both folds"
            )
        self.u = b.u.astype(embedder.state_dtype)
        jumps = np.zeros_like(b.y)
        jumps[:, :-1] = np.diff(b.u, axis=1)  # the offset cancels in the differences
        self.persistence = sum(np.einsum("bt,bt->b", m * jumps, jumps) for m in self.masks)
        self.ys = [b.y * m for m in self.masks]
        self.embedder = embedder
        self.backend = embedder._backend()
        self.ridge_grid = DEFAULT_RIDGE_GRID if embedder.ridge_grid is None else embedder.ridge_grid

    def ratios(self, **params) -> np.ndarray:
        """Per series: held-out error over persistence's, for the embedder's reservoir with ``params`` changed."""
        res = self.embedder.make_reservoir(**params)
        stats = []
        for m, y in zip(self.masks, self.ys):
            g, c = self.backend.statistics(self.u, m, y, res, threads=1)
            stats.append(ReadoutStatistics(g, c, np.einsum("bt,bt->b", y, y), m.sum(axis=1).astype("i8")))
        sse = np.zeros(len(self.u))
        for fit, test in ((0, 1), (1, 0)):
            ridge = (
                self.embedder.ridge
                if not isinstance(self.embedder.ridge, str)
                else gcv_ridge(stats[fit], self.ridge_grid)[0]
            )
            sse += np.clip(stats[test].sse(solve_readouts(stats[fit].gram, stats[fit].xty, ridge)), 0.0, None)
        return np.maximum(sse, 1e-300) / np.maximum(self.persistence, 1e-300)


def tune_reservoir(
    X,
    weight=None,
    *,
    embedder,
    n_series: int = 64,
    max_iter: int = 60,
    params=None,
    n_blocks: int = 16,
    random_state=None,
    progress=None,
) -> dict:
    """Tune some reservoir parameters of ``embedder`` by Nelder-Mead on the held-out error (module docstring).

    Parameters
    ----------
    X : array-like (n_series, T)
        Flux on the grid (NaN: masked).
    weight : array-like (n_series, T), optional
        Inverse variance (0: masked).
    embedder : ESNReadoutEmbedder
        Whose reservoir is tuned; it is not modified.
    n_series : int
        Series drawn (with ``random_state``) from the embeddable ones of ``X``.
    max_iter : int
        Nelder-Mead iterations (and at most as many evaluations).
    params : sequence of str, optional
        Which of :data:`~latentsky.embed.esn.RESERVOIR_PARAMS` to tune (default ``embedder.tune_params``).
    n_blocks : int
        Blocks per series; even blocks make one fold, odd ones the other.
    random_state : int or None
    progress : callable, optional
        Receives :class:`latentsky.progress.ProgressEvent` (task ``"tune"``, counted in evaluations).

    Returns
    -------
    dict
        The tuned parameters (the best found), ``error`` (its held-out error
        over persistence, geometric mean over series), ``initial_error`` (the
        embedder's own settings) and ``n_evaluations``.
    """
    from scipy.optimize import minimize
    from sklearn.utils import check_random_state

    from latentsky.embed.esn import RESERVOIR_PARAMS

    params = tuple(embedder.tune_params if params is None else params)
    check_param(
        "tune_params",
        params,
        len(params) >= 1 and set(params) <= set(RESERVOIR_PARAMS),
        f"must name some of {', '.join(RESERVOIR_PARAMS)}",
    )
    check_param("n_series", n_series, n_series >= 1, "must be >= 1")
    check_param("max_iter", max_iter, max_iter >= 1, "must be >= 1")
    X = np.atleast_2d(np.asarray(X, dtype="f8"))
    W = None if weight is None else np.atleast_2d(np.asarray(weight))
    ok = np.flatnonzero([r is None for r in embeddable(X, W, washout=embedder.washout, bin_pixels=embedder.bin_pixels)])
    if ok.size == 0:
        raise EmbeddingError("tune: none of the spectra can be embedded")
    rng = check_random_state(random_state)
    idx = np.sort(rng.choice(ok, size=min(n_series, ok.size), replace=False))
    offset = (
        float(np.mean(X[valid_pixels(X, W)]))
        if isinstance(embedder.input_offset, str)
        else float(embedder.input_offset)
    )
    held_out = HeldOutError(X[idx], None if W is None else W[idx], embedder, n_blocks=n_blocks, offset=offset, ids=idx)
    start = {k: float(v) for k, v in embedder.reservoir_params().items()}
    n_eval = 0

    def objective(x, prog):
        nonlocal n_eval
        n_eval += 1
        p = {**start, **dict(zip(params, (float(q) for q in x)))}
        if not _feasible(p):
            return 1e6  # outside the echo-state region: reject
        err = float(np.exp(np.mean(np.log(held_out.ratios(**p)))))
        prog.advance(1, f"error {err:.4g}")
        return err

    x0 = np.array([start[k] for k in params])
    simplex = [x0]
    for i, k in enumerate(params):
        step = np.zeros(len(params))
        if k == "cycle_weight":
            step[i] = -_STEPS[k] if x0[i] >= 0.7 else _STEPS[k]
        elif k == "leak_rate":
            step[i] = -_STEPS[k] if x0[i] > 0.5 else _STEPS[k]
        else:
            step[i] = max(0.5 * abs(x0[i]), _STEPS[k])
        simplex.append(x0 + step)
    with Progress("tune", total=max_iter, unit="evaluations", callback=progress) as prog:
        initial = objective(x0, prog)
        result = minimize(
            objective,
            x0,
            args=(prog,),
            method="Nelder-Mead",
            options={
                "maxiter": max_iter,
                "maxfev": max_iter,
                "xatol": 1e-3,
                "fatol": 1e-5,
                "initial_simplex": np.vstack(simplex),
            },
        )
    best, err = (result.x, float(result.fun)) if result.fun <= initial else (x0, initial)
    out = {k: float(v) for k, v in zip(params, best)}
    out.update(error=err, initial_error=initial, n_evaluations=n_eval)
    return out
