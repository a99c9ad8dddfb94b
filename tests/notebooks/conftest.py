"""The notebooks run as on Binder or a hub: with the sample's results prepared and shared (LATENTSKY_APP_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


@pytest.fixture(scope="session")
def shared_results(tmp_path_factory):
    """``latentsky classroom --prepare-only --out DIR`` (the store inside, every row's decoded readout), with 60
    epochs per training phase instead of the pipeline's defaults, to keep the session short (the map is of the
    same kind; notebook 06 reads its structure, not its scores)."""
    from latentsky.commands.classroom import prepare_sample_results

    return prepare_sample_results(out=tmp_path_factory.mktemp("shared") / "results",
                                  train={"epochs": 60})


@pytest.fixture(scope="session")
def executed(tmp_path_factory, shared_results):
    """Runs a notebook once per session (kernel ``python3``, in notebooks/, with the environment binder/start
    gives a kernel: the shared prepared results, TensorFlow quiet); returns the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    cache = {}
    out_dir = tmp_path_factory.mktemp("executed")

    def run(name: str):
        if name not in cache:
            nb = nbformat.read(NOTEBOOKS / name, as_version=4)
            env_keep = dict(os.environ)
            os.environ.update(LATENTSKY_APP_DATA=str(shared_results), TF_CPP_MIN_LOG_LEVEL="3",
                              TF_ENABLE_ONEDNN_OPTS="0")
            try:
                NotebookClient(nb, timeout=900, kernel_name="python3",
                               resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
            finally:
                os.environ.clear()
                os.environ.update(env_keep)
            nbformat.write(nb, out_dir / name)  # kept for a look after a failure
            cache[name] = nb
        return cache[name]
    return run
