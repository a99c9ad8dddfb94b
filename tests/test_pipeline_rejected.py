"""`latentsky pipeline` over real SDSS spectra, some unusable: they are reported, the run goes on."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
from astropy.io import fits

from latentsky.cli import main
from latentsky.io.sdss import SPPIXMASK

KEEP = [
    "spec-0266-51602-0001",
    "spec-0266-51602-0013",
    "spec-0266-51602-0107",
    "spec-0266-51602-0162",
    "spec-0266-51602-0573",
    "spec-0266-51630-0461",
    "spec-0280-51612-0117",
    "spec-0285-51930-0378",
    "spec-0295-51585-0596",
    "spec-0332-52367-0639",
    "spec-0403-51871-0462",
    "spec-0406-51869-0374",
]


def _modified(sample, folder, name, new_name, change):
    """A real sample spec file with its coadd table changed by ``change(table)``, written as ``new_name``."""
    with fits.open(sample / "sdss" / f"{name}.fits.gz") as hdul:
        change(hdul[1].data)
        hdul.writeto(folder / new_name)


def test_pipeline_reports_unusable_spectra_and_finishes(sample, tmp_path):
    folder = tmp_path / "spectra"
    folder.mkdir()
    for name in KEEP:
        (folder / f"{name}.fits").write_bytes(gzip.decompress((sample / "sdss" / f"{name}.fits.gz").read_bytes()))

    def badflat(t):  # a warning bit on every pixel: the spectrum is kept, its ivar the weight
        t["and_mask"][:] = 1 << SPPIXMASK["BADFLAT"]

    def no_ivar(t):  # nothing usable: the reader refuses it
        t["ivar"][:] = 0

    def short(t):  # usable pixels only at the blue end, inside stage 1's washout
        t["ivar"][150:] = 0

    _modified(sample, folder, "spec-0432-51884-0324", "badflat-everywhere.fits", badflat)
    _modified(sample, folder, "spec-0440-51885-0148", "zero-ivar.fits", no_ivar)
    _modified(sample, folder, "spec-0480-51989-0480", "blue-end-only.fits", short)
    out = tmp_path / "run"
    assert main(["pipeline", str(folder), "--out", str(out), "--epochs", "5", "--no-progress"]) == 0

    rejected = pd.read_csv(out / "rejected.csv", keep_default_na=False)
    assert rejected[["stage", "id"]].values.tolist() == [["ingest", ""], ["embed", "blue-end-only"]]
    assert rejected["path"][0].endswith("zero-ivar.fits") and "no usable pixel" in rejected["reason"][0]
    assert rejected["path"][1].endswith("blue-end-only.fits") and "washout" in rejected["reason"][1]
    table = pd.read_parquet(out / "latent.parquet")
    assert len(table) == len(KEEP) + 1 and "badflat-everywhere" in set(table["id"])
    assert "blue-end-only" not in set(table["id"]) and np.isfinite(table[["x", "y"]].to_numpy()).all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["stage"] for r in metrics["rejected"]] == ["ingest", "embed"]
    assert 0 < metrics["stage1"]["persistence_ratio_median"] < 1
    assert metrics["stage1"]["n_scored"] == len(KEEP) + 1
