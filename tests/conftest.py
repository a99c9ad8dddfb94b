"""Shared fixtures: the bundled sample, its ingested store, and the optional shared data folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from _support.data import shared_data_dir

from latentsky.data import sample_path, sample_spectra

TIERS = {"notebooks": "notebook", "platform": "platform", "scale": "scale", "autoencoder": "training"}
"""Folders of tests/ whose tests carry a marker of their own, so that ``make test-fast`` can leave them out."""

TRAINING_MODULES = {"test_demo.py", "test_pipeline_rejected.py", "test_reconstruct.py"}
"""Test modules outside tests/autoencoder that train a map (the whole pipeline, or a model to decode with)."""


def pytest_collection_modifyitems(config, items):
    """Mark the tests of the slow tiers: ``notebook``, ``platform``, ``scale`` and ``training`` by folder or module
    (and the app's Train step tests, by name), ``browser`` for the modules that drive Chromium (they define
    ``CHROMIUM``)."""
    root = Path(__file__).parent
    for item in items:
        parts = Path(item.fspath).relative_to(root).parts
        if parts[0] in TIERS:
            item.add_marker(TIERS[parts[0]])
        if parts[-1] in TRAINING_MODULES or (parts[-1] == "test_steps.py" and "train" in item.name):
            item.add_marker("training")
        if hasattr(item.module, "CHROMIUM"):
            item.add_marker("browser")


@pytest.fixture(autouse=True)
def _restore_conf():
    """Every test starts and ends with the same ``latentsky.conf`` (URLs, offline flag, retries, cache dir)."""
    from latentsky.config import conf

    with conf.set_temp():
        yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Skip a test that needs files too large for the package when the shared data folder is absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("needs the shared data folder (../shared/data or $LATENTSKY_SHARED_DATA); not present here")
    return path


@pytest.fixture(scope="session")
def sample() -> Path:
    """The bundled sample folder."""
    return sample_path()


@pytest.fixture(scope="module")
def sample_archive(sample):
    """The local archive over the bundled sample (HARPS s1d + SDSS spectra) on 127.0.0.1, one per test module."""
    from latentsky.archives.local.archive import LocalArchive

    archive = LocalArchive(sample, retry_after=0.05).start()
    yield archive
    archive.stop()


@pytest.fixture(scope="session")
def sample_store(tmp_path_factory, sample):
    """The bundled sample ingested once per test session with the default settings."""
    from latentsky.ingest import ingest
    from latentsky.store import SpectrumStore

    out = tmp_path_factory.mktemp("sample") / "store"
    ingest(sample_spectra(), out)
    return SpectrumStore(out)
