"""Fixtures for the embedding tests: the bundled real HARPS spectra on a narrow grid.

5000-5290 Angstrom in 4096 pixels (~4.2 km/s each) keeps the absorption lines
resolved, so one-step prediction and Doppler shifts are meaningful, and stays
clear of the HARPS CCD gap near 5300 Angstrom.
"""

from __future__ import annotations

import numpy as np
import pytest

from latentsky.io.grid import LogLambdaGrid

HARPS_GRID = LogLambdaGrid(5000.0, 5290.0, 4096)


@pytest.fixture(scope="session")
def harps_store(tmp_path_factory, sample):
    """The bundled HARPS s1d spectra (alpha Cen B, Gl 581, Gl 273) ingested on HARPS_GRID."""
    from latentsky.ingest import ingest
    from latentsky.store import SpectrumStore

    out = tmp_path_factory.mktemp("harps") / "store"
    ingest([sample / "harps"], out, grid=HARPS_GRID, chunk_rows=8)
    return SpectrumStore(out)


@pytest.fixture(scope="session")
def harps(harps_store):
    """(flux float64, weight, catalog) of the HARPS store."""
    return (np.asarray(harps_store.flux[:], dtype="f8"), np.asarray(harps_store.weight[:]), harps_store.catalog)


@pytest.fixture(scope="session")
def alf_cen_b(harps):
    """Flux and weight of the alpha Cen B spectra only (clean, high S/N)."""
    flux, weight, cat = harps
    sel = (cat["object"] == "HD128621").to_numpy()
    return flux[sel], weight[sel]
