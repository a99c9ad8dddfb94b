"""The fused numba kernel of the NumPy back end: the simple cycle reservoir and its Gram sums in one call.

For a slice of a batch it computes what :mod:`latentsky.embed.backends`
describes (``gram[i] = sum_t m^2 z z^T``, ``xty[i] = sum_t m z y`` with
``z = [x_t, 1]``; the mask ``m`` is 0 or 1 in practice), for the simple cycle
with float32 states.  Per spectrum it fills blocks of up to ``K`` = 256 kept
steps (``BLOCK_STEPS``: a tile's rows of a float64 block stay in L1) and per
block

1. advances the reservoir one step at a time, writing the float32 states of
   the steps whose mask is non-zero (times the mask) row by row (``S``, K x N,
   contiguous: the recursion vectorises over units); steps with mask 0
   (washout, bad pixels) advance the state but are not stored.  ``W x`` is
   ``r * roll(x)`` (unit i hears unit i-1, no matrix product) and tanh a
   vectorisable rational approximation (TensorFlow's), so a block costs
   O(K N); the bias row's own sums (``sum m^2``, ``sum m y``) are scalars;
2. transposes them into ``Zt`` (units x steps, float32 or float64: see below),
   zero steps up to a multiple of 8;
3. adds ``Zt y`` to X^T y and ``Zt m`` to the bias column of X^T X (dot
   products along the steps, float64: the target is float64 flux);
4. adds the upper triangle of ``Zt Zt^T`` (the N units; the bias column came
   from step 3) to X^T X tile by tile (the units past the last whole tile,
   e.g. the 100th of 33 3 x 3 tiles, by plain dot products: no padded rows),
   each tile a block of dot products over the block's steps, vectorised along
   the steps: the float32 states are
   widened to float64 (as they are loaded, or once in the transpose) and
   multiplied and summed in float64, so every product is exact and the sums
   carry float64 rounding only.

Without leak (``leak_rate`` 1, the benchmark's reservoir) :func:`compiled_statistics`
runs :mod:`latentsky.embed.unit_sweep` instead, which computes the states one
unit at a time along the steps, straight into the layout of step 2 (no
transpose), and shares steps 3 and 4 (its ``gram_block``) with this kernel.

Why by hand.  The sums must be float64 (float32 states are accurate enough,
float32 sums are not: see :mod:`latentsky.embed.backends`), and BLAS has no
float32-in, float64-sum symmetric rank-k update.  Measured on AVX-512 and
forced AVX2 (docs/decisions/embedding-gram.md): float32 SGEMM/SSYRK over
strips of 128-512 steps, summed in float64, is up to ~1.5x faster than these
tiles but leaves the readouts 1e-3 to 5e-3 from those of the exact sums (the
tests ask 1e-5); DSYRK on a float64 copy of each strip is exact and ~1.2-2x
slower than the tiles.

Tile size and block precision.  A tile of ``a x a`` units keeps ``a^2``
float64 vector accumulators and ``2a`` loaded vectors in registers: 4 x 4
(16 + 8) fits the 32 vector registers of AVX-512 (and of arm64), 3 x 3
(9 + 6) the 16 of AVX2; 4 x 4 on AVX2 spills and ran 1.7x slower.  With
AVX-512 the block of states is widened to float64 once, in the transpose
(~15% faster there: each state is otherwise converted in every tile it meets);
with AVX2 it stays float32 (as fast or faster: half the bytes).
:func:`gram_plan` picks both for the instruction set numba compiles for.
The tiles run at ~90% of the float64 FMA rate on both instruction sets
(AMD EPYC, Zen 4); an outer-product (GEMM micro-kernel) form that would
skip the transpose is not vectorised by LLVM from numba code (it vectorises
the step loop with gathers instead). Figures in
docs/decisions/embedding-gram.md.
"""

from __future__ import annotations

import platform

import numpy as np

from latentsky.embed.reservoir import Reservoir

#: Tile sizes the kernel has (units per side of a Gram tile).
TILES = (3, 4)
#: Precisions of the transposed block of states the tiles read.
BLOCK_DTYPES = ("float32", "float64")
#: Loop orders of the reservoir (see :func:`compiled_statistics`).
SWEEPS = ("auto", "steps", "units")
#: Most steps per block: a 4 x 4 tile's eight rows of a float64 block (8 x 256 x 8 bytes) stay in L1.
BLOCK_STEPS = 256


def gram_plan(features: str | None = None, machine: str | None = None) -> tuple[int, str]:
    """The Gram tile and block precision for the vector registers numba's code will have.

    Parameters
    ----------
    features : str, optional
        LLVM feature string of the compile target (``"+avx2,+avx512f,..."``);
        default: numba's own (``NUMBA_CPU_FEATURES``, else the host's).
    machine : str, optional
        ``platform.machine()`` (default: this one).

    Returns
    -------
    (int, str)
        ``(3, "float32")`` on x86 without AVX-512 (16 vector registers), else
        ``(4, "float64")``.
    """
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return 4, "float64"
    if features is None:
        features = _numba_features()
    return (4, "float64") if "+avx512f" in features.split(",") else (3, "float32")


def _numba_features() -> str:
    """The LLVM features numba compiles for (the rule of numba's CPU code generator)."""
    from numba.core import config

    if config.CPU_FEATURES is not None:
        return config.CPU_FEATURES
    import llvmlite.binding as llvm

    return llvm.get_host_cpu_features().flatten()


def compiled_statistics(
    u,
    mask,
    y,
    res: Reservoir,
    block_steps: int,
    gram,
    xty,
    state_dtype="float32",
    tile: int | None = None,
    block_dtype: str | None = None,
    sweep: str = "auto",
):
    """Gram and cross products of a slice of a batch with the fused kernel (see the module docstring).

    Parameters as :func:`latentsky.embed.ufunc_kernel.ufunc_statistics`; ``tile``
    and ``block_dtype`` override :func:`gram_plan`'s (3 or 4; "float32" or
    "float64": the precision of the transposed block of states the tiles read).
    ``sweep`` picks the reservoir's loop order: ``"steps"`` (one step at a
    time over the units, this module), ``"units"`` (one unit at a time along
    the steps, :mod:`latentsky.embed.unit_sweep`: no leak only) or ``"auto"``
    (units where there is no leak and N <= ``BLOCK_STEPS``: its blocks are a
    multiple of N steps).  The sums differ only in rounding.  A
    block holds at most ``BLOCK_STEPS`` kept steps whatever ``block_steps``
    asks (the tiles' rows stay in cache).
    """
    plan = gram_plan() if tile is None or block_dtype is None else None
    tile = plan[0] if tile is None else int(tile)
    block_dtype = plan[1] if block_dtype is None else str(block_dtype)
    if tile not in TILES:
        raise ValueError(f"tile={tile}: must be one of {TILES}")
    if block_dtype not in BLOCK_DTYPES:
        raise ValueError(f"block_dtype={block_dtype!r}: must be one of {BLOCK_DTYPES}")
    no_leak = np.float32(res.leak_rate) == np.float32(1.0)
    if sweep not in SWEEPS or (sweep == "units" and not no_leak):
        raise ValueError(f"sweep={sweep!r}: must be one of {SWEEPS} ('units' only without leak)")
    vin = res.input_weights.astype(np.float32)
    bias = res.bias.astype(np.float32)
    N = vin.size
    T = u.shape[1]
    offset = res.drive_offset(T)  # (T, N) P p_t + b, or None: the constant bias
    u = np.ascontiguousarray(u, dtype=np.float32)
    mask, y, r = np.ascontiguousarray(mask), np.ascontiguousarray(y), np.float32(res.cycle_weight)
    if sweep == "units" or (sweep == "auto" and no_leak and N <= BLOCK_STEPS):
        K = N * max(1, min(block_steps, BLOCK_STEPS) // N)
        offT = np.zeros((N, 0), np.float32) if offset is None else np.ascontiguousarray(offset.T, np.float32)
        Zb = np.zeros((N, (K + 7) // 8 * 8), block_dtype)
        in_place = block_dtype == "float32"
        from latentsky.embed.unit_sweep import units

        units(u, mask, y, vin, bias, offT, r, K, tile, in_place, Zb, gram, xty)
        return
    K = min(block_steps, T, BLOCK_STEPS)
    offset = np.zeros((0, N), np.float32) if offset is None else np.ascontiguousarray(offset, np.float32)
    K = (K + 7) // 8 * 8  # the kernel pads a block to whole vectors of steps
    Zt = np.zeros((N, K), block_dtype)
    stats(u, mask, y, vin, bias, offset, r, np.float32(res.leak_rate), K, tile, Zt, gram, xty)


def compiled_tanh32():
    """The kernel's float32 tanh (a numba function, inlined where it is called); None without numba."""
    return None if numba is None else tanh32


def compiled_kernel():
    """The step kernel (numba, compiled on first use, cached on disk); None when numba is not installed."""
    return None if numba is None else stats


# The numba functions are module globals, not closures: numba caches a closure's
# code under its captured values, which differ in every process, so closures were
# compiled again by every process (several seconds) and their cache index grew.
try:
    import numba
except ImportError:  # pragma: no cover - numba comes with umap-learn
    numba = None

if numba is not None:
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
    def gram_tiles4(Zt, j0, kn, G, n):
        # G[i:i+4, j:j+4] += Zt[i:i+4, j0:j0+kn] Zt[j:j+4, j0:j0+kn]^T for n > j >= i (n a multiple of 4);
        # sixteen scalar accumulators that LLVM vectorises along the steps.
        for i in range(0, n, 4):
            for j in range(i, n, 4):
                a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = 0.0
                a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = 0.0
                for k in range(kn):
                    x0 = np.float64(Zt[i, j0 + k])
                    x1 = np.float64(Zt[i + 1, j0 + k])
                    x2 = np.float64(Zt[i + 2, j0 + k])
                    x3 = np.float64(Zt[i + 3, j0 + k])
                    y0 = np.float64(Zt[j, j0 + k])
                    y1 = np.float64(Zt[j + 1, j0 + k])
                    y2 = np.float64(Zt[j + 2, j0 + k])
                    y3 = np.float64(Zt[j + 3, j0 + k])
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
    def gram_tiles3(Zt, j0, kn, G, n):
        # The same with 3 x 3 tiles: nine accumulators and six loaded vectors fit AVX2's 16 registers.
        for i in range(0, n, 3):
            for j in range(i, n, 3):
                a00 = a01 = a02 = a10 = a11 = a12 = a20 = a21 = a22 = 0.0
                for k in range(kn):
                    x0 = np.float64(Zt[i, j0 + k])
                    x1 = np.float64(Zt[i + 1, j0 + k])
                    x2 = np.float64(Zt[i + 2, j0 + k])
                    y0 = np.float64(Zt[j, j0 + k])
                    y1 = np.float64(Zt[j + 1, j0 + k])
                    y2 = np.float64(Zt[j + 2, j0 + k])
                    a00 += x0 * y0
                    a01 += x0 * y1
                    a02 += x0 * y2
                    a10 += x1 * y0
                    a11 += x1 * y1
                    a12 += x1 * y2
                    a20 += x2 * y0
                    a21 += x2 * y1
                    a22 += x2 * y2
                G[i, j] += a00
                G[i, j + 1] += a01
                G[i, j + 2] += a02
                G[i + 1, j] += a10
                G[i + 1, j + 1] += a11
                G[i + 1, j + 2] += a12
                G[i + 2, j] += a20
                G[i + 2, j + 1] += a21
                G[i + 2, j + 2] += a22

    @jit
    def gram_block(Zt, j0, kp, G, nt, tile):
        # the upper triangle of Zt[:, j0:j0+kp] Zt[:, j0:j0+kp]^T added to G: tiles over the first nt
        # units, then the upper column of each row past them (100 = 33 x 3 + 1) by dot products
        if tile == 4:
            gram_tiles4(Zt, j0, kp, G, nt)
        else:
            gram_tiles3(Zt, j0, kp, G, nt)
        for q in range(nt, G.shape[0]):
            for j in range(q + 1):
                s1 = 0.0
                for k in range(j0, j0 + kp):
                    s1 += np.float64(Zt[j, k]) * np.float64(Zt[q, k])
                G[j, q] += s1

    @jit
    def write_sums(G, cy, c1, nm, ny, gram, xty):
        # one spectrum's sums into its (N+1, N+1) Gram and (N+1,) X^T y: both triangles, the bias last
        N = cy.size
        for i in range(N):
            xty[i] = cy[i]
            gram[i, N] = c1[i]
            gram[N, i] = c1[i]
            for j in range(i, N):
                gram[i, j] = G[i, j]
                gram[j, i] = G[i, j]
        xty[N] = ny
        gram[N, N] = nm

    @jit
    def stats(u, mask, y, vin, bias, offset, r, a, K, tile, Zt, gram, xty):
        B, T = u.shape
        N = vin.size
        varying = offset.shape[0] > 0  # a position input: the bias term changes with the step
        nt = N // tile * tile  # units the tiles cover; the last N - nt rows by dot products
        one = np.float32(1.0)
        leaky = a != one
        S = np.zeros((K, N), np.float32)  # the block's kept steps, times their mask, row by row
        G = np.empty((N, N))
        cy = np.empty(N)
        c1 = np.empty(N)
        mk = np.zeros(K)
        yk = np.zeros(K)
        # local state copies: LLVM vectorises the unit loops only when it can
        # prove the state arrays do not alias the output
        xl = np.empty(N, np.float32)
        xn = np.empty(N, np.float32)
        for b in range(B):
            G[:] = 0.0
            cy[:] = 0.0
            c1[:] = 0.0
            xl[:] = 0.0
            nm = 0.0  # sum of m^2: the bias row's own entry
            ny = 0.0  # sum of m y: the bias row's cross product
            t = 0
            while t < T:
                # advance until K steps with a non-zero mask are kept (or the series ends)
                kv = 0
                while t < T and kv < K:
                    ut = u[b, t]
                    bk = offset[t] if varying else bias
                    # W x = r * roll(x, 1): unit i hears unit i-1
                    xn[0] = tanh32(r * xl[N - 1] + vin[0] * ut + bk[0])
                    for i in range(1, N):
                        xn[i] = tanh32(r * xl[i - 1] + vin[i] * ut + bk[i])
                    if leaky:  # a separate loop keeps the one above vectorisable
                        for i in range(N):
                            xn[i] = a * xn[i] + (one - a) * xl[i]
                    for i in range(N):
                        xl[i] = xn[i]
                    m = mask[b, t]
                    if m != 0.0:
                        m32 = np.float32(m)
                        for i in range(N):
                            S[kv, i] = xl[i] * m32
                        mk[kv] = m
                        yk[kv] = y[b, t]
                        nm += m * m
                        ny += m * y[b, t]
                        kv += 1
                    t += 1
                if kv == 0:
                    continue
                kp = (kv + 7) // 8 * 8  # whole vectors: zero steps up to a multiple of 8
                for k in range(kv, kp):
                    mk[k] = 0.0
                    yk[k] = 0.0
                    for i in range(N):
                        S[k, i] = 0.0
                # transpose in 16-step strips (a fixed trip count LLVM unrolls)
                full = kp - kp % 16
                for k0 in range(0, full, 16):
                    for i in range(N):
                        for k in range(16):
                            Zt[i, k0 + k] = S[k0 + k, i]
                for i in range(N):
                    for k in range(full, kp):
                        Zt[i, k] = S[k, i]
                # X^T y and the bias column (sum m^2 x), vectorised along the steps
                for i in range(N):
                    s1 = 0.0
                    s2 = 0.0
                    for k in range(kp):
                        z = np.float64(Zt[i, k])
                        s1 += z * yk[k]
                        s2 += z * mk[k]
                    cy[i] += s1
                    c1[i] += s2
                gram_block(Zt, 0, kp, G, nt, tile)
            write_sums(G, cy, c1, nm, ny, gram[b], xty[b])
