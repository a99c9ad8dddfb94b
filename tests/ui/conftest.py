"""Fixtures of the app tests: latent tables (the sample's PCA map, a synthetic table), the local archive."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _offline():
    """No test of the app reaches the internet: only 127.0.0.1 (the local archive) is allowed."""
    from latentsky.config import conf

    conf.offline = True  # restored by the suite-wide conf fixture


@pytest.fixture(scope="session")
def sample_data(sample_store):
    """The bundled sample on a PCA map (what the app shows before pipeline results exist)."""
    from latentsky.ui.data import LatentData

    return LatentData.from_store(sample_store)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory, sample_store):
    """A 20,000-row synthetic data set derived from the sample, with 30 stored spectra."""
    from latentsky.synth import write_synth

    return write_synth(tmp_path_factory.mktemp("synth") / "synth20k", 20_000, store=sample_store, n_spectra=30, seed=1)


@pytest.fixture
def local(sample_archive):
    """``sample_archive`` with conf pointing at it (restored afterwards)."""
    sample_archive.configure()
    yield sample_archive
    sample_archive.restore()


@pytest.fixture(scope="session")
def sample_results(tmp_path_factory, sample_store):
    """``latentsky pipeline`` on the bundled sample: real embeddings, a trained map of the default kind and
    latent.parquet (the decoder fitted for at most 300 L-BFGS iterations instead of 1,000, to keep the session
    short)."""
    from latentsky.pipeline import run_pipeline

    out = tmp_path_factory.mktemp("results") / "sample-results"
    run_pipeline(sample_store.path, out, train={"max_iter": 300}, baselines=False)
    return out
