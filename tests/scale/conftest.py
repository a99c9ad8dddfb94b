"""Fixtures of the scale tests: a small synthetic store derived from the sample, and a real Dask cluster.

The synthetic store has 1,200 spectra of 4,096 pixels in chunks of 100 (a
dozen chunks, so chunk order, resuming and sampling are all exercised) and
stage 1 uses a small reservoir, so each pipeline run takes seconds.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="session")
def small():
    """Small, fast stage-1 and training settings of the pipeline runs compared in these tests."""
    return {
        "embed": {"n_units": 20},
        "train": {"epochs": 4, "max_iter": 4, "restarts": 1, "hidden": (16,), "patience": 2},
    }


@pytest.fixture(scope="session")
def synth_store(tmp_path_factory, sample_store):
    """1,200 synthetic spectra (Doppler-shifted, tilted, noisy copies of the sample), chunks of 100 rows."""
    from latentsky.store import SpectrumStore
    from latentsky.synth import write_synth

    out = write_synth(
        tmp_path_factory.mktemp("synth") / "synth", 1200, store=sample_store, n_spectra=1200, chunk_rows=100, seed=3
    )
    return SpectrumStore(out / "store")


@pytest.fixture(scope="module")
def client():
    """A Dask LocalCluster of 2 single-threaded worker processes (starts in about a second, offline)."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as c,
    ):
        yield c
