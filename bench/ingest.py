"""Ingest throughput on the bundled sample replicated to N spectra (default 2,000).

Prints spectra/s and MB/s of ``latentsky.ingest.ingest`` beside the bounds it
is measured against, from the same files in the same run:

* ``read``: reading every file's bytes (the disk / page-cache bound),
* ``read+gunzip``: reading and decompressing them,
* ``astropy``: opening each with astropy and touching its data (parsing, no resampling).

Ingest runs in a child process so its peak resident memory is measured alone;
then again on a Dask LocalCluster of ``--workers`` processes (files parsed on
the workers, the store written by the child in file order; it must be
identical, and the script checks it).
Last line: one JSON object with ``spectra_per_s, mb_per_s, peak_rss_mb``, the bounds and
``cluster_spectra_per_s``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from astropy.io import fits

from latentsky.data import sample_spectra


def replicate(n: int, dest: Path) -> list[Path]:
    """Copy the sample's files under new names until there are ``n``."""
    files = sorted(p for folder in sample_spectra() for p in folder.glob("*.fit*.gz"))
    out = []
    for i in range(n):
        src = files[i % len(files)]
        target = dest / f"copy{i // len(files):03d}" / src.parent.name / src.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        out.append(target)
    return out


def timed(fn, files) -> float:
    start = time.perf_counter()
    for path in files:
        fn(path)
    return time.perf_counter() - start


def astropy_open(path: Path) -> None:
    with fits.open(path) as hdul:
        for hdu in hdul[:2]:
            _ = hdu.data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spectra", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the LocalCluster run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="latentsky-bench-ingest-") as tmp:
        tmp = Path(tmp)
        files = replicate(args.spectra, tmp / "in")
        megabytes = sum(p.stat().st_size for p in files) / 1e6
        t_read = timed(lambda p: p.read_bytes(), files)
        t_gunzip = timed(lambda p: gzip.decompress(p.read_bytes()), files)
        t_astropy = timed(astropy_open, files)
        code = (
            "import sys; from latentsky.ingest import ingest; "
            "r = ingest([sys.argv[1]], sys.argv[2]); print(r.n_spectra, len(r.errors))"
        )
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", code, str(tmp / "in"), str(tmp / "store")],
            check=True,
            capture_output=True,
            text=True,
        )
        t_ingest = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        n_ok, n_err = map(int, done.stdout.split())
        cluster_code = (
            "import sys; from latentsky.ingest import ingest\nif __name__ == '__main__':\n"
            "    r = ingest([sys.argv[1]], sys.argv[2], workers=int(sys.argv[3])); print(r.n_spectra)"
        )
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", cluster_code, str(tmp / "in"), str(tmp / "store-cluster"), str(args.workers)],
            check=True,
            capture_output=True,
            text=True,
        )
        t_cluster = time.perf_counter() - start
        from latentsky.store import SpectrumStore

        one, many = SpectrumStore(tmp / "store"), SpectrumStore(tmp / "store-cluster")
        same = bool(
            one.catalog.equals(many.catalog)
            and (one.flux[:] == many.flux[:]).all()
            and (one.weight[:] == many.weight[:]).all()
        )
    n = len(files)
    rows = [
        ("read bytes (bound)", t_read),
        ("read + gunzip", t_gunzip),
        ("astropy open + data", t_astropy),
        ("latentsky ingest", t_ingest),
        (f"ingest, {args.workers} Dask workers", t_cluster),
    ]
    print(f"{n} files, {megabytes:.0f} MB (gzip-compressed FITS); ingested {n_ok}, errors {n_err}")
    for name, t in rows:
        print(f"  {name:22s} {n / t:9.1f} spectra/s {megabytes / t:8.1f} MB/s")
    print(f"  ingest peak RSS {peak_mb:.0f} MB (child process, includes interpreter start-up)")
    print(f"  Dask run (includes starting the cluster) identical to the single-process store: {same}")
    print(
        json.dumps(
            {
                "spectra": n,
                "spectra_per_s": round(n / t_ingest, 1),
                "mb_per_s": round(megabytes / t_ingest, 1),
                "peak_rss_mb": round(peak_mb),
                "read_mb_per_s": round(megabytes / t_read, 1),
                "gunzip_mb_per_s": round(megabytes / t_gunzip, 1),
                "astropy_spectra_per_s": round(n / t_astropy, 1),
                "fraction_of_gunzip_bound": round(t_gunzip / t_ingest, 3),
                "cluster_workers": args.workers,
                "cluster_spectra_per_s": round(n / t_cluster, 1),
                "cluster_identical": same,
            }
        )
    )


if __name__ == "__main__":
    main()
