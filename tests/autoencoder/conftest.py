"""Fixtures of the stage-2 tests: the bundled sample embedded once, and small autoencoders trained on it.

The sample (125 real spectra, default grid) is embedded with the pipeline's
stage-1 settings; the models are kept small (one hidden layer of 32 units,
one start, at most 200 L-BFGS iterations or 300 Adam epochs) so that every
test file runs in well under a minute and a half on two shared cores.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

#: Settings of the small models the tests train (full-batch L-BFGS, the optimiser of small data).
SMALL = dict(hidden=(32,), max_iter=200, restarts=1, validation_fraction=0.0)
#: The same trained with minibatch Adam (the optimiser of data too big for memory).
ADAM = dict(SMALL, optimizer="adam", learning_rate=1e-2, epochs=300, batch_size=32, patience=40)


@pytest.fixture(scope="session")
def sample_embeddings(sample_store, tmp_path_factory):
    """EMBEDDINGS of the bundled sample (N = 100 cycle reservoir, ridge 1e-2), chunks of 32 spectra."""
    from latentsky.embed.runner import embed_store

    out = tmp_path_factory.mktemp("embeddings") / "embeddings"
    return embed_store(sample_store, out, n_units=100, reservoir="cycle", ridge=1e-2, chunk_rows=32, random_state=0)


@pytest.fixture(scope="session")
def embeddings(sample_embeddings):
    from latentsky.embed.layout import open_embeddings

    return open_embeddings(sample_embeddings)


@pytest.fixture(scope="session")
def readouts(embeddings):
    return np.asarray(embeddings.readout[:], dtype="f8")


@pytest.fixture(scope="session")
def stats(embeddings):
    return embeddings.statistics()


@pytest.fixture(scope="session")
def coupled_ae(sample_embeddings):
    """The model-coupled autoencoder (the ``coupled`` map), trained on the sample."""
    from latentsky.autoencoder import LatentAutoencoder

    return LatentAutoencoder(map="coupled", random_state=0, **SMALL).fit(sample_embeddings)


@pytest.fixture(scope="session")
def euclidean_ae(sample_embeddings):
    """The same network trained on the Euclidean readout loss: its own map (the baseline)."""
    from latentsky.autoencoder import LatentAutoencoder

    return LatentAutoencoder(map="euclidean", random_state=0, **SMALL).fit(sample_embeddings)


@pytest.fixture(scope="session")
def small():
    """The settings of the tests' small models (a copy)."""
    return dict(SMALL)


@pytest.fixture(scope="session")
def adam():
    """The settings of the tests' small models trained with Adam (a copy)."""
    return dict(ADAM)
