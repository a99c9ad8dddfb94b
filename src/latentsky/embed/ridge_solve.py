"""Ridge readouts of a stack of small systems: LAPACK's ``dposv`` called from numba, without the GIL.

``solve(gram, xty, ridge)`` returns ``(gram[b] + ridge I)^-1 xty[b]`` for every
``b`` (a Cholesky solve; the systems are symmetric positive definite once the
ridge is added) in one numba call that releases the GIL and calls LAPACK
through SciPy's Cython LAPACK (``scipy.linalg.cython_lapack``) function
pointers.  Why: SciPy's Python LAPACK wrappers hold the GIL, so the embedder's
threads queued for each other's 101 x 101 solves (two threads solved slower
than one); a Cholesky written in numba released it but ran ~1.5x slower than
LAPACK's (docs/decisions/embedding-gram.md).
"""

from __future__ import annotations

import ctypes

import numba
import numpy as np


def _lapack_function(name: str, n_args: int):
    """SciPy's Cython LAPACK routine ``name`` as a numba external function (every argument a pointer).

    The routine's address is registered with LLVM under a symbol name, so numba
    links compiled code to it by name and can cache that code on disk.
    """
    import llvmlite.binding as llvm
    from numba import types
    from scipy.linalg import cython_lapack

    capsule = cython_lapack.__pyx_capi__[name]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    symbol = f"latentsky_scipy_{name}"
    llvm.add_symbol(symbol, get_pointer(capsule, get_name(capsule)))
    return types.ExternalFunction(symbol, types.void(*[types.voidptr] * n_args))


# dposv(uplo, n, nrhs, a, lda, b, ldb, info); a module global, so numba caches the code that calls it
_DPOSV = _lapack_function("dposv", 8)


@numba.njit(nogil=True, cache=True)
def _solve(gram, xty, ridge, out, ok):
    n, M, _ = gram.shape
    A = np.empty((M, M))  # gram + ridge I; LAPACK overwrites a triangle with the factor
    w = np.empty(M)  # xty, then the solution
    uplo = np.array([ord("U")], np.uint8)  # symmetric: either triangle of the row-major copy
    ints = np.empty(5, np.int32)  # n, nrhs, lda, ldb, info
    for b in range(n):
        A[:, :] = gram[b]
        for i in range(M):
            A[i, i] += ridge
            w[i] = xty[b, i]
        ints[0] = M
        ints[1] = 1
        ints[2] = M
        ints[3] = M
        ints[4] = 0
        _DPOSV(
            uplo.ctypes,
            ints[0:].ctypes,
            ints[1:].ctypes,
            A.ctypes,
            ints[2:].ctypes,
            w.ctypes,
            ints[3:].ctypes,
            ints[4:].ctypes,
        )
        ok[b] = ints[4] == 0  # > 0: not positive definite in floating point
        if ok[b]:
            out[b] = w


def solve(gram: np.ndarray, xty: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """``(out, ok)``: the solutions (n, M) and whether each system was positive definite.

    Rows with ``ok`` False are left unset (the caller solves them another way).
    Call it with single-threaded BLAS (:func:`latentsky.embed.backends.single_threaded_blas`):
    threads only contend on systems this small.
    """
    gram = np.ascontiguousarray(gram, dtype="f8")
    xty = np.ascontiguousarray(xty, dtype="f8")
    out = np.empty(xty.shape)
    ok = np.ones(len(xty), np.bool_)
    _solve(gram, xty, float(ridge), out, ok)  # compiled on first use, cached on disk
    return out, ok
