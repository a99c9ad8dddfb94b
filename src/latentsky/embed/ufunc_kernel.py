"""The plain-NumPy kernel of the NumPy back end: any reservoir, float32 or float64 states.

A batch of states advances with a few ufunc calls per step: the input drive
of a block of steps is written in one operation into the state buffer (time
major, ``(K, B, N)``), which the recursion then overwrites in place (``W x`` a
shifted copy for the simple cycle, a matrix product for a random reservoir,
then tanh and the leak).  The Gram sums are float64 batched matrix products on
float64 copies of a few spectra's design rows at a time.  2-3x slower than
:mod:`latentsky.embed.compiled_kernel` (each pass streams the whole state
buffer through memory), it is the fall-back for everything that kernel does
not cover and the second implementation the tests hold it to.
"""

from __future__ import annotations

import numpy as np

from latentsky.embed.reservoir import Reservoir


def ufunc_statistics(
    u, mask, y, res: Reservoir, block_steps: int, gram, xty, state_dtype="float32", sub_batch: int = 16
):
    """Gram and cross products of a slice of a batch with plain NumPy ufuncs (see the module docstring).

    Parameters
    ----------
    u : ndarray (B, T)
        Shifted input (0 at invalid values).
    mask, y : ndarray (B, T) float64
        Step mask and target.
    res : Reservoir
    block_steps : int
        Steps per block of the state buffer.
    gram : ndarray (B, N+1, N+1) float64
        Receives X^T X (added to).
    xty : ndarray (B, N+1) float64
        Receives X^T y (added to).
    state_dtype : str
        Of the states (float32 or float64); the sums are float64 either way.
    sub_batch : int
        Spectra whose float64 design rows are formed at once for the Gram products.
    """
    B, T = u.shape
    N = res.n_units
    K = min(block_steps, T)
    f32 = np.dtype(state_dtype).type  # the state precision (float32 unless asked otherwise)
    r = f32(res.cycle_weight)
    a = f32(res.leak_rate)
    vin = res.input_weights.astype(f32)
    bias = res.bias.astype(f32)
    has_bias = bool(np.any(bias))
    W_T = None if res.matrix is None else res.matrix.T.astype(f32)
    # Time-major state buffer: each step's (B, N) slab is contiguous for the
    # elementwise recursion; the Gram reads it per spectrum through a copy.
    offset = res.drive_offset(T)  # P p_t + b per step, or None (constant bias)
    offset = None if offset is None else offset.astype(f32)
    S = np.empty((K, B, N), f32)
    x = np.zeros((B, N), f32)  # state carried between blocks
    wx = np.empty((B, N), f32)
    Z = np.empty((sub_batch, K, N + 1))  # float64 design rows [x_t, 1] of a few spectra
    uT = np.ascontiguousarray(u.T, dtype=f32)  # (T, B)
    for t0 in range(0, T, K):
        k_n = min(K, T - t0)
        St = S[:k_n]
        # Input drive of the whole block in one operation; the recursion then
        # adds W x_{t-1} and applies tanh in place.
        np.multiply(uT[t0 : t0 + k_n, :, None], vin, out=St)
        if offset is not None:
            St += offset[t0 : t0 + k_n, None, :]
        elif has_bias:
            St += bias
        for k in range(k_n):
            if W_T is None:  # W x = r * roll(x, 1): a shifted copy, no matrix product
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
        m = mask[:, t0 : t0 + k_n]
        yb = y[:, t0 : t0 + k_n, None]
        for i in range(0, B, sub_batch):
            j = min(i + sub_batch, B)
            z = Z[: j - i, :k_n]
            z[:, :, :N] = St[:, i:j].transpose(1, 0, 2)  # float32 -> float64
            z[:, :, N] = m[i:j]
            bad = np.nonzero(m[i:j] == 0)
            if bad[0].size:  # masked steps leave the sums
                z[bad[0], bad[1], :N] = 0.0
            zt = z.transpose(0, 2, 1)
            gram[i:j] += np.matmul(zt, z)
            xty[i:j] += np.matmul(zt, yb[i:j])[:, :, 0]
