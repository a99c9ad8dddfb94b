"""``latentsky embed STORE --out EMBEDDINGS``: echo-state-network readouts of every spectrum."""

from __future__ import annotations

from pathlib import Path

from latentsky.distributed import add_cli_arguments, cli_options
from latentsky.pipeline_defaults import EMBED_DEFAULTS


def _ridge(text: str):
    if text == "gcv":
        return "gcv"
    try:
        return float(text)
    except ValueError:
        import argparse

        raise argparse.ArgumentTypeError(f"expected a positive number or 'gcv', got {text!r}") from None


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "embed", help="embed a spectrum store as ESN readout weights (stage 1)", description=__doc__
    )
    p.add_argument("store", type=Path, metavar="STORE", help="spectrum store written by `latentsky ingest`")
    p.add_argument("--out", required=True, type=Path, metavar="EMBEDDINGS", help="directory to write")
    # the defaults are the estimator's own (EMBED_DEFAULTS), the pipeline's too, so `latentsky embed`
    # then `latentsky train` makes the map `latentsky pipeline` makes
    d = EMBED_DEFAULTS
    p.add_argument("--n-units", type=int, default=d["n_units"], help=f"reservoir units N (default {d['n_units']})")
    p.add_argument(
        "--reservoir",
        choices=["cycle", "random"],
        default=d["reservoir"],
        help=f"simple cycle (deterministic) or random sparse (default {d['reservoir']})",
    )
    numbers = (  # flag, type, what it is (the default is appended)
        ("--cycle-weight", float, "cycle weight r / spectral radius"),
        ("--input-scaling", float, "input weight magnitude v"),
        ("--bias", float, "bias b of every unit"),
        ("--leak-rate", float, "leak rate a in (0, 1]"),
        (
            "--position-scaling",
            float,
            "weight of the position along the spectrum as a second reservoir input (0: none)",
        ),
        ("--bin-pixels", int, "grid pixels averaged into one reservoir step"),
        ("--washout", int, "steps left out after the first valid pixel"),
    )
    for flag, kind, what in numbers:
        default = d[flag[2:].replace("-", "_")]
        p.add_argument(flag, type=kind, default=default, help=f"{what} (default {default:g})")
    p.add_argument(
        "--ridge",
        type=_ridge,
        default=d["ridge"],
        help=f"ridge strength, or 'gcv' to choose it by generalised cross-validation (default {d['ridge']:g})",
    )
    p.add_argument(
        "--backend",
        choices=["auto", "numpy", "tensorflow"],
        default="auto",
        help="computation back end (auto: TensorFlow on a GPU, else NumPy)",
    )
    p.add_argument(
        "--state-dtype",
        choices=["float32", "float64"],
        default="float32",
        help="precision of the reservoir states (sums are always float64)",
    )
    p.add_argument(
        "--tune",
        type=int,
        default=d["tune"],
        metavar="N_SERIES",
        help="first tune (r, v, b) of this reservoir by Nelder-Mead on its held-out error over "
        f"N_SERIES spectra (0: no tuning; default {d['tune']})",
    )
    p.add_argument("--chunk-rows", type=int, default=None, help="spectra per task (default: the store's chunks)")
    p.add_argument("--seed", type=int, default=0, help="seed (random reservoir, fitting subsample)")
    p.add_argument("--restart", action="store_true", help="do not resume an interrupted run; start afresh")
    add_cli_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from latentsky.embed.runner import embed_store
    from latentsky.progress import TqdmProgress
    from latentsky.store.output import check_output

    check_output(args.out, "embeddings", inputs=[args.store])  # before any work: the folder may not be ours
    out = embed_store(
        args.store,
        args.out,
        n_units=args.n_units,
        reservoir=args.reservoir,
        cycle_weight=args.cycle_weight,
        input_scaling=args.input_scaling,
        bias=args.bias,
        leak_rate=args.leak_rate,
        position_scaling=args.position_scaling,
        bin_pixels=args.bin_pixels,
        washout=args.washout,
        ridge=args.ridge,
        backend=args.backend,
        state_dtype=args.state_dtype,
        tune=args.tune,
        chunk_rows=args.chunk_rows,
        resume=not args.restart,
        progress=TqdmProgress(),
        random_state=args.seed,
        **cli_options(args),
    )
    from latentsky.embed.layout import open_embeddings

    emb = open_embeddings(out)
    rejected = len(emb.rejected)
    print(
        f"{out}: {len(emb)} spectra embedded ({emb.attrs['n_units']} units + bias, "
        f"ridge {emb.attrs['ridge']:g})"
        + (f"; {rejected} could not be, see {out / 'rejected.csv'}" if rejected else "")
    )
    return 0
