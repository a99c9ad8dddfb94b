"""`latentsky demo` on the bundled sample writes the store, a summary and a picture."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from astropy.io import fits

from latentsky.cli import main
from latentsky.store import SpectrumStore


def test_demo_writes_store_summary_and_png(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_spectra"] == 125 and summary["not_ingested"] == []
    assert summary["downloaded"] == {"eso": 26, "sdss": 99}  # fetched from the local archive first
    assert len(list((out / "downloads").rglob("*.fits"))) == 125
    assert summary["by_class"] == {"QSO": 66, "STAR": 33, "GALAXY": 26}
    assert summary["most_observed"]["HD128621"] == 24
    png = (out / "spectra.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    store = SpectrumStore(out / "store")
    first = store.catalog.iloc[0]
    assert first["object"] == fits.getheader(first["path"])["OBJECT"]
    printed = capsys.readouterr().out
    assert "demo finished in" in printed and "peak memory" in printed
    latent = pd.read_parquet(out / "latent.parquet")
    assert len(latent) == 125 and {"id", "object", "x", "y", "anomaly"} <= set(latent.columns)
    assert np.isfinite(latent[["x", "y"]].to_numpy()).all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics  # the map's scores, printed at the end too
    assert (out / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
