"""``latentsky demo --out DIR``: the pipeline on the bundled sample of real spectra.

The sample is served by the local archive on 127.0.0.1 and fetched exactly as
from ESO and SDSS (TAP/ObsCore and SkyServer queries, planned downloads with a
manifest, verified files), ingested, embedded (echo-state readouts) and
autoencoded into a 2-D map.  Writes ``DIR/downloads`` (files and manifest),
``DIR/store`` (the ingested spectra), ``DIR/summary.json``, ``DIR/spectra.png``
and the pipeline's outputs (``DIR/latent.parquet``, ``model.keras``,
``metrics.json``, ``map.png``).  Running it again resumes and skips what is done.
The last lines give the map's figures, the wall time and the peak memory.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="run the pipeline on the bundled sample", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder")
    p.set_defaults(func=run)


def summarise(store) -> dict:
    """Counts per instrument, class and object, and the grid, of an ingested store."""
    cat = store.catalog
    repeats = cat["object"].value_counts()
    return {
        "n_spectra": int(len(cat)),
        "grid": store.attrs["grid"],
        "normalisation": store.attrs["normalisation"],
        "by_instrument": {k: int(v) for k, v in cat["instrument"].value_counts().items()},
        "by_class": {k: int(v) for k, v in cat["spec_class"].value_counts().items()},
        "n_objects": int(cat["object"].nunique()),
        "objects_observed_more_than_once": int((repeats > 1).sum()),
        "most_observed": {k: int(v) for k, v in repeats.head(3).items()},
    }


def run(args) -> int:
    from latentsky.archives.local.mirror import mirror_local
    from latentsky.commands.pipeline import summary_lines
    from latentsky.data import sample_path
    from latentsky.exceptions import LatentskyError
    from latentsky.ingest import ingest
    from latentsky.pipeline import run_pipeline
    from latentsky.progress import TqdmProgress
    from latentsky.store import SpectrumStore
    from latentsky.viz.static import plot_store_overview

    start = time.perf_counter()
    from latentsky.pipeline import PIPELINE_KIND
    from latentsky.store.output import claim_folder

    out = claim_folder(args.out, PIPELINE_KIND)  # a folder latentsky did not write is refused before any work
    progress = TqdmProgress()
    mirrored = mirror_local(sample_path(), out / "downloads", progress=progress)
    if mirrored.results.errors:
        raise LatentskyError(
            f"demo: {len(mirrored.results.errors)} downloads from the local archive failed, "
            f"e.g. {mirrored.results.errors[:3]}; run the demo again to retry them"
        )
    result = ingest([out / "downloads"], out / "store", progress=progress)
    store = SpectrumStore(result.store)
    summary = summarise(store)
    summary["downloaded"] = {"eso": len(mirrored.eso), "sdss": len(mirrored.sdss)}
    summary["not_ingested"] = [str(e) for e in result.errors]
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    png = plot_store_overview(store, out / "spectra.png")
    metrics = run_pipeline(out / "store", out, progress=progress)
    print(json.dumps(summary, indent=2))
    for line in summary_lines(metrics):
        print(line)
    print(f"wrote {out / 'store'}, {out / 'summary.json'}, {png}, {out / 'latent.parquet'} and {out / 'map.png'}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"demo finished in {time.perf_counter() - start:.0f} s, peak memory {peak_mb:.0f} MB")
    return 0
