"""The notebooks run as on Binder or a hub: with the sample's results prepared and shared (LATENTSKY_APP_DATA)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def shared_results(tmp_path_factory):
    """``latentsky classroom --prepare-only --out DIR`` (the store inside, every row's decoded readout), with 60
    epochs per training phase instead of the pipeline's defaults, to keep the session short (the map is of the
    same kind; notebook 06 reads its structure, not its scores)."""
    from latentsky.commands.classroom import prepare_sample_results

    return prepare_sample_results(out=tmp_path_factory.mktemp("shared") / "results",
                                  train={"epochs": 60})
