"""Choosing the default map among the model-coupled kinds, on the bundled sample only (the selection set).

Candidates: ``coupled`` (the model-coupled loss alone) and ``hybrid`` (the
same loss plus a neighbour term on the cross-prediction graph) at a few
neighbour weights and graph sizes; ``umap`` and ``pca`` of the readouts are
scored beside them as named baselines, never as candidates (the default must
be a map the model-coupled loss lays out: docs/decisions/default-map.md).
Each candidate is fitted ``--seeds`` times; mean and standard error of every
score of ``bench/quality.py``, plus the share of the encoder's gradient each
loss term carried.  Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import cpu_model, prepare, score

#: (name, LatentAutoencoder parameters); the first two groups are the candidates.
CANDIDATES = [
    ("coupled", {"map": "coupled"}),
    ("hybrid w1 k5", {"map": "hybrid", "neighbour_weight": 1.0, "n_neighbors": 5}),
    ("hybrid w3 k5", {"map": "hybrid", "neighbour_weight": 3.0, "n_neighbors": 5}),
    ("hybrid w10 k5", {"map": "hybrid", "neighbour_weight": 10.0, "n_neighbors": 5}),
    ("hybrid w30 k5", {"map": "hybrid", "neighbour_weight": 30.0, "n_neighbors": 5}),
]
BASELINES = [("umap (baseline)", {"map": "umap"}), ("pca (baseline)", {"map": "pca"})]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--restarts", type=int, default=None, help="random starts per fit (default: the estimator's)")
    ap.add_argument("--max-iter", type=int, default=None, help="L-BFGS iterations (default: the estimator's)")
    ap.add_argument("--out", type=Path, default=None, help="append every run's scores to this JSON-lines file")
    args = ap.parse_args()
    from latentsky import evaluate as ev
    from latentsky.autoencoder import LatentAutoencoder

    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; seeds {args.seeds}", flush=True)
    extra = {k: v for k, v in (("restarts", args.restarts), ("max_iter", args.max_iter)) if v is not None}
    sink = open(args.out, "a") if args.out else None  # noqa: SIM115 (closed at the end, appended to as runs finish)
    result = {"cpu": cpu_model(), "seeds": args.seeds, **extra}
    with tempfile.TemporaryDirectory(prefix="latentsky-select-map-") as tmp:
        data = prepare("sample", Path(tmp))
        readouts = np.asarray(data["emb"].readout[:], dtype="f8")
        data["stats"] = data["emb"].statistics()
        distances = ev.flux_distances(data["flux"], data["weight"])
        result["stage1_error"] = float(np.mean(ev.reconstruction_error(data["stats"], readouts)))
        for name, params in CANDIDATES + BASELINES:
            rows = []
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                est = LatentAutoencoder(random_state=seed, **params, **extra).fit(data["emb_path"])
                z = est.transform(readouts)
                s = score(data, z, est.inverse_transform(z), distances)
                s["seconds"] = time.perf_counter() - t0
                s["gradient_shares"] = est.gradient_shares_
                rows.append(s)
                print(
                    f"{name:<18} seed {seed} "
                    + " ".join(f"{k} {v:.4f}" for k, v in s.items() if isinstance(v, float))
                    + f" {s['gradient_shares']}",
                    flush=True,
                )
                if sink is not None:
                    sink.write(json.dumps({"name": name, "seed": seed, **s}) + "\n")
                    sink.flush()
            for key in ("resemblance", "purity_k1", "purity_k5", "trust_data", "recon_error", "seconds"):
                v = [r[key] for r in rows]
                result[f"{name}/{key}"] = float(np.mean(v))
                result[f"{name}/{key}_se"] = float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
            shares = [r["gradient_shares"] for r in rows if r["gradient_shares"]]
            if shares:
                result[f"{name}/gradient_shares"] = {k: float(np.mean([s[k] for s in shares])) for k in shares[0]}
            print(
                f"== {name}: resemblance {result[f'{name}/resemblance']:.4f} +- {result[f'{name}/resemblance_se']:.4f}",
                flush=True,
            )
    if sink is not None:
        sink.close()
    best = min((n for n, _ in CANDIDATES), key=lambda n: result[f"{n}/resemblance"])
    result["best_candidate"] = best
    print(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in result.items()}))


if __name__ == "__main__":
    main()
