"""Build the bundled sample (``latentsky/data/sample``) from the project's shared data folder.

The sample must stay under about 20 MB, so real files are reduced in two
documented, lossless-where-kept ways, and every file gets a provenance line
naming its source file and that file's sha256:

* HARPS s1d spectra (24 epochs of alpha Cen B, Gl273, Gl581) are cut to
  5000-6000 Angstrom (Mg b triplet to Na D): pixel values and header are the
  original ones, only NAXIS1/CRVAL1 change and a HISTORY card says so.
* SDSS ``spec-*.fits`` files keep HDUs 0-3 (PRIMARY, COADD, SPECOBJ/SPALL,
  SPZLINE): exactly SDSS's own "lite" product; DR7 ``spSpec`` files are kept whole.
* ``images/`` holds the FIRST and UKIDSS cutouts (astroquery's test images) for
  the local archive's cutout endpoint, byte-identical (UKIDSS gzipped).

All files are gzip-compressed (astropy reads ``.fits.gz`` directly).

Run ``python -m latentsky.data.build_sample ../shared/data`` from the project root.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import re
from pathlib import Path

from astropy.io import fits

SAMPLE_DIR = Path(__file__).parent / "sample"
HARPS_WINDOW = (5000.0, 6000.0)  # Angstrom, air, as in the s1d header
HARPS_FILES = ["harps/alfCenB_s1d/*_s1d_A.fits", "harps/actin_testfiles/*_s1d_A.fits"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _provenance_rows(shared: Path) -> dict[str, str]:
    """Map a file name to its row in the shared PROVENANCE.md tables (source repo, path, commit, licence)."""
    rows = {}
    for prov in shared.rglob("PROVENANCE.md"):
        for line in prov.read_text().splitlines():
            m = re.match(r"\|\s*`([^`]+)`\s*\|\s*([^|]+)\|\s*`([^`]+)`\s*\|\s*`([0-9a-f]+)`\s*\|\s*([^|]+)\|", line)
            if m:
                rows[Path(m.group(1)).name] = (
                    f"{m.group(2).strip()} `{m.group(3)}` @ {m.group(4)[:12]}, licence: {m.group(5).strip()}"
                )
    return rows


def _write_gz(hdul: fits.HDUList, dest: Path) -> None:
    buf = io.BytesIO()
    hdul.writeto(buf, output_verify="silentfix")
    dest.write_bytes(gzip.compress(buf.getvalue(), compresslevel=9, mtime=0))


def build(shared: Path, out: Path = SAMPLE_DIR) -> list[str]:
    """Write the sample into ``out`` and return its provenance lines."""
    sources = _provenance_rows(shared)
    lines = []
    (out / "harps").mkdir(parents=True, exist_ok=True)
    (out / "sdss").mkdir(parents=True, exist_ok=True)
    for pattern in HARPS_FILES:
        for src in sorted(shared.glob(pattern)):
            with fits.open(src) as hdul:
                header = hdul[0].header.copy()
                lo = int(round((HARPS_WINDOW[0] - header["CRVAL1"]) / header["CDELT1"]))
                hi = int(round((HARPS_WINDOW[1] - header["CRVAL1"]) / header["CDELT1"]))
                data = hdul[0].data[lo:hi].copy()
                header["CRVAL1"] = header["CRVAL1"] + lo * header["CDELT1"]
                header.add_history(
                    f"latentsky sample: pixels {lo}:{hi} of {src.name} "
                    f"(sha256 {_sha256(src)[:16]}), {HARPS_WINDOW[0]:.0f}-{HARPS_WINDOW[1]:.0f} A"
                )
                dest = out / "harps" / (src.name + ".gz")
                _write_gz(fits.HDUList([fits.PrimaryHDU(data, header)]), dest)
            lines.append(
                f"| `harps/{dest.name}` | cut {HARPS_WINDOW[0]:.0f}-{HARPS_WINDOW[1]:.0f} A of `{src.name}` "
                f"(sha256 {_sha256(src)[:16]}) | {sources.get(src.name, 'see shared PROVENANCE')} |"
            )
    for src in sorted((shared / "sdss" / "spectra").glob("sp*.fit*")):
        dest = out / "sdss" / (src.name + ".gz")
        with fits.open(src) as hdul:
            if src.name.startswith("spec-") and len(hdul) > 4:
                _write_gz(fits.HDUList([h.copy() for h in hdul[:4]]), dest)
                how = "HDUs 0-3 (SDSS lite form) of"
            else:
                dest.write_bytes(gzip.compress(src.read_bytes(), compresslevel=9, mtime=0))
                how = "byte-identical gzip of"
        lines.append(
            f"| `sdss/{dest.name}` | {how} `{src.name}` (sha256 {_sha256(src)[:16]}) | "
            f"{sources.get(src.name, 'see shared PROVENANCE')} |"
        )
    (out / "images").mkdir(exist_ok=True)
    for src in sorted((shared / "images").glob("*/*.fits")):
        if src.stat().st_size > 100_000:
            dest = out / "images" / (src.name + ".gz")
            dest.write_bytes(gzip.compress(src.read_bytes(), compresslevel=9, mtime=0))
            how = "gzip of"
        else:
            dest = out / "images" / src.name
            dest.write_bytes(src.read_bytes())
            how = "byte-identical copy of"
        lines.append(
            f"| `images/{dest.name}` | {how} `{src.name}` (sha256 {_sha256(src)[:16]}) | "
            f"{sources.get(src.name, 'see shared PROVENANCE')} |"
        )
    with open(shared / "sdss" / "spectra" / "labels.csv") as fh, open(out / "sdss" / "labels.csv", "w") as dst:
        rows = list(csv.DictReader(fh))
        writer = csv.DictWriter(dst, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            row["file"] = row["file"] + ".gz"
            writer.writerow(row)
    header = (
        "# PROVENANCE: latentsky bundled sample\n\n"
        "Real HARPS (ESO) and SDSS spectra, reduced as described in `latentsky/data/build_sample.py`.\n"
        'Data rights: public ESO and SDSS archive data; acknowledge "Based on data obtained from the ESO '
        'Science Archive Facility" and SDSS.\n\n'
        "| file | derived from | source (repository, path @ commit, licence) |\n|---|---|---|\n"
    )
    (out / "PROVENANCE.md").write_text(header + "\n".join(lines) + "\n")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shared", type=Path, help="the shared data folder (../shared/data)")
    parser.add_argument("--out", type=Path, default=SAMPLE_DIR)
    args = parser.parse_args(argv)
    build(args.shared, args.out)


if __name__ == "__main__":
    main()
