"""Ridge readouts of a stack of small systems, solved by a compiled Cholesky factorisation.

``solve(gram, xty, ridge)`` returns ``(gram[b] + ridge I)^-1 xty[b]`` for every
``b``, as LAPACK's ``dposv`` does, in one numba call that releases the GIL.
Why by hand: SciPy's LAPACK wrappers hold the GIL, so the embedder's threads
queued for each other's 101 x 101 solves (two threads solved slower than one).
This blocked right-looking Cholesky (panels of four rows, each trailing row
updated by a rank-4 product in one pass) is slower than ``dposv`` on one core
(~72 against ~54 us per system, AMD EPYC, Zen 4) but its threads run at once
(docs/decisions/embedding-gram.md).
"""

from __future__ import annotations

import numpy as np

_CACHE: dict = {}


def compiled_solver():
    """The numba solver (compiled on first use, cached on disk); None without numba."""
    if "solve" in _CACHE:
        return _CACHE["solve"]
    try:
        import numba
    except ImportError:  # pragma: no cover - numba comes with umap-learn
        _CACHE["solve"] = None
        return None

    @numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy")
    def solve(gram, xty, ridge, out, ok):
        n, M, _ = gram.shape
        A = np.empty((M, M))  # the upper triangle of gram + ridge I, then of its factor R (A = R^T R)
        R = np.zeros((4, M))  # the current panel's rows of R
        w = np.empty(M)
        for b in range(n):
            for i in range(M):
                gi = gram[b, i]  # a row as a 1-D view: the copy vectorises
                ai = A[i]
                for j in range(i, M):
                    ai[j] = gi[j]
                A[i, i] += ridge
                w[i] = xty[b, i]
            good = True
            for k0 in range(0, M, 4):
                kb = min(4, M - k0)
                for r in range(kb):  # the panel's rows, one at a time
                    k = k0 + r
                    d = A[k, k]
                    if not d > 0.0:  # not positive definite in floating point (or NaN)
                        good = False
                        break
                    d = np.sqrt(d)
                    inv = 1.0 / d
                    A[k, k] = d
                    R[r, k] = d
                    for j in range(k + 1, M):
                        v = A[k, j] * inv
                        A[k, j] = v
                        R[r, j] = v
                    for q in range(r + 1, kb):
                        i = k0 + q
                        a = R[r, i]
                        for j in range(i, M):
                            A[i, j] -= a * R[r, j]
                if not good:
                    break
                e = k0 + kb
                if kb == 4:  # the trailing rows, each by one rank-4 update
                    for i in range(e, M):
                        a0 = R[0, i]
                        a1 = R[1, i]
                        a2 = R[2, i]
                        a3 = R[3, i]
                        for j in range(i, M):
                            A[i, j] -= a0 * R[0, j] + a1 * R[1, j] + a2 * R[2, j] + a3 * R[3, j]
                else:
                    for r in range(kb):
                        for i in range(e, M):
                            a = R[r, i]
                            for j in range(i, M):
                                A[i, j] -= a * R[r, j]
            ok[b] = good
            if not good:
                continue
            for k in range(M):  # R^T z = xty
                z = w[k] / A[k, k]
                w[k] = z
                for j in range(k + 1, M):
                    w[j] -= z * A[k, j]
            for k in range(M - 1, -1, -1):  # R w = z
                s = w[k]
                for j in range(k + 1, M):
                    s -= A[k, j] * w[j]
                w[k] = s / A[k, k]
            for i in range(M):
                out[b, i] = w[i]

    _CACHE["solve"] = solve
    return solve


def solve(gram: np.ndarray, xty: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray] | None:
    """``(out, ok)``: the solutions (n, M) and whether each system was positive definite; None without numba.

    Rows with ``ok`` False are left unset (the caller solves them another way).
    """
    kernel = compiled_solver()
    if kernel is None:  # pragma: no cover - numba comes with umap-learn
        return None
    gram = np.ascontiguousarray(gram, dtype="f8")
    xty = np.ascontiguousarray(xty, dtype="f8")
    out = np.empty(xty.shape)
    ok = np.ones(len(xty), np.bool_)
    kernel(gram, xty, float(ridge), out, ok)
    return out, ok
