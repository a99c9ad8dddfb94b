"""Training throughput of the model-coupled autoencoder (the ``coupled`` map) on 100,000 readouts (N = 100).

The readouts and statistics are made from the bundled sample's real ones: the
125 spectra are embedded, then each of the ``--n`` rows takes one spectrum's
Gram matrix ``G`` and a readout ``w = w_i + noise`` with ``h`` and ``y'y`` set
so that ``w`` is the ridge solution with the same residual error (a valid,
self-consistent EMBEDDINGS directory in the stage-1 layout, about 4 GB).

Measured, in one process (median epoch after the first, which compiles):

* ``in_memory``: ``LatentAutoencoder(in_memory=True)`` (statistics prepared
  once into TensorFlow variables; batches gathered inside TensorFlow);
* ``streaming`` (the JSON's ``streaming_spectra_per_s``):
  ``LatentAutoencoder(in_memory=False, cache_dir=...)``, streaming from disk
  every epoch the prepared float32 inputs that the first fit writes in one pass
  over the EMBEDDINGS (its time, ``streaming_cache_build_s``, is reported
  apart, as the in-memory preparation is);
* ``streaming_zarr``: ``in_memory=False`` without a cache, decompressing and
  converting the stage-1 float64 Zarr chunks every epoch (bound by Zarr's
  zstd decoding here);
* ``keras_mse``: a plain ``keras.Sequential`` dense autoencoder of the same size
  with ``compile(loss="mse")`` on the readouts alone, the familiar reference;
* ``lbfgs``: the full-batch float64 L-BFGS path (what small training sets use)
  on the first ``--lbfgs-rows`` readouts: spectra through the loss and its
  gradient per second.

All ours train the ``coupled`` map (the model-coupled loss alone; minibatch
Adam unless said otherwise).  The
streaming runs go first so that their peak memory is known alone.  Last line:
one JSON object with ``in_memory_spectra_per_s, streaming_spectra_per_s,
keras_mse_epoch_s, peak_rss_mb`` and more.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sample_embeddings(work: Path, n_units: int) -> Path:
    from latentsky.data import sample_path
    from latentsky.embed.runner import embed_store
    from latentsky.ingest import ingest

    ingest([sample_path()], work / "store")
    return embed_store(work / "store", work / "sample-embeddings", n_units=n_units, ridge=1e-2)


def synthesise(src: Path, dest: Path, n: int, *, chunk: int = 2000, seed: int = 0) -> Path:
    """Write ``n`` rows in the EMBEDDINGS layout, made from the real rows of ``src`` (see the docstring)."""
    import pandas as pd
    import zarr

    from latentsky.embed.layout import ARRAYS_DIR, CATALOG_FILE, open_embeddings, unpack_gram

    done = dest / "done.json"
    if done.exists() and json.loads(done.read_text()).get("n") == n:
        return dest
    emb = open_embeddings(src)
    ridge = float(emb.attrs["ridge"])
    w0, gp0, h0 = emb.readout[:], emb.gram[:], emb.xty[:]
    c0, s0 = emb.yty[:], emb.n_steps[:]
    g0 = unpack_gram(gp0)
    m = w0.shape[1]
    floor0 = c0 - np.einsum("ni,ni->n", w0, h0) - ridge * np.einsum("ni,ni->n", w0, w0)
    std = w0.std(0)
    rng = np.random.default_rng(seed)
    dest.mkdir(parents=True, exist_ok=True)
    group = zarr.open_group(dest / ARRAYS_DIR, mode="w")
    p = m * (m + 1) // 2
    arrays = {
        "readout": group.create_array("readout", shape=(n, m), chunks=(chunk, m), dtype="f8"),
        "gram": group.create_array("gram", shape=(n, p), chunks=(chunk, p), dtype="f8"),
        "xty": group.create_array("xty", shape=(n, m), chunks=(chunk, m), dtype="f8"),
        "yty": group.create_array("yty", shape=(n,), chunks=(chunk,), dtype="f8"),
        "n_steps": group.create_array("n_steps", shape=(n,), chunks=(chunk,), dtype="i8"),
    }
    src_rows = rng.integers(len(w0), size=n)
    for s in range(0, n, chunk):
        i = src_rows[s : s + chunk]
        w = w0[i] + 0.1 * std * rng.standard_normal((len(i), m))
        h = np.einsum("nij,nj->ni", g0[i], w) + ridge * w  # w is then exactly the ridge solution
        c = floor0[i] + np.einsum("ni,ni->n", w, h) + ridge * np.einsum("ni,ni->n", w, w)
        arrays["readout"][s : s + len(i)] = w
        arrays["gram"][s : s + len(i)] = gp0[i]
        arrays["xty"][s : s + len(i)] = h
        arrays["yty"][s : s + len(i)] = c
        arrays["n_steps"][s : s + len(i)] = s0[i]
    group.attrs.update({**emb.attrs})
    pd.DataFrame({"id": [f"synthetic-{k}" for k in range(n)], "row": np.arange(n)}).to_parquet(
        dest / CATALOG_FILE, index=False
    )
    done.write_text(json.dumps({"n": n}))
    return dest


def time_ours(
    path: Path,
    *,
    in_memory: bool,
    epochs: int,
    batch: int,
    hidden: int,
    deterministic: bool,
    cache_dir: Path | None = None,
) -> dict:
    from latentsky.autoencoder import LatentAutoencoder

    events = []
    t0 = time.perf_counter()
    est = LatentAutoencoder(
        map="coupled",
        optimizer="adam",
        restarts=1,
        hidden=(hidden,),
        epochs=epochs,
        batch_size=batch,
        validation_fraction=0.0,
        patience=epochs,
        lr_patience=0,
        in_memory=in_memory,
        learning_rate=1e-3,
        progress=events.append,
        random_state=0,
        deterministic=deterministic,
        cache_dir=cache_dir,
    )
    est.fit(path)
    total = time.perf_counter() - t0
    ends = [e.elapsed for e in events if e.logs]
    epoch_s = np.diff([0.0] + ends)
    steady = float(statistics.median(epoch_s[1:])) if len(epoch_s) > 1 else float(epoch_s[0])
    n = est.n_train_
    return {
        "epoch_s": [round(float(x), 3) for x in epoch_s],
        "steady_epoch_s": steady,
        "spectra_per_s": n / steady,
        "fit_total_s": total,
        "loss": est.history_["loss"],
        "params": est.model_.count_params(),
    }


def time_lbfgs(path: Path, *, rows: int, hidden: int, iterations: int = 20) -> dict:
    """The full-batch L-BFGS path on the first ``rows`` readouts: spectra x loss evaluations per second."""
    from latentsky.autoencoder import LatentAutoencoder
    from latentsky.embed.layout import open_embeddings

    emb = open_embeddings(path)
    readouts = np.asarray(emb.readout[:rows], dtype="f8")
    stats = emb.statistics(slice(0, rows))
    t0 = time.perf_counter()
    est = LatentAutoencoder(
        map="coupled",
        optimizer="lbfgs",
        restarts=1,
        max_iter=iterations,
        tol=0.0,
        hidden=(hidden,),
        validation_fraction=0.0,
        random_state=0,
    )
    est.fit(readouts, stats=stats)
    total = time.perf_counter() - t0
    n_eval = est.fit_summary_["n_eval"]
    return {
        "fit_total_s": total,
        "n_eval": n_eval,
        "spectra_per_s": rows * n_eval / total,
        "loss": est.fit_summary_["loss"],
    }


def time_keras_mse(path: Path, *, epochs: int, batch: int, hidden: int) -> dict:
    import keras

    from latentsky.embed.layout import open_embeddings

    x = np.asarray(open_embeddings(path).readout[:], dtype="f4")
    x = (x - x.mean(0)) / x.std(0)
    keras.utils.set_random_seed(0)
    m = x.shape[1]
    model = keras.Sequential(
        [
            keras.Input((m,)),
            keras.layers.Dense(hidden, activation="tanh"),
            keras.layers.Dense(2),
            keras.layers.Dense(hidden, activation="tanh"),
            keras.layers.Dense(m),
        ]
    )
    model.compile(optimizer="adam", loss="mse")

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t)

    times: list[float] = []
    model.fit(x, x, batch_size=batch, epochs=epochs, verbose=0, callbacks=[Timer()])
    steady = float(statistics.median(times[1:])) if len(times) > 1 else times[0]
    return {
        "epoch_s": [round(t, 3) for t in times],
        "steady_epoch_s": steady,
        "spectra_per_s": len(x) / steady,
        "params": model.count_params(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="readouts (default 100,000)")
    ap.add_argument("--n-units", type=int, default=100, help="reservoir units N (default 100)")
    ap.add_argument("--epochs", type=int, default=4, help="epochs per measurement (the first is not timed)")
    ap.add_argument("--batch", type=int, default=1024, help="batch size (default 1024)")
    ap.add_argument("--hidden", type=int, default=64, help="hidden units (default 64)")
    ap.add_argument(
        "--lbfgs-rows", type=int, default=2000, help="readouts of the full-batch L-BFGS measurement (default 2,000)"
    )
    ap.add_argument(
        "--deterministic",
        action="store_true",
        help="train with deterministic ops (no XLA), the estimator's default; off here by default",
    )
    ap.add_argument(
        "--work",
        type=Path,
        default=None,
        help="folder for the synthetic EMBEDDINGS (kept and reused; default: a temporary one)",
    )
    args = ap.parse_args()

    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="latentsky-bench-train-")
        args.work = Path(tmp.name)
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    src = sample_embeddings(args.work, args.n_units)
    path = synthesise(src, args.work / f"embeddings-{args.n}", args.n)
    make_s = time.perf_counter() - t0
    size_gb = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e9
    print(f"data: {args.n} readouts, N={args.n_units}, {size_gb:.2f} GB on disk, made in {make_s:.0f} s")

    kw = dict(epochs=args.epochs, batch=args.batch, hidden=args.hidden)
    base_rss = rss_peak_mb()
    mse = time_keras_mse(path, **kw)
    print(f"keras MSE dense AE   : {mse['steady_epoch_s']:.3f} s/epoch, {mse['spectra_per_s']:,.0f} spectra/s")
    zarr = time_ours(path, in_memory=False, deterministic=args.deterministic, **kw)
    zarr_rss = rss_peak_mb()
    print(
        f"ours, streaming from the stage-1 Zarr: {zarr['steady_epoch_s']:.3f} s/epoch, "
        f"{zarr['spectra_per_s']:,.0f} spectra/s (epochs {zarr['epoch_s']}), peak RSS so far {zarr_rss:.0f} MB"
    )
    cache = args.work / "cache"
    shutil.rmtree(cache, ignore_errors=True)  # timed from scratch even when --work is reused
    t0 = time.perf_counter()
    time_ours(path, in_memory=False, deterministic=args.deterministic, cache_dir=cache, **{**kw, "epochs": 1})
    build_s = time.perf_counter() - t0
    stream = time_ours(path, in_memory=False, deterministic=args.deterministic, cache_dir=cache, **kw)
    stream_rss = rss_peak_mb()
    print(
        f"ours, streaming from disk (float32 training cache, written once in {build_s:.1f} s incl. one epoch): "
        f"{stream['steady_epoch_s']:.3f} s/epoch, {stream['spectra_per_s']:,.0f} spectra/s "
        f"(epochs {stream['epoch_s']}), peak RSS so far {stream_rss:.0f} MB"
    )
    mem = time_ours(path, in_memory=True, deterministic=args.deterministic, **kw)
    peak = rss_peak_mb()
    print(
        f"ours, in memory      : {mem['steady_epoch_s']:.3f} s/epoch, {mem['spectra_per_s']:,.0f} spectra/s "
        f"(epochs {mem['epoch_s']}; fit incl. preparing {mem['fit_total_s']:.1f} s), peak RSS {peak:.0f} MB"
    )
    lbfgs = time_lbfgs(path, rows=args.lbfgs_rows, hidden=args.hidden)
    print(
        f"ours, full-batch L-BFGS on {args.lbfgs_rows:,} readouts: {lbfgs['spectra_per_s']:,.0f} spectra/s through "
        f"the loss and its gradient ({lbfgs['n_eval']} evaluations in {lbfgs['fit_total_s']:.1f} s, set-up included)"
    )
    print("targets: >= 100,000 spectra/s in memory, >= 20,000 streaming")
    result = {
        "n_readouts": args.n,
        "n_units": args.n_units,
        "batch_size": args.batch,
        "params": mem["params"],
        "in_memory_spectra_per_s": round(mem["spectra_per_s"]),
        "streaming_spectra_per_s": round(stream["spectra_per_s"]),
        "streaming_zarr_spectra_per_s": round(zarr["spectra_per_s"]),
        "streaming_cache_build_s": round(build_s, 1),
        "keras_mse_epoch_s": round(mse["steady_epoch_s"], 4),
        "keras_mse_spectra_per_s": round(mse["spectra_per_s"]),
        "in_memory_epoch_s": round(mem["steady_epoch_s"], 4),
        "streaming_epoch_s": round(stream["steady_epoch_s"], 4),
        "streaming_zarr_epoch_s": round(zarr["steady_epoch_s"], 4),
        "in_memory_fit_total_s": round(mem["fit_total_s"], 1),
        "peak_rss_mb": round(peak),
        "streaming_peak_rss_mb": round(stream_rss),
        "start_rss_mb": round(base_rss),
        "lbfgs_spectra_per_s": round(lbfgs["spectra_per_s"]),
        "lbfgs_rows": args.lbfgs_rows,
        "data_gb": round(size_gb, 2),
        "cpu_count": os.cpu_count(),
        "deterministic": args.deterministic,
    }
    if tmp is not None:
        tmp.cleanup()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
