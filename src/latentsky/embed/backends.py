"""Batched back ends: run a chunk of spectra through the reservoir together and
accumulate each spectrum's least-squares statistics; the choice between them.

Every back end computes, for a batch of ``B`` series of ``T`` steps,

    gram[i] = sum_t m[i,t] z[i,t] z[i,t]^T      z = [x_t, 1]  (N + 1 values)
    xty[i]  = sum_t m[i,t] z[i,t] y[i,t]

where ``m`` is 1 for the steps that enter the regression and 0 otherwise.
The reservoir's step is the only place its inputs enter: a second input
(the position along the series, :mod:`.reservoir`) is a per-step term
``P p_t + b`` added to the drive ``V u_t``; the Gram sums do not see it.

Precision: the reservoir runs in float32, which is accurate enough, but the
sums are reduced in float64.  A float32 Gram over thousands of steps gives
readouts wrong by O(1) at ridge 1e-6, and float32 partial sums are not enough
either, however short: float32 GEMMs over strips of 8 to 512 steps, summed in
float64, left the readouts 2e-4 to 1e-2 from the float64 reference at the
default ridge (the tests ask 1e-5; docs/decisions/embedding-gram.md).
Rounding each product to float32 is already too much: the error it puts in
``X^T X`` is not that of any nearby set of states, and the ridge problem
amplifies it by the condition number of ``X^T X``.

Speed.  The only O(T N^2) work is the Gram sums, a symmetric rank-k update
per spectrum; everything else must stay far below it.  The NumPy back end has
two kernels:

* ``kernel="compiled"`` (default for the simple cycle with float32 states,
  :mod:`.compiled_kernel`): one numba call per slice of the batch, the
  reservoir and the upper triangle of the Gram fused, float32 states widened
  to float64 in the multiply -- half the flops of a full product at float64
  FMA rate, in tiles sized for the CPU's vector registers;
* ``kernel="ufunc"`` (:mod:`.ufunc_kernel`): plain NumPy, any reservoir,
  float32 or float64 states, ~2-3x slower.

Choice of default (``backend="auto"``): NumPy on CPU, measured ~9x faster
than TensorFlow on a 2-core machine (bench/embed.py); TensorFlow
(:mod:`.tensorflow_backend`) when it sees a GPU, where the float64 batched
matrix products that bind the CPU back end move.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from latentsky.embed._errors import check_param
from latentsky.embed.reservoir import Reservoir
from latentsky.exceptions import EmbeddingError

log = logging.getLogger(__name__)

BACKENDS = ("numpy", "tensorflow")
STATE_DTYPES = ("float32", "float64")


_blas_lock = threading.Lock()
_blas_depth = 0
_blas_limits = None


@contextlib.contextmanager
def single_threaded_blas():
    """Limit BLAS to one thread while any caller (in any thread) is inside.

    threadpoolctl's limits are process-wide; nested or concurrent
    ``threadpool_limits`` blocks in worker threads would restore the old limit
    while a sibling still computes, so every use goes through this counter.
    """
    global _blas_depth, _blas_limits
    with _blas_lock:
        if _blas_depth == 0:
            from threadpoolctl import threadpool_limits

            _blas_limits = threadpool_limits(1, user_api="blas")
        _blas_depth += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_depth -= 1
            if _blas_depth == 0:
                _blas_limits.restore_original_limits()
                _blas_limits = None


def _n_threads(n_threads: int | None) -> int:
    if n_threads:
        return int(n_threads)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class NumpyBackend:
    """float32 reservoir, float64 batched Gram sums, split across threads.

    Parameters
    ----------
    block_steps : int
        Steps per Gram block: longer blocks make more efficient matrix products
        but a larger float32 state buffer (``B * block_steps * N * 4`` bytes).
    n_threads : int or None
        Threads, each taking a slice of the batch (NumPy releases the GIL in
        its loops and BLAS calls); None uses every core this process may use.
        BLAS itself is limited to one thread inside them, which also makes the
        result independent of the thread count.
    """

    name = "numpy"

    def __init__(
        self, block_steps: int = 1024, n_threads: int | None = None, state_dtype: str = "float32", kernel: str = "auto"
    ):
        check_param("state_dtype", state_dtype, state_dtype in STATE_DTYPES, f"must be one of {STATE_DTYPES}")
        check_param("kernel", kernel, kernel in ("auto", "compiled", "ufunc"), "must be auto, compiled or ufunc")
        self.block_steps = block_steps
        self.n_threads = n_threads
        self.state_dtype = state_dtype
        self.kernel = kernel

    def kernel_for(self, reservoir: Reservoir) -> str:
        """``"compiled"`` (numba, fused) or ``"ufunc"`` (plain NumPy) for this reservoir.

        The compiled kernel covers the simple cycle with float32 states (the
        default set-up); everything else, and machines without numba, use the
        NumPy ufunc kernel.
        """
        if self.kernel == "ufunc":
            return "ufunc"
        from latentsky.embed.compiled_kernel import compiled_kernel

        ok = reservoir.matrix is None and self.state_dtype == "float32" and compiled_kernel() is not None
        if self.kernel == "compiled" and not ok:
            raise EmbeddingError("kernel='compiled' needs numba, a simple cycle reservoir and float32 states")
        return "compiled" if ok else "ufunc"

    @property
    def threads(self) -> int:
        """Threads this back end may use."""
        return _n_threads(self.n_threads)

    def statistics(
        self,
        u: np.ndarray,
        mask: np.ndarray,
        y: np.ndarray,
        reservoir: Reservoir,
        threads: int | None = None,
        out: tuple | None = None,
    ):
        """Gram and cross products for a batch; see the module docstring.

        Parameters
        ----------
        u : ndarray (B, T)
            Input, already shifted by the offset (0 at invalid pixels); cast
            to the state dtype.
        mask : ndarray (B, T) float64
            1 where step t enters the regression.
        y : ndarray (B, T) float64
            Target of step t (the next flux value), 0 where ``mask`` is 0.
        reservoir : Reservoir
        threads : int, optional
            Override the number of threads (1 when the caller parallelises).
        out : (ndarray (B, N+1, N+1), ndarray (B, N+1)), optional
            float64 arrays (views of a larger result, say) to write the sums
            into instead of new ones: no copy of the Gram matrices (83 kB per
            spectrum) afterwards.

        Returns
        -------
        gram : ndarray (B, N+1, N+1) float64
        xty : ndarray (B, N+1) float64
        """
        B = u.shape[0]
        n1 = reservoir.n_units + 1
        gram, xty = output_arrays(out, B, n1)
        threads = min(threads or self.threads, max(1, B // 16))
        bounds = np.linspace(0, B, threads + 1).astype(int)
        parts = [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]

        if self.kernel_for(reservoir) == "compiled":
            from latentsky.embed.compiled_kernel import compiled_statistics as kernel
        else:
            from latentsky.embed.ufunc_kernel import ufunc_statistics as kernel

        def work(part):
            lo, hi = part
            kernel(
                u[lo:hi], mask[lo:hi], y[lo:hi], reservoir, self.block_steps, gram[lo:hi], xty[lo:hi], self.state_dtype
            )

        with single_threaded_blas():
            if len(parts) == 1:
                work(parts[0])
            else:
                with ThreadPoolExecutor(len(parts)) as pool:
                    list(pool.map(work, parts))
        return gram, xty


def output_arrays(out, B: int, n1: int):
    """The zeroed float64 (gram, xty) a back end's ``statistics`` fills: ``out``, checked, or new arrays."""
    if out is None:
        return np.zeros((B, n1, n1)), np.zeros((B, n1))
    gram, xty = out
    if gram.shape != (B, n1, n1) or xty.shape != (B, n1) or gram.dtype != np.float64 or xty.dtype != np.float64:
        raise ValueError(f"out: need float64 arrays of shapes {(B, n1, n1)} and {(B, n1)}")
    gram[...] = 0.0
    xty[...] = 0.0
    return gram, xty


def get_backend(name: str = "auto", **kwargs):
    """A back end by name: ``"numpy"``, ``"tensorflow"`` or ``"auto"``.

    ``"auto"`` is NumPy on CPU (measured faster, see the module docstring) and
    TensorFlow when it sees a GPU.  Checking for a GPU imports TensorFlow
    (seconds), so ``auto`` first looks whether a GPU is visible at all.
    """
    check_param("backend", name, name in ("auto",) + BACKENDS, f"must be one of auto, {', '.join(BACKENDS)}")
    if name == "auto":
        name = "tensorflow" if _gpu_visible() and tensorflow_has_gpu() else "numpy"
    if name == "numpy":
        return NumpyBackend(**kwargs)
    from latentsky.embed.tensorflow_backend import TensorflowBackend

    kwargs.pop("n_threads", None)
    return TensorflowBackend(**kwargs)


def tensorflow_has_gpu() -> bool:
    """True when TensorFlow is installed and sees a GPU (imports TensorFlow)."""
    from latentsky.embed.tensorflow_backend import _import_tf

    try:
        tf = _import_tf()
    except ImportError:
        return False
    return bool(tf.config.list_physical_devices("GPU"))


def _gpu_visible() -> bool:
    # Cheap pre-check so CPU-only machines never pay TensorFlow's import.
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvidiactl")
