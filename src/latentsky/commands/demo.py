"""``latentsky demo --out DIR``: the pipeline on the bundled sample of real spectra.

The sample is served by the local archive on 127.0.0.1 and fetched exactly as
from ESO and SDSS (TAP/ObsCore and SkyServer queries, planned downloads with a
manifest, verified files), then ingested.  Writes ``DIR/downloads`` (files and
manifest), ``DIR/store`` (the ingested spectra), ``DIR/summary.json`` and
``DIR/spectra.png``.  Running it again resumes and skips what is done.
"""

from __future__ import annotations

import json
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
    from latentsky.data import sample_path
    from latentsky.exceptions import LatentskyError
    from latentsky.ingest import ingest
    from latentsky.progress import TqdmProgress
    from latentsky.store import SpectrumStore
    from latentsky.viz.static import plot_store_overview

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    progress = TqdmProgress()
    mirrored = mirror_local(sample_path(), out / "downloads", progress=progress)
    if mirrored.results.errors:
        raise LatentskyError(f"demo: {len(mirrored.results.errors)} downloads from the local archive failed, "
                             f"e.g. {mirrored.results.errors[:3]}; run the demo again to retry them")
    result = ingest([out / "downloads"], out / "store", progress=progress)
    store = SpectrumStore(result.store)
    summary = summarise(store)
    summary["downloaded"] = {"eso": len(mirrored.eso), "sdss": len(mirrored.sdss)}
    summary["not_ingested"] = [str(e) for e in result.errors]
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    png = plot_store_overview(store, out / "spectra.png")
    print(json.dumps(summary, indent=2))
    print(f"wrote {out / 'store'}, {out / 'summary.json'} and {png}")
    return 0
