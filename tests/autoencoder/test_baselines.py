"""The baseline maps: PCA and UMAP of the readouts, PCA of the spectra."""

from __future__ import annotations

import numpy as np
import pytest

from latentsky.autoencoder.baselines import ReadoutPCA, ReadoutUMAP, SpectraPCA, spectra_matrix
from latentsky.exceptions import AutoencoderError


def test_readout_pca_round_trips_with_every_component(readouts):
    full = ReadoutPCA(n_components=readouts.shape[1]).fit(readouts)
    np.testing.assert_allclose(full.inverse_transform(full.transform(readouts)), readouts, atol=1e-8)
    two = ReadoutPCA().fit(readouts)
    z = two.transform(readouts)
    assert z.shape == (len(readouts), 2)
    # the first axis carries more of the standardised variance than the second
    assert z[:, 0].var() > z[:, 1].var() > 0
    # it works on the EMBEDDINGS directory as well
    assert two.inverse_transform(z).shape == readouts.shape


def test_readout_pca_from_embeddings_directory(sample_embeddings, readouts):
    np.testing.assert_allclose(
        ReadoutPCA().fit(sample_embeddings).transform(readouts), ReadoutPCA().fit(readouts).transform(readouts)
    )


def test_spectra_matrix_fills_masked_pixels_with_the_mean_of_the_covering_spectra():
    flux = np.array([[1.0, 2.0, np.nan], [3.0, 9.0, 4.0], [5.0, 7.0, 8.0]])
    weight = np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    filled, fill = spectra_matrix(flux, weight)
    # pixel 1: spectra 0 and 2 cover it -> 4.5; pixel 2: only spectrum 1 -> 4
    np.testing.assert_allclose(fill, [3.0, 4.5, 4.0])
    np.testing.assert_allclose(filled, [[1.0, 2.0, 4.0], [3.0, 4.5, 4.0], [5.0, 7.0, 4.0]])


def test_spectra_pca_on_the_sample(sample_store):
    flux, weight = sample_store.flux[:], sample_store.weight[:]
    pca = SpectraPCA().fit(flux, weight=weight)
    z = pca.transform(flux, weight=weight)
    assert z.shape == (len(flux), 2) and np.isfinite(z).all()
    np.testing.assert_allclose(SpectraPCA().fit_transform(flux, weight=weight), z)


def test_readout_umap_is_reproducible(readouts):
    a = ReadoutUMAP(random_state=1).fit_transform(readouts)
    b = ReadoutUMAP(random_state=1).fit_transform(readouts)
    assert a.shape == (len(readouts), 2) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)


def test_errors_name_the_parameter(readouts):
    with pytest.raises(AutoencoderError, match="parameter n_components=500"):
        ReadoutPCA(n_components=500).fit(readouts)
    with pytest.raises(AutoencoderError, match="parameter X"):
        ReadoutPCA().fit(readouts[0])
    bad = readouts.copy()
    bad[3, 4] = np.nan
    with pytest.raises(AutoencoderError, match="NaN"):
        ReadoutUMAP().fit(bad)
