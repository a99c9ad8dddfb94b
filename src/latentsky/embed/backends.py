"""Batched back ends: run a chunk of spectra through the reservoir together and
accumulate each spectrum's least-squares statistics.

Every back end computes, for a batch of ``B`` series of ``T`` steps,

    gram[i] = sum_t m[i,t] z[i,t] z[i,t]^T      z = [x_t, 1]  (N + 1 values)
    xty[i]  = sum_t m[i,t] z[i,t] y[i,t]

where ``m`` is 1 for the steps that enter the regression and 0 otherwise.
The reservoir's step is the only place its inputs enter: a second input
(the position along the series, :mod:`.reservoir`) is a per-step term
``P p_t + b`` added to the drive ``V u_t``; the Gram sums do not see it.

Precision: the reservoir runs in float32, which is accurate
enough, but the sums are reduced in float64 -- a float32 Gram over thousands of
steps gives readouts wrong by O(1) at ridge 1e-6, and even float32 partial
sums over 32-step blocks were off by 20% in our measurements.

Speed.  The only O(T N^2) work is the Gram sums, a symmetric rank-k update
per spectrum; everything else must stay far below it:

* ``kernel="compiled"`` (default for the simple cycle with float32 states): one
  numba call per slice of the batch.  ``W x`` is ``r * roll(x)`` (unit i hears
  unit i-1, no matrix product) and tanh a vectorisable rational approximation
  (TensorFlow's), so a block of steps of the reservoir costs O(K N); the
  block's states are transposed (units x steps, float32, in cache) and only the
  upper triangle of the Gram is summed, in 4 x 4 register tiles of float64
  accumulators fed by float32 loads -- half the flops of a full product, at
  float64 FMA rate.  Measured at T=4096, N=100 on one core: ~0.15 ms reservoir,
  ~0.4 ms Gram, ~0.75 ms per spectrum in all (against ~1.5 ms when the Gram
  was a full float64 GEMM on a float64 copy of the states, which is what
  OpenBLAS's DSYRK also costs at this size).
* ``kernel="ufunc"``: plain NumPy, a batch of states advancing with a few
  ufunc calls per step; the input drive of a block is written in one
  operation into the state buffer that the recursion then overwrites in
  place, and the sums are float64 GEMMs.  Any reservoir, float32 or float64
  states.  ~2-3x slower: each pass streams the (block, batch, N) buffer
  through memory.

Choice of default (``backend="auto"``): NumPy on CPU, because it measured
~9x faster than TensorFlow on this 2-core machine (bench/embed.py, 2,048 HARPS
spectra, T=4096, N=100, best of 5 rounds on a quiet machine: 1,850 spectra/s
with the compiled kernel, 34% of the float32 sgemm peak; 672 with the ufunc
kernel, 205 for TensorFlow):
TensorFlow dispatches a handful of ops per step inside ``tf.scan`` and cannot
fuse the recursion, and both end in the same float64 Gram products.  When
TensorFlow sees a GPU, ``auto`` picks TensorFlow: the float64 batched matmuls
move to the GPU, which is where the CPU back end is bound.
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

    def __init__(self, block_steps: int = 1024, n_threads: int | None = None, state_dtype: str = "float32",
                 kernel: str = "auto"):
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
        ok = reservoir.matrix is None and self.state_dtype == "float32" and _compiled() is not None
        if self.kernel == "compiled" and not ok:
            raise EmbeddingError("kernel='compiled' needs numba, a simple cycle reservoir and float32 states")
        return "compiled" if ok else "ufunc"

    @property
    def threads(self) -> int:
        """Threads this back end may use."""
        return _n_threads(self.n_threads)

    def statistics(self, u: np.ndarray, mask: np.ndarray, y: np.ndarray, reservoir: Reservoir,
                   threads: int | None = None):
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

        Returns
        -------
        gram : ndarray (B, N+1, N+1) float64
        xty : ndarray (B, N+1) float64
        """
        B = u.shape[0]
        n1 = reservoir.n_units + 1
        gram = np.zeros((B, n1, n1))
        xty = np.zeros((B, n1))
        threads = min(threads or self.threads, max(1, B // 16))
        bounds = np.linspace(0, B, threads + 1).astype(int)
        parts = [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]

        kernel = _compiled_statistics if self.kernel_for(reservoir) == "compiled" else _numpy_statistics

        def work(part):
            lo, hi = part
            kernel(u[lo:hi], mask[lo:hi], y[lo:hi], reservoir, self.block_steps,
                   gram[lo:hi], xty[lo:hi], self.state_dtype)

        with single_threaded_blas():
            if len(parts) == 1:
                work(parts[0])
            else:
                with ThreadPoolExecutor(len(parts)) as pool:
                    list(pool.map(work, parts))
        return gram, xty


def _numpy_statistics(u, mask, y, res: Reservoir, block_steps: int, gram, xty, state_dtype="float32",
                      sub_batch: int = 16):
    B, T = u.shape
    N = res.n_units
    K = min(block_steps, T)
    f32 = np.dtype(state_dtype).type    # the state precision (float32 unless asked otherwise)
    r = f32(res.cycle_weight)
    a = f32(res.leak_rate)
    vin = res.input_weights.astype(f32)
    bias = res.bias.astype(f32)
    has_bias = bool(np.any(bias))
    W_T = None if res.matrix is None else res.matrix.T.astype(f32)
    # Time-major state buffer: each step's (B, N) slab is contiguous for the
    # elementwise recursion; the Gram reads it per spectrum through a copy.
    offset = res.drive_offset(T)           # P p_t + b per step, or None (constant bias)
    offset = None if offset is None else offset.astype(f32)
    S = np.empty((K, B, N), f32)
    x = np.zeros((B, N), f32)              # state carried between blocks
    wx = np.empty((B, N), f32)
    Z = np.empty((sub_batch, K, N + 1))    # float64 design rows [x_t, 1] of a few spectra
    uT = np.ascontiguousarray(u.T, dtype=f32)   # (T, B)
    for t0 in range(0, T, K):
        k_n = min(K, T - t0)
        St = S[:k_n]
        # Input drive of the whole block in one operation; the recursion then
        # adds W x_{t-1} and applies tanh in place.
        np.multiply(uT[t0:t0 + k_n, :, None], vin, out=St)
        if offset is not None:
            St += offset[t0:t0 + k_n, None, :]
        elif has_bias:
            St += bias
        for k in range(k_n):
            if W_T is None:   # W x = r * roll(x, 1): a shifted copy, no matrix product
                np.multiply(x[:, :-1], r, out=wx[:, 1:])
                np.multiply(x[:, -1:], r, out=wx[:, :1])
            else:
                np.matmul(x, W_T, out=wx)
            sk = St[k]
            sk += wx
            np.tanh(sk, out=sk)
            if a != 1.0:
                sk *= a
                sk += (f32(1.0) - a) * x
            x = sk
        x = x.copy()  # S is overwritten by the next block
        m = mask[:, t0:t0 + k_n]
        yb = y[:, t0:t0 + k_n, None]
        for i in range(0, B, sub_batch):
            j = min(i + sub_batch, B)
            z = Z[: j - i, :k_n]
            z[:, :, :N] = St[:, i:j].transpose(1, 0, 2)      # float32 -> float64
            z[:, :, N] = m[i:j]
            bad = np.nonzero(m[i:j] == 0)
            if bad[0].size:                                   # masked steps leave the sums
                z[bad[0], bad[1], :N] = 0.0
            zt = z.transpose(0, 2, 1)
            gram[i:j] += np.matmul(zt, z)
            xty[i:j] += np.matmul(zt, yb[i:j])[:, :, 0]


def _compiled_statistics(u, mask, y, res: Reservoir, block_steps: int, gram, xty, state_dtype="float32"):
    """The simple cycle, fused into one numba call per slice of the batch (see
    :func:`_compiled`)."""
    kernel = _compiled()
    vin = res.input_weights.astype(np.float32)
    bias = res.bias.astype(np.float32)
    T = u.shape[1]
    K = min(block_steps, T)
    offset = res.drive_offset(T)          # (T, N) P p_t + b, or an empty array: the constant bias
    offset = np.zeros((0, vin.size), np.float32) if offset is None else np.ascontiguousarray(offset, np.float32)
    kernel(np.ascontiguousarray(u, dtype=np.float32), np.ascontiguousarray(mask), np.ascontiguousarray(y),
           vin, bias, offset, np.float32(res.cycle_weight), np.float32(res.leak_rate), K, gram, xty)


_COMPILED = {}


def _compiled():
    """The numba kernel of :func:`_compiled_statistics`, compiled on first use
    (cached on disk); None when numba is not installed.

    Per spectrum and block of ``K`` steps it

    1. advances the reservoir one step at a time, writing the float32 states
       row by row (``S``, K x N, contiguous: the recursion vectorises over
       units);
    2. transposes them, times the step mask, into ``Zt`` (units x steps,
       float32), with the constant-1 (bias) row and zero rows up to a multiple
       of the tile;
    3. adds ``Zt y`` to X^T y (float64: the target is float64 flux);
    4. adds the upper triangle of ``Zt Zt^T`` to X^T X tile by tile: 4 x 4
       units, each a dot product over the block's steps vectorised along the
       steps, the float32 states widened to float64 as they are loaded and
       summed in float64 (exact products: the precision rule of the module docstring).

    Why by hand: BLAS has no float32-in/float64-sum symmetric rank-k update, and
    its DSYRK on these 104-wide blocks is no faster than the full DGEMM; the
    triangle alone with float32 loads is half the flops and half the bytes
    (measured ~2.3x faster than DGEMM on the float64 copy at T=4096, N=100).
    """
    if "stats" in _COMPILED:
        return _COMPILED["stats"]
    try:
        import numba
    except ImportError:  # pragma: no cover - numba comes with umap-learn
        _COMPILED["stats"] = None
        return None
    # error_model="numpy" lets LLVM vectorise the division in the tanh below
    # (Python's model checks every division for zero): 5x faster.
    jit = numba.njit(fastmath=True, nogil=True, cache=True, error_model="numpy")

    @numba.njit(fastmath=True, inline="always", cache=True, error_model="numpy")
    def tanh32(x):
        # The rational approximation TensorFlow/Eigen use for float32 tanh (error
        # < 3e-7, i.e. a few float32 ulp); libm's tanhf cannot be vectorised.
        c = np.float32(7.90531110763549805)
        x = c if x > c else x
        x = -c if x < -c else x
        x2 = x * x
        p = x2 * np.float32(-2.76076847742355e-16) + np.float32(2.00018790482477e-13)
        p = x2 * p + np.float32(-8.60467152213735e-11)
        p = x2 * p + np.float32(5.12229709037114e-08)
        p = x2 * p + np.float32(1.48572235717979e-05)
        p = x2 * p + np.float32(6.37261928875436e-04)
        p = x2 * p + np.float32(4.89352455891786e-03)
        q = x2 * np.float32(1.19825839466702e-06) + np.float32(1.18534705686654e-04)
        q = x2 * q + np.float32(2.26843463243900e-03)
        q = x2 * q + np.float32(4.89352518554385e-03)
        return x * p / q

    @jit
    def gram_tiles(Zt, kn, G):
        # G[i:i+4, j:j+4] += Zt[i:i+4, :kn] Zt[j:j+4, :kn]^T for j >= i; sixteen
        # scalar accumulators that LLVM vectorises along the steps.
        n = Zt.shape[0]
        for i in range(0, n, 4):
            for j in range(i, n, 4):
                a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = 0.0
                a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = 0.0
                for k in range(kn):
                    x0 = np.float64(Zt[i, k])
                    x1 = np.float64(Zt[i + 1, k])
                    x2 = np.float64(Zt[i + 2, k])
                    x3 = np.float64(Zt[i + 3, k])
                    y0 = np.float64(Zt[j, k])
                    y1 = np.float64(Zt[j + 1, k])
                    y2 = np.float64(Zt[j + 2, k])
                    y3 = np.float64(Zt[j + 3, k])
                    a00 += x0 * y0
                    a01 += x0 * y1
                    a02 += x0 * y2
                    a03 += x0 * y3
                    a10 += x1 * y0
                    a11 += x1 * y1
                    a12 += x1 * y2
                    a13 += x1 * y3
                    a20 += x2 * y0
                    a21 += x2 * y1
                    a22 += x2 * y2
                    a23 += x2 * y3
                    a30 += x3 * y0
                    a31 += x3 * y1
                    a32 += x3 * y2
                    a33 += x3 * y3
                G[i, j] += a00
                G[i, j + 1] += a01
                G[i, j + 2] += a02
                G[i, j + 3] += a03
                G[i + 1, j] += a10
                G[i + 1, j + 1] += a11
                G[i + 1, j + 2] += a12
                G[i + 1, j + 3] += a13
                G[i + 2, j] += a20
                G[i + 2, j + 1] += a21
                G[i + 2, j + 2] += a22
                G[i + 2, j + 3] += a23
                G[i + 3, j] += a30
                G[i + 3, j + 1] += a31
                G[i + 3, j + 2] += a32
                G[i + 3, j + 3] += a33

    @jit
    def stats(u, mask, y, vin, bias, offset, r, a, K, gram, xty):
        B, T = u.shape
        N = vin.size
        n1 = N + 1
        varying = offset.shape[0] > 0      # a position input: the bias term changes with the step
        npad = (n1 + 3) // 4 * 4
        one = np.float32(1.0)
        leaky = a != one
        S = np.empty((K, N), np.float32)
        Zt = np.zeros((npad, K), np.float32)      # rows past n1 stay 0
        G = np.empty((npad, npad))
        c = np.empty(npad)
        mk = np.empty(K, np.float32)
        yk = np.empty(K)
        # local state copies: LLVM vectorises the unit loops only when it can
        # prove the state arrays do not alias the output
        xl = np.empty(N, np.float32)
        xn = np.empty(N, np.float32)
        for b in range(B):
            G[:] = 0.0
            c[:] = 0.0
            xl[:] = 0.0
            for t0 in range(0, T, K):
                kn = min(K, T - t0)
                # 1-D copies of this block's mask and target: indexing the 2-D
                # arrays inside the loops below keeps LLVM from vectorising them
                for k in range(kn):
                    mk[k] = np.float32(mask[b, t0 + k])
                    yk[k] = y[b, t0 + k]
                for k in range(kn):
                    ut = u[b, t0 + k]
                    bk = offset[t0 + k] if varying else bias
                    # W x = r * roll(x, 1): unit i hears unit i-1
                    xn[0] = tanh32(r * xl[N - 1] + vin[0] * ut + bk[0])
                    for i in range(1, N):
                        xn[i] = tanh32(r * xl[i - 1] + vin[i] * ut + bk[i])
                    if leaky:      # a separate loop keeps the one above vectorisable
                        for i in range(N):
                            xn[i] = a * xn[i] + (one - a) * xl[i]
                    m = mk[k]
                    for i in range(N):
                        xl[i] = xn[i]
                        S[k, i] = xn[i] * m
                # transpose in 16-step strips (a fixed trip count LLVM unrolls)
                full = kn - kn % 16
                for k0 in range(0, full, 16):
                    for i in range(N):
                        for k in range(16):
                            Zt[i, k0 + k] = S[k0 + k, i]
                for i in range(N):
                    for k in range(full, kn):
                        Zt[i, k] = S[k, i]
                for k in range(kn):
                    Zt[N, k] = mk[k]
                for i in range(0, npad, 4):
                    s0 = s1 = s2 = s3 = 0.0
                    for k in range(kn):
                        s0 += np.float64(Zt[i, k]) * yk[k]
                        s1 += np.float64(Zt[i + 1, k]) * yk[k]
                        s2 += np.float64(Zt[i + 2, k]) * yk[k]
                        s3 += np.float64(Zt[i + 3, k]) * yk[k]
                    c[i] += s0
                    c[i + 1] += s1
                    c[i + 2] += s2
                    c[i + 3] += s3
                gram_tiles(Zt, kn, G)
            for i in range(n1):
                xty[b, i] = c[i]
                for j in range(i, n1):
                    gram[b, i, j] = G[i, j]
                    gram[b, j, i] = G[i, j]

    _COMPILED["stats"] = stats
    return stats


class TensorflowBackend:
    """The same computation in TensorFlow (uses a GPU when TensorFlow sees one).

    Parameters
    ----------
    block_steps : int
        Steps per block of the scan and of the Gram products.
    """

    name = "tensorflow"

    def __init__(self, block_steps: int = 512, state_dtype: str = "float32"):
        check_param("state_dtype", state_dtype, state_dtype in STATE_DTYPES, f"must be one of {STATE_DTYPES}")
        self.block_steps = block_steps
        self.state_dtype = state_dtype
        self._fns: dict = {}

    def _fn(self, res: Reservoir):
        key = id(res)
        if key in self._fns:
            return self._fns[key][1]
        tf = _import_tf()
        f32 = tf.as_dtype(self.state_dtype)
        r = tf.constant(res.cycle_weight, f32)
        a = tf.constant(res.leak_rate, f32)
        vin = tf.constant(res.input_weights, f32)
        bias = tf.constant(res.bias, f32)
        W_T = None if res.matrix is None else tf.constant(res.matrix.T, f32)
        del bias   # the drive's offset (bias, plus the position input) comes with each block

        def step(x, drive):
            wx = r * tf.roll(x, 1, axis=1) if W_T is None else tf.matmul(x, W_T)
            new = tf.tanh(wx + drive)
            return a * new + (1.0 - a) * x

        @tf.function(reduce_retracing=True)
        def block(x, u_blk, off_blk, m_blk, y_blk):
            # u_blk (K, B) time-major for the scan; off_blk (K, N) P p_t + b; m_blk, y_blk (B, K) float64.
            drive = u_blk[:, :, None] * vin + off_blk[:, None, :]
            states = tf.scan(step, drive, initializer=x)          # (K, B, N)
            z = tf.cast(tf.transpose(states, (1, 0, 2)), tf.float64) * m_blk[:, :, None]
            z = tf.concat([z, m_blk[:, :, None]], axis=2)           # (B, K, N+1)
            g = tf.matmul(z, z, transpose_a=True)
            c = tf.matmul(z, y_blk[:, :, None], transpose_a=True)[:, :, 0]
            return states[-1], g, c

        self._fns[key] = (res, block)  # keep res alive so its id is not reused
        return block

    threads = 1   # TensorFlow parallelises inside its ops

    def statistics(self, u, mask, y, reservoir: Reservoir, threads: int | None = None):
        """See :meth:`NumpyBackend.statistics` (``threads`` is ignored)."""
        tf = _import_tf()
        fn = self._fn(reservoir)
        B, T = u.shape
        n1 = reservoir.n_units + 1
        x = tf.zeros((B, reservoir.n_units), tf.as_dtype(self.state_dtype))
        gram = tf.zeros((B, n1, n1), tf.float64)
        xty = tf.zeros((B, n1), tf.float64)
        K = min(self.block_steps, T)
        offset = reservoir.drive_offset(T)
        offset = np.broadcast_to(reservoir.bias, (T, reservoir.n_units)) if offset is None else offset
        for t0 in range(0, T, K):
            sl = slice(t0, min(t0 + K, T))
            x, g, c = fn(x, tf.constant(np.ascontiguousarray(u[:, sl].T, dtype=self.state_dtype)),
                         tf.constant(np.ascontiguousarray(offset[sl], dtype=self.state_dtype)),
                         tf.constant(mask[:, sl]),
                         tf.constant(y[:, sl]))
            gram += g
            xty += c
        return gram.numpy(), xty.numpy()


def _import_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    return tf


def tensorflow_has_gpu() -> bool:
    """True when TensorFlow is installed and sees a GPU (imports TensorFlow)."""
    try:
        tf = _import_tf()
    except ImportError:
        return False
    return bool(tf.config.list_physical_devices("GPU"))


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
    kwargs.pop("n_threads", None)
    return TensorflowBackend(**kwargs)


def _gpu_visible() -> bool:
    # Cheap pre-check so CPU-only machines never pay TensorFlow's import.
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvidiactl")
