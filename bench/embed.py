"""Benchmark of stage 1 (ESN readout embedding): ours beside reservoirpy and a plain loop.

One run, same data and hyper-parameters for everyone: real HARPS s1d spectra
(alpha Cen B, Gl 581, Gl 273 from ../shared/data, or the bundled sample when
that folder is absent) on a 4,096-pixel log-lambda grid, replicated to
``--n-spectra`` (default 2,048) with random Doppler shifts (a translation on
the grid, |v| < 30 km/s) and 0.3-1% noise; a simple cycle reservoir of N=100
units, washout 20, ridge 1e-2.

Printed:

* spectra/s of our back ends (NumPy with the compiled kernel -- the default --,
  NumPy with plain ufuncs, TensorFlow), each embedding every spectrum
  (statistics and readouts);
* reservoirpy 0.4.2 computing the same per-spectrum readouts: its Reservoir
  node driven one spectrum at a time (it fits one shared readout over several
  series, so series cannot be batched) and its Ridge node on the states with a
  column of ones (``fit_bias=False``, so the bias is penalised as in ours), and a
  plain per-spectrum float64 NumPy loop (:func:`reference_statistics`), both
  timed on a subset (``--n-slow``) because they are ~50x slower; their
  readouts are checked against ours;
* this machine's float32 matrix-multiply peak, timed in the same run, and our
  rate as a fraction of it counting T*N^2 flops per spectrum (one symmetric
  Gram);
* the projected time for the 267,487 HARPS spectra of the ESO archive.

The last line is one JSON object.  Run: ``python bench/embed.py [--n-spectra N]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

HARPS_ARCHIVE_SPECTRA = 267_487
N_UNITS, N_PIXELS, WASHOUT, RIDGE = 100, 4096, 20, 1e-2
C_KMS = 299_792.458

log = logging.getLogger("bench.embed")


def harps_files() -> list[Path]:
    """Real HARPS s1d files: the shared data folder, else the bundled sample."""
    repo = Path(__file__).resolve().parents[1]
    shared = Path(os.environ.get("LATENTSKY_SHARED_DATA", repo.parent / "shared" / "data"))
    if (shared / "harps").is_dir():
        files = sorted((shared / "harps" / "alfCenB_s1d").glob("*_s1d_A.fits"))
        files += sorted((shared / "harps" / "actin_testfiles").glob("*_s1d_A.fits"))
        return files
    from latentsky.data import sample_path

    return sorted((sample_path() / "harps").glob("*_s1d_A.fits*"))


def load_spectra(n_spectra: int, seed: int = 0):
    """(flux, weight) of ``n_spectra`` spectra: the real ones, shifted and noised copies."""
    from latentsky.io.grid import LogLambdaGrid, normalise, resample
    from latentsky.io.readers import read_spectrum

    grid = LogLambdaGrid(3800.0, 6900.0, N_PIXELS)
    base_f, base_w = [], []
    for path in harps_files():
        flux, ivar = normalise(*resample(read_spectrum(path), grid), "median")
        base_f.append(flux)
        base_w.append(ivar)
    rng = np.random.default_rng(seed)
    pix = np.arange(N_PIXELS, dtype="f8")
    flux = np.empty((n_spectra, N_PIXELS))
    weight = np.empty((n_spectra, N_PIXELS), dtype="f4")
    for j in range(n_spectra):
        k = j % len(base_f)
        shift = np.log1p(rng.uniform(-30, 30) / C_KMS) / grid.dln          # pixels
        good = np.interp(pix - shift, pix, (base_w[k] > 0).astype("f8"), left=0, right=0) > 0.999
        f = np.interp(pix - shift, pix, base_f[k])
        f *= 1.0 + rng.normal(0.0, rng.uniform(0.003, 0.01), N_PIXELS)
        flux[j] = np.where(good, f, 0.0)
        weight[j] = np.where(good, np.interp(pix - shift, pix, base_w[k]), 0.0)
    return flux, weight, len(base_f)


def sgemm_gflops(n: int = 4096, repeats: int = 3) -> float:
    """float32 matrix-multiply rate of this machine (all cores BLAS uses), GFLOP/s."""
    rng = np.random.default_rng(1)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2.0 * n**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def ours(flux, weight, backend: str, kernel: str | None = None, repeats: int = 1):
    """(spectra/s, readouts) of our embedder over all spectra."""
    from latentsky.embed import ESNReadoutEmbedder
    from latentsky.embed.backends import NumpyBackend

    emb = ESNReadoutEmbedder(n_units=N_UNITS, washout=WASHOUT, ridge=RIDGE, backend=backend)
    emb.fit(flux[:256], weight=weight[:256])
    if kernel is not None:
        emb._backend_obj = NumpyBackend(kernel=kernel)
        emb._backend_obj_name = (emb.backend, emb.block_steps, emb.n_threads, emb.state_dtype)
    emb.transform(flux[:64], weight[:64])                     # warm-up: compile, import, trace
    out = {}
    best = min(_timed(lambda: out.__setitem__("w", emb.transform(flux, weight))) for _ in range(repeats))
    return len(flux) / best, out["w"], emb


def reservoirpy_rate(flux, weight, emb, n: int):
    """reservoirpy driven per spectrum: (spectra/s, readouts of the first n spectra)."""
    from reservoirpy.nodes import Reservoir, Ridge

    from latentsky.embed.esn import prepare_batch

    res = emb.reservoir_
    node = Reservoir(units=N_UNITS, lr=res.leak_rate, W=res.dense_matrix(), Win=res.input_weights[:, None],
                     bias=res.bias, activation="tanh", input_dim=1)
    readout = Ridge(ridge=RIDGE, fit_bias=False)
    b = prepare_batch(flux[:n], weight[:n], offset=emb.offset_, washout=WASHOUT, dtype="float64")
    out = np.empty((n, N_UNITS + 1))
    t0 = time.perf_counter()
    for i in range(n):
        states = node.run(b.u[i][:, None])
        node.reset()                                   # (reset before the first run raises in 0.4.2)
        sel = b.mask[i] > 0
        X = np.hstack([states[sel], np.ones((sel.sum(), 1))])
        readout.fit(X, b.y[i, sel][:, None])
        out[i] = readout.Wout[:, 0]
    return n / (time.perf_counter() - t0), out


def numpy_loop_rate(flux, weight, emb, n: int):
    """The plain float64 one-spectrum-at-a-time loop: (spectra/s, readouts)."""
    from latentsky.embed import reference_statistics

    t0 = time.perf_counter()
    st = reference_statistics(flux[:n], weight[:n], emb.reservoir_, offset=emb.offset_, washout=WASHOUT)
    w = st.readouts(RIDGE)
    return n / (time.perf_counter() - t0), w


def rel_err(a, b) -> float:
    return float(np.max(np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-spectra", type=int, default=2048)
    parser.add_argument("--n-slow", type=int, default=48, help="spectra for reservoirpy and the NumPy loop")
    parser.add_argument("--no-tensorflow", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    t0 = time.perf_counter()
    flux, weight, n_real = load_spectra(args.n_spectra)
    log.info("data: %d spectra x %d pixels from %d real HARPS s1d files (+ shifts and noise), %.0f%% pixels "
             "masked; loaded in %.1f s", *flux.shape, n_real, 100 * np.mean(weight == 0), time.perf_counter() - t0)
    log.info("cores: %s, reservoir: simple cycle N=%d, washout %d, ridge %g",
             len(os.sched_getaffinity(0)), N_UNITS, WASHOUT, RIDGE)

    peak = sgemm_gflops()
    rates = {}
    rate, w_ours, emb = ours(flux, weight, "numpy", repeats=2)
    rates["numpy (compiled kernel, default)"] = rate
    rates["numpy (ufunc kernel)"], w_ufunc, _ = ours(flux, weight, "numpy", kernel="ufunc")
    if not args.no_tensorflow:
        rates["tensorflow (CPU)" if not _gpu() else "tensorflow (GPU)"], w_tf, _ = ours(flux, weight, "tensorflow")
    n_slow = min(args.n_slow, len(flux))
    rp_rate, w_rp = reservoirpy_rate(flux, weight, emb, n_slow)
    loop_rate, w_loop = numpy_loop_rate(flux, weight, emb, n_slow)
    peak = max(peak, sgemm_gflops())       # again at the end: the machine is shared, keep the better

    flops = N_PIXELS * N_UNITS**2          # T N^2 per spectrum: one symmetric Gram
    spectra_per_s = rates["numpy (compiled kernel, default)"]
    for name, r in rates.items():
        log.info("ours, %-32s %8.0f spectra/s   %5.1f%% of sgemm peak", name, r, 100 * r * flops / (peak * 1e9))
    log.info("reservoirpy 0.4.2, per spectrum    %8.1f spectra/s   (timed on %d spectra)", rp_rate, n_slow)
    log.info("plain NumPy float64 loop            %8.1f spectra/s   (timed on %d spectra)", loop_rate, n_slow)
    log.info("float32 sgemm peak (4096^3, this run): %.0f GFLOP/s", peak)
    log.info("readouts vs the float64 loop (max relative): ours %.1e, ufunc kernel %.1e, reservoirpy %.1e%s",
             rel_err(w_ours[:n_slow], w_loop), rel_err(w_ufunc[:n_slow], w_loop), rel_err(w_rp, w_loop),
             "" if args.no_tensorflow else f", tensorflow {rel_err(w_tf[:n_slow], w_loop):.1e}")
    projected = HARPS_ARCHIVE_SPECTRA / spectra_per_s
    log.info("projected: %d HARPS spectra at %d pixels in %.0f s (%.1f min) with the default back end",
             HARPS_ARCHIVE_SPECTRA, N_PIXELS, projected, projected / 60)
    result = {
        "spectra_per_s": round(spectra_per_s, 1),
        "backend_spectra_per_s": {k: round(v, 1) for k, v in rates.items()},
        "reservoirpy_spectra_per_s": round(rp_rate, 2),
        "numpy_loop_spectra_per_s": round(loop_rate, 2),
        "speedup_vs_reservoirpy": round(spectra_per_s / rp_rate, 1),
        "speedup_vs_numpy_loop": round(spectra_per_s / loop_rate, 1),
        "sgemm_gflops": round(peak, 1),
        "fraction_of_sgemm_peak": round(spectra_per_s * flops / (peak * 1e9), 4),
        "projected_harps_s": round(projected, 1),
        "n_spectra": len(flux), "n_pixels": N_PIXELS, "n_units": N_UNITS, "slow_peers_timed_on": n_slow,
        "cores": len(os.sched_getaffinity(0)),
    }
    print(json.dumps(result))


def _gpu() -> bool:
    from latentsky.embed.backends import tensorflow_has_gpu

    return tensorflow_has_gpu()


if __name__ == "__main__":
    main()
