"""``latentsky pipeline SOURCE --out DIR``: ingest, embed, train and encode in one go.

SOURCE is a folder of FITS spectra or a spectrum store.  Writes
``DIR/latent.parquet``, ``DIR/model.keras``, ``DIR/metrics.json`` and
``DIR/map.png``; stages whose output is up to date are skipped, and an
interrupted run resumes at the stage and chunk where it stopped.  With
``--workers``, ``--scheduler`` or ``--cluster``, ingest, embed and encode run
on Dask (identical results).
"""

from __future__ import annotations

import json
from pathlib import Path

from latentsky.autoencoder.maps import DEFAULT_KIND, KINDS, NAMES
from latentsky.distributed import add_cli_arguments, cli_options


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pipeline", help="FITS spectra (or a store) -> latent map, in one go", description=__doc__
    )
    p.add_argument("source", type=Path, metavar="SOURCE", help="folder of FITS spectra, or a spectrum store")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--latent-dims", type=int, default=2, help="latent dimensions (default 2: x, y)")
    p.add_argument("--n-units", type=int, default=100, help="reservoir units N of stage 1 (default 100)")
    p.add_argument(
        "--map",
        choices=KINDS,
        default=None,
        help="kind of map: " + "; ".join(f"{k}: {NAMES[k]}" for k in KINDS) + f" (default {DEFAULT_KIND})",
    )
    p.add_argument(
        "--optimizer",
        choices=["auto", "lbfgs", "adam"],
        default=None,
        help="full-batch L-BFGS or minibatch Adam (default auto: L-BFGS when the training data fit in memory)",
    )
    p.add_argument("--max-iter", type=int, default=None, help="L-BFGS iterations at most per restart and phase")
    p.add_argument(
        "--restarts",
        type=int,
        default=None,
        help="random starts of an end-to-end map; the lowest training loss is kept",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="Adam: maximum training epochs per phase (cut by --train-visits on big training sets)",
    )
    p.add_argument(
        "--embeddings",
        type=Path,
        default=None,
        metavar="EMBEDDINGS",
        help="stage-1 output of `latentsky embed` on this store, reused (linked) when it was made "
        "with this run's settings and seed",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    p.add_argument("--force", action="store_true", help="redo every stage even when up to date")
    p.add_argument(
        "--train-rows",
        type=int,
        default=None,
        help="train on at most this many spectra, a random sample beyond (default 10,000; 0: all)",
    )
    p.add_argument(
        "--train-visits",
        type=int,
        default=None,
        help="spectra x epochs per training phase, at most (default 500,000; 0: no budget)",
    )
    p.add_argument("--chunk-rows", type=int, default=None, help="spectra per task (default: the store's chunks)")
    p.add_argument("--no-progress", action="store_true", help="do not draw progress bars")
    add_cli_arguments(p)
    p.set_defaults(func=run)


def summary_lines(metrics: dict) -> list[str]:
    """A few lines of the headline figures of :func:`latentsky.pipeline.run_pipeline`'s metrics."""
    lines = []
    if "map_name" in metrics:
        lines.append(
            f"map: {metrics['map_name']} ({metrics.get('optimizer')}; share of the encoder's gradient: "
            + ", ".join(f"{k} {v:.0%}" for k, v in metrics.get("gradient_shares", {}).items())
            + ")"
        )
    for name, m in metrics.items():
        if not isinstance(m, dict) or "n" not in m:
            continue
        keys = [
            k
            for k in (
                "resemblance",
                "purity_object_k1",
                "purity_object_k5",
                "purity_spec_class_k5",
                "trust_data",
                "knn_r2_redshift",
                "recon_error",
                "recon_excess",
            )
            if k in m
        ]
        lines.append(f"{name:>14}: " + ", ".join(f"{k} {m[k]:.4g}" for k in keys))
    t = metrics.get("timings", {})
    if t:
        lines.append("timings: " + ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in t.items()))
    return lines


def run(args) -> int:
    from latentsky.pipeline import run_pipeline
    from latentsky.progress import TqdmProgress

    given = {
        "map": args.map,
        "optimizer": args.optimizer,
        "max_iter": args.max_iter,
        "restarts": args.restarts,
        "epochs": args.epochs,
    }
    train = {k: v for k, v in given.items() if v is not None}
    from latentsky.pipeline import TRAIN_ROWS, TRAIN_VISITS

    train_rows = TRAIN_ROWS if args.train_rows is None else (args.train_rows or None)
    train_visits = TRAIN_VISITS if args.train_visits is None else (args.train_visits or None)
    metrics = run_pipeline(
        args.source,
        args.out,
        n_latent=args.latent_dims,
        embed={"n_units": args.n_units},
        train=train,
        embeddings=args.embeddings,
        seed=args.seed,
        force=args.force,
        train_rows=train_rows,
        train_visits=train_visits,
        chunk_rows=args.chunk_rows,
        progress=None if args.no_progress else TqdmProgress(),
        **cli_options(args),
    )
    for line in summary_lines(metrics):
        print(line)
    print("wrote " + ", ".join(metrics["outputs"][k] for k in ("latent", "model", "metrics", "map")))
    if metrics["skipped"]:
        print("up to date, skipped: " + ", ".join(metrics["skipped"]))
    print(json.dumps({"map": metrics.get("map"), **{k: metrics["scores"][k] for k in sorted(metrics["scores"])}}))
    return 0
