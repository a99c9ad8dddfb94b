"""The Gram accumulation of stage 1, option by option: fused numba tiles against BLAS strips.

For real HARPS spectra (bench/embed.py's data: 4,096 pixels, one pixel per
step, simple cycle N=100, no leak) on ONE core, the time per spectrum of

* the fused numba kernel (:mod:`latentsky.embed.compiled_kernel`) with 3 x 3
  and 4 x 4 tiles of float64 accumulators (float32 states widened in the
  multiply; every product exact, float64 sums);
* the same numba reservoir writing float32 states, then each strip of ``K``
  steps' ``X^T X`` by BLAS -- SGEMM (NumPy ``matmul``) or SSYRK
  (``scipy.linalg.blas``) in float32, strips summed in float64 -- or DSYRK on a
  float64 copy of the strip (exact products, float64 sums);
* the reservoir alone (the floor under every option);

the single-thread float32 SGEMM rate (2048^3) of the same process, and each
option's readouts against the exact float64 Gram of the same float32 states
(max relative error at ridge 1e-2 and 1e-6; the tests ask 1e-5).

All of it for the native instruction set and again with AVX2 forced (a child
process, ``bench/_cpu.py``).  The machine may be shared: each option is timed
in interleaved rounds and its best kept.  Last line: one JSON object.
Run: ``python bench/embed_gram.py [--n-spectra 48] [--rounds 3] [--isa both]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.append(str(Path(__file__).resolve().parent))
import _cpu  # noqa: E402

STRIPS = (128, 256, 512)


def _states_kernel():
    """numba: float32 states of one spectrum, masked, with the constant-1 column: (T, N+1)."""
    import numba

    from latentsky.embed.compiled_kernel import compiled_tanh32

    tanh32 = compiled_tanh32()  # the kernel's own

    @numba.njit(fastmath=True, cache=True, error_model="numpy")
    def states(u, mask, vin, bias, r, S):
        T = u.size
        N = vin.size
        xl = np.zeros(N, np.float32)
        xn = np.empty(N, np.float32)
        for t in range(T):
            ut = u[t]
            xn[0] = tanh32(r * xl[N - 1] + vin[0] * ut + bias[0])
            for i in range(1, N):
                xn[i] = tanh32(r * xl[i - 1] + vin[i] * ut + bias[i])
            m = np.float32(mask[t])
            for i in range(N):
                xl[i] = xn[i]
                S[t, i] = xn[i] * m
            S[t, N] = m
        return S

    return states


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-spectra", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--isa", choices=_cpu.CHOICES, default="both")
    args = parser.parse_args(argv)
    if _cpu.reexec_if_needed(args.isa, __file__, argv):
        return
    print(_cpu.header(), flush=True)
    from embed import load_spectra, make_embedder
    from scipy.linalg import blas

    from latentsky.embed.compiled_kernel import compiled_statistics
    from latentsky.embed.series import prepare_batch
    from latentsky.embed.statistics import solve_readouts

    flux, weight, _ = load_spectra(max(args.n_spectra, 256))
    emb = make_embedder(flux, weight, "numpy")
    res = emb.reservoir_
    b = prepare_batch(flux[: args.n_spectra], weight[: args.n_spectra], offset=emb.offset_, washout=emb.washout)
    u, mask, y = np.ascontiguousarray(b.u, np.float32), b.mask, b.y
    B, T = u.shape
    N = res.n_units
    n1 = N + 1
    vin, bias = res.input_weights.astype(np.float32), res.bias.astype(np.float32)
    states = _states_kernel()
    S = np.empty((T, n1), np.float32)

    def numba_tiles(tile, block_dtype):
        gram, xty = np.zeros((B, n1, n1)), np.zeros((B, n1))
        compiled_statistics(u, mask, y, res, 512, gram, xty, tile=tile, block_dtype=block_dtype)
        return gram

    def strips(kind, K):
        gram = np.zeros((B, n1, n1))
        for i in range(B):
            states(u[i], mask[i], vin, bias, np.float32(res.cycle_weight), S)
            g = gram[i]
            for t0 in range(0, T, K):
                s = S[t0 : t0 + K]
                if kind == "sgemm":
                    g += s.T @ s
                elif kind == "ssyrk":
                    g += blas.ssyrk(1.0, s.T, trans=0)  # upper triangle
                else:
                    g += blas.dsyrk(1.0, s.T.astype(np.float64), trans=0)
            if kind != "sgemm":
                g += np.triu(g, 1).T
        return gram

    def reservoir_only():
        for i in range(B):
            states(u[i], mask[i], vin, bias, np.float32(res.cycle_weight), S)

    # exact float64 Gram of the same float32 states
    exact = np.empty((B, n1, n1))
    for i in range(B):
        s = states(u[i], mask[i], vin, bias, np.float32(res.cycle_weight), S).astype(np.float64)
        exact[i] = s.T @ s
    xty = np.einsum(
        "btn,bt->bn",
        np.stack(
            [
                states(u[i], mask[i], vin, bias, np.float32(res.cycle_weight), S.copy()).astype(np.float64)
                for i in range(B)
            ]
        ),
        mask * y,
    )

    options = {
        f"numba tiles {t}x{t}, {d} block": lambda t=t, d=d: numba_tiles(t, d)
        for t in (3, 4)
        for d in ("float32", "float64")
    }
    for K in STRIPS:
        options[f"sgemm strips K={K}"] = lambda K=K: strips("sgemm", K)
        options[f"ssyrk strips K={K}"] = lambda K=K: strips("ssyrk", K)
    options["dsyrk strips K=512 (float64 copy)"] = lambda: strips("dsyrk", 512)
    options["reservoir alone"] = reservoir_only
    best = {k: np.inf for k in options}
    out = {}
    a = np.random.default_rng(1).random((2048, 2048), dtype=np.float32)
    peak = 0.0
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        a @ a
        peak = max(peak, 2 * 2048**3 / (time.perf_counter() - t0) / 1e9)
        for k, fn in options.items():
            t0 = time.perf_counter()
            g = fn()
            best[k] = min(best[k], (time.perf_counter() - t0) / B)
            out[k] = g

    def err(g, ridge):
        w, w0 = solve_readouts(g, xty, ridge), solve_readouts(exact, xty, ridge)
        return float(np.max(np.linalg.norm(w - w0, axis=1) / np.linalg.norm(w0, axis=1)))

    rows = {}
    for k in options:
        ms = 1e3 * best[k]
        row = {
            "ms_per_spectrum": round(ms, 3),
            "gflops": round(T * N**2 / best[k] / 1e9, 2),
            "pct_of_sgemm_1core": round(100 * T * N**2 / best[k] / 1e9 / peak, 1),
        }
        if out[k] is not None:
            row["readout_err_ridge_1e-2"] = float(f"{err(out[k], 1e-2):.1e}")
            row["readout_err_ridge_1e-6"] = float(f"{err(out[k], 1e-6):.1e}")
        rows[k] = row
        print(
            f"{k:36s} {ms:7.3f} ms/spectrum {row['gflops']:6.1f} GFLOP/s (T N^2) {row['pct_of_sgemm_1core']:5.1f}% "
            f"of 1-core sgemm  err {row.get('readout_err_ridge_1e-2', '-')!s:>8} / "
            f"{row.get('readout_err_ridge_1e-6', '-')}",
            flush=True,
        )
    print(f"single-core sgemm 2048^3: {peak:.1f} GFLOP/s; load average {os.getloadavg()[0]:.1f}", flush=True)
    result = {
        "options": rows,
        "sgemm_gflops_1core": round(peak, 1),
        "n_spectra": B,
        "n_steps": T,
        "n_units": N,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(_cpu.combine(result, args.isa, __file__, argv)))


if __name__ == "__main__":
    main()
