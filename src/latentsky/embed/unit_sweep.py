"""The fused kernel for reservoirs without leak: the states computed unit by unit, along the steps.

In the simple cycle without leak (``leak_rate`` 1) unit ``i`` at step ``t``
depends only on unit ``i-1`` at step ``t-1`` (unit 0 on unit ``N-1``).  So a
unit's states over a run of steps are one vector loop over the steps, given
the previous unit's states one step earlier, and the states come out in the
layout the Gram tiles read (units x steps): no per-step loop over units, no
transpose.  :mod:`latentsky.embed.compiled_kernel` (which builds this kernel
and dispatches to it) sweeps one step at a time over the units instead; with a
leak a unit also depends on its own previous step, which that order needs.

Schedule.  The states of a block of ``K`` steps (a multiple of ``N``) live in
``Z`` (N x (K + N + 17) float32: column ``c + 1`` holds step ``base + c``, the
last 16 columns are slack for a block's final vector of steps).  In
sub-pass ``s`` (steps ``s, s + N, ...`` of the block) unit ``i`` computes
columns ``[s + i, s + i + N)``: a parallelogram.  Unit ``i`` reads unit
``i - 1``'s columns ``[s + i - 1, s + i - 1 + N)``, just computed in the same
sub-pass, and unit 0 reads unit ``N - 1``'s from the sub-pass before (which
is why a sub-pass is exactly N steps).  After the block every unit holds
columns ``[0, K)``; unit ``i``'s columns past ``K`` (``i`` of them, plus the
step before the block) move to the front for the next block.  The first
block's triangle (unit ``i`` at steps ``[0, i)``) starts from the zero state.

Per block the masked states go to the Gram tiles and to the ``X^T y`` and bias
column dot products exactly as in the step kernel (float64 sums of exact
products).  A block whose steps are all kept with mask 1 is read in place when
the tiles take float32 rows (AVX2); otherwise its kept steps times their mask
are copied into ``Zb`` (float32 or float64, the tiles' precision), which also
skips steps with mask 0.
"""

from __future__ import annotations

import numba
import numpy as np

from latentsky.embed.compiled_kernel import gram_block, jit, tanh32, write_sums


@numba.njit(fastmath=True, inline="always", cache=True, error_model="numpy")
def unit_states(zi, zp, uu, r, vi, bi, oi, varying):
    # one unit's states over a run of steps from the previous unit's one step earlier (all views
    # starting at 0: LLVM vectorises these loops, not 2-D indexing); oi: the bias term per step
    if varying:
        for k in range(zi.size):
            zi[k] = tanh32(r * zp[k] + vi * uu[k] + oi[k])
    else:
        for k in range(zi.size):
            zi[k] = tanh32(r * zp[k] + vi * uu[k] + bi)


@jit
def units(u, mask, y, vin, bias, offT, r, K, tile, in_place, Zb, gram, xty):
    B, T = u.shape
    N = vin.size
    varying = offT.shape[1] > 0  # a position input: the bias term changes with the step (offT: N x T)
    nt = N // tile * tile
    Z = np.zeros((N, K + N + 17), np.float32)
    ub = np.zeros(T + K + N, np.float32)  # the input, zero past the series' end
    mk = np.zeros(K + 8)
    mk32 = np.zeros(K + 8, np.float32)
    yk = np.zeros(K + 8)
    keep = np.zeros(K + 8, np.int64)
    G = np.empty((N, N))
    cy = np.empty(N)
    c1 = np.empty(N)
    for b in range(B):
        G[:] = 0.0
        cy[:] = 0.0
        c1[:] = 0.0
        nm = 0.0  # sum of m^2: the bias row's own entry
        ny = 0.0  # sum of m y: the bias row's cross product
        for t in range(T):
            ub[t] = u[b, t]
        for i in range(N):
            Z[i, 0] = 0.0  # the state before the first step
        # the first block's triangle: unit i at steps [0, i), from the zero state
        for i in range(1, N):
            ce = min(i, T)
            unit_states(Z[i, 1 : ce + 1], Z[i - 1, 0:ce], ub[0:ce], r, vin[i], bias[i], offT[i, 0:ce], varying)
        base = 0
        while base < T:
            kb = min(K, T - base)  # steps of this block
            for s in range(0, kb, N):
                for i in range(N):
                    c0 = s + i
                    ce = min(s + N + i, T - base)
                    if ce <= c0:
                        continue
                    unit_states(
                        Z[i, c0 + 1 : ce + 1],
                        Z[i - 1 if i > 0 else N - 1, c0:ce],
                        ub[base + c0 : base + ce],
                        r,
                        vin[i],
                        bias[i],
                        offT[i, base + c0 : base + ce],
                        varying,
                    )
            kv = 0
            ones = True
            for c in range(kb):
                m = mask[b, base + c]
                if m != 0.0:
                    keep[kv] = c
                    mk[kv] = m
                    mk32[kv] = np.float32(m)
                    yk[kv] = y[b, base + c]
                    nm += m * m
                    ny += m * y[b, base + c]
                    ones = ones and m == 1.0
                    kv += 1
            if kv > 0:
                kp = (kv + 7) // 8 * 8  # whole vectors: zero steps up to a multiple of 8
                for k in range(kv, kp):
                    mk[k] = 0.0
                    mk32[k] = 0.0
                    yk[k] = 0.0
                    keep[k] = 0
                if in_place and ones and kv == kb and kp == kb:
                    for i in range(N):  # X^T y and the bias column (sum x) from the states themselves
                        zs = Z[i, 1 : kb + 1]
                        s1 = 0.0
                        s2 = 0.0
                        for k in range(kb):
                            z = np.float64(zs[k])
                            s1 += z * yk[k]
                            s2 += z
                        cy[i] += s1
                        c1[i] += s2
                    gram_block(Z, 1, kb, G, nt, tile)
                else:
                    for i in range(N):  # the kept steps times their mask, with X^T y and the bias column
                        zd = Zb[i]
                        s1 = 0.0
                        s2 = 0.0
                        if kv == kb:
                            zs = Z[i, 1 : kp + 1]  # steps past the block have mask 0 here
                            for k in range(kp):
                                z32 = zs[k] * mk32[k]
                                zd[k] = z32
                                z = np.float64(z32)
                                s1 += z * yk[k]
                                s2 += z * mk[k]
                        else:
                            zs = Z[i]
                            for k in range(kp):
                                z32 = zs[keep[k] + 1] * mk32[k]
                                zd[k] = z32
                                z = np.float64(z32)
                                s1 += z * yk[k]
                                s2 += z * mk[k]
                        cy[i] += s1
                        c1[i] += s2
                    gram_block(Zb, 0, kp, G, nt, tile)
            base += kb
            if base < T:  # unit i's step before the next block and its i steps into it move to the front
                for i in range(N):
                    src = Z[i, kb : kb + i + 1]
                    dst = Z[i, 0 : i + 1]
                    for j in range(i + 1):
                        dst[j] = src[j]
        write_sums(G, cy, c1, nm, ny, gram[b], xty[b])
