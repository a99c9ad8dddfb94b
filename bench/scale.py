"""The whole pipeline on 10^4, 10^5 and 10^6 synthetic spectra: cost per spectrum and peak memory.

For each size N, a synthetic store of N spectra x 4,096 pixels is derived from
the bundled sample (``latentsky.synth``: real templates, Doppler-shifted,
tilted and noisy; written chunk by chunk), then the pipeline runs on it
(stage 1 with the default N=100 cycle reservoir, training, encoding with the
anomaly scores) twice: in one process, and with embed and encode on a Dask
LocalCluster of ``--workers`` single-threaded worker processes.  Training runs
in the session in both modes, so the cluster run reuses the single run's model
(its ``wall_s_N_cluster`` is embed + encode) and the two latent tables must be
identical.  Each run is a child process;
a sampler thread records the resident memory of that process (plus, on the
cluster, of its worker and nanny processes: shared library pages are then
counted once per process, an over-estimate) every 0.2 s.

Printed per size and stage (generate, embed, train, encode): wall time,
spectra/s and peak memory, for both runs, and whether the two latent tables
are identical.  Training sees at most ``--train-rows`` spectra (a random
sample of whole chunks, ``latentsky.pipeline.TRAIN_ROWS`` by default), so its
cost stops growing with N; embed and encode go through every spectrum.

Last line: one JSON object with, per size N, ``wall_s_N`` and
``peak_rss_mb_N`` (the single-process pipeline: embed + train + encode),
the same with ``_cluster`` (embed + encode), ``generate_s_N``, per-stage
times, ``identical_N``;
``linearity`` (wall time per spectrum at the largest size over that at the
smallest; <= 1 is linear or better) and ``projected_1e6_min`` (the single
process run at 10^6 spectra extrapolated from the largest size run: embed and
encode scaled linearly, training as measured).

Disk: about 14 kB (store) + 39 kB (embeddings, float64 statistics) per
spectrum, 5.3 GB at 10^5 and 53 GB at 10^6 (one run's embeddings are removed
before the next run unless ``--keep``); ``--work`` chooses the folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

STAGES = ("embed", "train", "encode")


class MemorySampler(threading.Thread):
    """Resident memory (MB) of this process and its children, sampled every ``interval`` seconds."""

    def __init__(self, interval: float = 0.2):
        super().__init__(daemon=True)
        import psutil

        self.process, self.interval = psutil.Process(), interval
        self.samples: list[tuple[float, float]] = []
        self._done = threading.Event()

    def rss_mb(self) -> float:
        import psutil

        total = self.process.memory_info().rss
        for child in self.process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:  # a worker that has just exited
                pass
        return total / 2**20

    def run(self) -> None:
        while not self._done.is_set():
            self.samples.append((time.perf_counter(), self.rss_mb()))
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()
        self.samples.append((time.perf_counter(), self.rss_mb()))

    def peak(self, start: float = float("-inf"), stop: float = float("inf")) -> float:
        inside = [m for t, m in self.samples if start <= t <= stop]
        return max(inside) if inside else float("nan")


def child_generate(args) -> dict:
    from latentsky.data import sample_store
    from latentsky.synth import write_synth

    templates = sample_store()  # ingested once per cache folder, outside the timing
    sampler = MemorySampler()
    sampler.start()
    t0 = time.perf_counter()
    write_synth(args.out, args.n, store=templates, n_spectra=args.n, seed=0)
    wall = time.perf_counter() - t0
    sampler.stop()
    return {"generate_s": wall, "generate_peak_mb": sampler.peak()}


def child_pipeline(args) -> dict:
    from latentsky.pipeline import run_pipeline

    sampler = MemorySampler()
    sampler.start()
    t0 = time.perf_counter()
    settings = json.loads(args.settings)
    metrics = run_pipeline(
        args.store,
        args.out,
        embed=settings["embed"],
        train=settings["train"],
        train_rows=args.train_rows,
        workers=args.workers,
        baselines=False,
    )
    wall = time.perf_counter() - t0
    sampler.stop()
    out, at = (
        {
            "wall_s": wall,
            "peak_rss_mb": sampler.peak(),
            "n_epochs": metrics.get("n_epochs"),
            "n_train": metrics.get("n_train"),
        },
        t0,
    )
    timings = metrics["timings"]
    at += timings["ingest_s"]
    for stage in STAGES:
        # stage boundaries from the pipeline's own timings, in order
        out[f"{stage}_s"] = timings[f"{stage}_s"]
        out[f"{stage}_peak_mb"] = sampler.peak(at, at + timings[f"{stage}_s"])
        at += timings[f"{stage}_s"]
    return out


def run_child(*argv: str) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"bench child {argv} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def identical(a: Path, b: Path) -> bool:
    import pandas as pd

    return pd.read_parquet(a / "latent.parquet").equals(pd.read_parquet(b / "latent.parquet"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated numbers of spectra")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the LocalCluster run")
    parser.add_argument("--train-rows", type=int, default=None, help="spectra trained on (default: the pipeline's)")
    parser.add_argument("--epochs", type=int, default=None, help="maximum training epochs (default: the pipeline's)")
    parser.add_argument(
        "--settings",
        default=None,
        metavar="JSON",
        help='{"embed": {...}, "train": {...}} instead of the pipeline\'s defaults',
    )
    parser.add_argument("--work", type=Path, default=None, help="folder for the stores (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the stores and results")
    parser.add_argument("--no-cluster", action="store_true", help="only the single-process runs")
    sub = parser.add_subparsers(dest="child")
    gen = sub.add_parser("generate")
    gen.add_argument("n", type=int)
    gen.add_argument("out", type=Path)
    pipe = sub.add_parser("pipeline")
    pipe.add_argument("store", type=Path)
    pipe.add_argument("out", type=Path)
    pipe.add_argument("--child-workers", dest="workers", type=int, default=None)
    pipe.add_argument("--child-train-rows", dest="train_rows", type=int, default=None)
    pipe.add_argument("--child-settings", dest="settings", default="{}")
    args = parser.parse_args()
    if args.child:
        result = child_generate(args) if args.child == "generate" else child_pipeline(args)
        print(json.dumps(result))
        return

    from latentsky.pipeline import TRAIN_ROWS

    sizes = [int(float(s)) for s in args.sizes.split(",")]
    train_rows = args.train_rows or TRAIN_ROWS
    work = args.work or Path(tempfile.mkdtemp(prefix="latentsky-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    from latentsky.pipeline_defaults import EMBED_DEFAULTS, TRAIN_DEFAULTS

    # the pipeline's defaults as they are now (or --settings), handed to every run: both runs of a size use
    # the same settings even if the defaults are edited meanwhile
    given = json.loads(args.settings) if args.settings else {}
    settings = {"embed": given.get("embed", dict(EMBED_DEFAULTS)), "train": given.get("train", dict(TRAIN_DEFAULTS))}
    if args.epochs:
        settings["train"]["epochs"] = args.epochs
    settings["train"]["hidden"] = list(settings["train"]["hidden"])
    common = ["--child-train-rows", str(train_rows), "--child-settings", json.dumps(settings)]
    summary: dict = {"workers": args.workers, "train_rows": train_rows, "cores": os.cpu_count(), "settings": settings}
    print(f"{'N':>9} {'run':>8} {'stage':>8} {'wall s':>9} {'spectra/s':>10} {'peak MB':>9}")
    try:
        for n in sizes:
            folder = work / f"n{n}"
            if not (folder / "store" / "catalog.parquet").exists():
                gen = run_child("generate", str(n), str(folder))
                summary[f"generate_s_{n}"] = round(gen["generate_s"], 1)
                print(
                    f"{n:>9} {'':>8} {'generate':>8} {gen['generate_s']:9.1f} {n / gen['generate_s']:10.0f} "
                    f"{gen['generate_peak_mb']:9.0f}"
                )
            runs = (
                {"single": []} if args.no_cluster else {"single": [], "cluster": ["--child-workers", str(args.workers)]}
            )
            for name, extra in runs.items():
                out = folder / name
                shutil.rmtree(out, ignore_errors=True)
                if name == "cluster":
                    # Training runs in the session in both modes; the cluster run reuses the single run's
                    # model, so the comparison is of what runs on the cluster (and immune to edits of the
                    # training code between the two runs).
                    out.mkdir()
                    shutil.copy(folder / "single" / "model.keras", out / "model.keras")
                    state = json.loads((folder / "single" / "pipeline.json").read_text())
                    state.pop("encode", None)
                    (out / "pipeline.json").write_text(json.dumps(state))
                res = run_child("pipeline", str(folder / "store"), str(out), *common, *extra)
                for stage in STAGES:
                    t = res[f"{stage}_s"]
                    if stage == "train" and name == "cluster":
                        print(
                            f"{n:>9} {name:>8} {stage:>8}   (the single run's model: training never runs on "
                            f"the cluster)"
                        )
                        continue
                    print(f"{n:>9} {name:>8} {stage:>8} {t:9.1f} {n / t:10.0f} {res[f'{stage}_peak_mb']:9.0f}")
                trained = (
                    f"trained on {res['n_train']} for {res['n_epochs']} epochs"
                    if name == "single"
                    else "embed + encode"
                )
                print(
                    f"{n:>9} {name:>8} {'total':>8} {res['wall_s']:9.1f} {n / res['wall_s']:10.0f} "
                    f"{res['peak_rss_mb']:9.0f}   ({trained})"
                )
                if not args.keep:  # the next run's embeddings need the disk (39 kB per spectrum)
                    for part in ("embeddings", "train-sample", "checkpoints"):
                        shutil.rmtree(out / part, ignore_errors=True)
                suffix = "" if name == "single" else "_cluster"
                summary[f"wall_s_{n}{suffix}"] = round(res["wall_s"], 1)
                summary[f"peak_rss_mb_{n}{suffix}"] = round(res["peak_rss_mb"])
                summary[f"spectra_per_s_{n}{suffix}"] = round(n / res["wall_s"], 1)
                for stage in STAGES:
                    if not (stage == "train" and name == "cluster"):
                        summary[f"{stage}_s_{n}{suffix}"] = round(res[f"{stage}_s"], 1)
                        summary[f"{stage}_peak_mb_{n}{suffix}"] = round(res[f"{stage}_peak_mb"])
            if not args.no_cluster:
                summary[f"identical_{n}"] = identical(folder / "single", folder / "cluster")
                print(f"{n:>9} single and cluster latent tables identical: {summary[f'identical_{n}']}")
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    lo, hi = min(sizes), max(sizes)
    summary["linearity"] = round((summary[f"wall_s_{hi}"] / hi) / (summary[f"wall_s_{lo}"] / lo), 3)
    per = (summary[f"embed_s_{hi}"] + summary[f"encode_s_{hi}"]) / hi
    summary["projected_1e6_min"] = round((per * 1e6 + summary[f"train_s_{hi}"]) / 60, 1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
