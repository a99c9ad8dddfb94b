"""The per-spectrum least-squares statistics of stage 1, and the ridge readouts solved from them.

For the design matrix ``X`` (rows ``[x_t, 1]``, the reservoir state then a
constant) and the targets ``y`` (the next flux value) of the steps a spectrum
uses, ``X^T X``, ``X^T y``, ``y^T y`` and the number of steps are sufficient
for everything after the reservoir: the ridge readout, the generalised
cross-validation score of any ridge, and the data-space error of any readout
``v``, ``||X v - y||^2 = v^T X^T X v - 2 v^T X^T y + y^T y`` (what stage 2's
model-coupled loss minimises).  ``persistence`` is the error of the naive
forecast "the next value equals this one" on the same steps, the yardstick
of :mod:`latentsky.embed.quality`.
"""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np

from latentsky.embed._errors import check_param

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
    persistence : ndarray (n,) float64 or None
        ``sum_t (y_t - u_t)^2`` over the same steps: the squared error of
        predicting each value by the one before it (None when not recorded).
    """

    gram: np.ndarray
    xty: np.ndarray
    yty: np.ndarray
    n_steps: np.ndarray
    persistence: np.ndarray | None = None

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
        with single_threaded_blas():  # a stack of small problems: threads only contend
            s, q = np.linalg.eigh(self.gram)
        s = np.clip(s, 0.0, None)
        c = np.einsum("nji,nj->ni", q, self.xty)  # Q^T X^T y
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
        return ReadoutStatistics(
            self.gram[index],
            self.xty[index],
            self.yty[index],
            self.n_steps[index],
            None if self.persistence is None else self.persistence[index],
        )

    @staticmethod
    def concatenate(parts) -> "ReadoutStatistics":
        """Join statistics of consecutive batches."""
        parts = list(parts)
        joined = [np.concatenate([getattr(p, f) for p in parts]) for f in ("gram", "xty", "yty", "n_steps")]
        pers = None if any(p.persistence is None for p in parts) else np.concatenate([p.persistence for p in parts])
        return ReadoutStatistics(*joined, pers)


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

    check_param(
        "ridge",
        ridge,
        isinstance(ridge, numbers.Real) and np.isfinite(ridge) and ridge > 0,
        "must be a positive number",
    )
    from latentsky.embed.ridge_solve import solve

    gram = np.asarray(gram, dtype="f8")
    xty = np.asarray(xty, dtype="f8")
    # A Cholesky solve per spectrum: the systems are symmetric positive definite
    # once the ridge is added.  The compiled call releases the GIL (callers
    # parallelise over spectra); a system not positive definite in floating point
    # is solved by least squares (SciPy's dposv is the same LAPACK routine and
    # would stop at the same pivot).
    # Multi-threaded BLAS on these 101x101 problems was up to 10x slower than
    # one thread here (threads fight over tiny problems).
    with single_threaded_blas():
        out, ok = solve(gram, xty, ridge)
        eye = ridge * np.eye(gram.shape[-1])
        for i in np.flatnonzero(~ok):
            out[i] = np.linalg.lstsq(gram[i] + eye, xty[i], rcond=None)[0]
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
    check_param(
        "ridge_grid",
        ridges.tolist(),
        ridges.ndim == 1 and ridges.size >= 1 and np.all(ridges > 0),
        "must be a non-empty list of positive numbers",
    )
    g = stats.gcv(ridges)
    g = g / np.maximum(np.median(g, axis=0, keepdims=True), 1e-300)
    scores = g.sum(axis=1)
    return float(ridges[int(np.argmin(scores))]), scores
