"""Baseline maps, in the interface of :class:`~latentsky.autoencoder.estimator.LatentAutoencoder`.

* :class:`ReadoutPCA`: PCA of the standardised readouts (linear; it has an
  ``inverse_transform``, so its data-space error can be scored too);
* :class:`ReadoutUMAP`: UMAP of the standardised readouts (no inverse);
* :class:`SpectraPCA` and :class:`SpectraUMAP`: PCA and UMAP of the resampled
  spectra themselves (no readouts at all), the maps one would draw without
  stage 1.

``fit(X)``, ``transform(X)`` and ``fit_transform(X)`` take arrays; an
EMBEDDINGS directory is accepted by the readout baselines for symmetry with
the autoencoder.
"""

from __future__ import annotations

import numbers
import os

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from latentsky.exceptions import AutoencoderError


def _readouts(X) -> np.ndarray:
    from latentsky.embed.layout import Embeddings, open_embeddings

    if isinstance(X, (str, os.PathLike)):
        X = open_embeddings(X)
    if isinstance(X, Embeddings):
        X = X.readout[:]
    X = np.asarray(X, dtype="f8")
    if X.ndim != 2:
        raise AutoencoderError(f"parameter X: expected readouts of shape (n, N+1), got shape {X.shape}")
    if not np.isfinite(X).all():
        raise AutoencoderError("parameter X: readouts contain NaN or infinite values")
    return X


def _check_components(n_components, n_samples, n_features):
    if not (isinstance(n_components, numbers.Integral) and 1 <= n_components <= min(n_samples, n_features)):
        raise AutoencoderError(
            f"parameter n_components={n_components!r}: must be an integer in "
            f"[1, {min(n_samples, n_features)}] for {n_samples} samples of {n_features} features"
        )


class ReadoutPCA(TransformerMixin, BaseEstimator):
    """PCA of the readouts, each feature standardised first.

    Parameters
    ----------
    n_components : int
        Latent dimensions.
    standardise : bool
        Scale every readout weight to unit variance before the PCA (as the
        autoencoder does), so that no single weight dominates.
    """

    def __init__(self, n_components=2, standardise=True):
        self.n_components = n_components
        self.standardise = standardise

    def fit(self, X, y=None):
        from sklearn.decomposition import PCA

        X = _readouts(X)
        _check_components(self.n_components, *X.shape)
        self.mean_ = X.mean(0)
        std = X.std(0) if self.standardise else np.ones(X.shape[1])
        self.scale_ = np.where(std > 0, std, 1.0)
        self.pca_ = PCA(n_components=self.n_components).fit((X - self.mean_) / self.scale_)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        check_is_fitted(self, "pca_")
        return self.pca_.transform((_readouts(X) - self.mean_) / self.scale_)

    def inverse_transform(self, Z):
        """Readouts (original units) of latent coordinates."""
        check_is_fitted(self, "pca_")
        return self.pca_.inverse_transform(np.asarray(Z, dtype="f8")) * self.scale_ + self.mean_


class ReadoutUMAP(TransformerMixin, BaseEstimator):
    """UMAP of the standardised readouts (umap-learn).

    Parameters
    ----------
    n_components : int
    n_neighbors : int
        UMAP's neighbourhood size (capped at n - 1 for small data sets).
    min_dist : float
    random_state : int
        Seed (UMAP is then single-threaded and reproducible).
    """

    def __init__(self, n_components=2, n_neighbors=15, min_dist=0.1, random_state=0):
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.random_state = random_state

    def fit(self, X, y=None):
        X = _readouts(X)
        _check_components(self.n_components, *X.shape)
        self.mean_ = X.mean(0)
        std = X.std(0)
        self.scale_ = np.where(std > 0, std, 1.0)
        self.umap_ = _umap(self, len(X))
        self.embedding_ = self.umap_.fit_transform((X - self.mean_) / self.scale_)
        self.n_features_in_ = X.shape[1]
        return self

    def fit_transform(self, X, y=None):
        return self.fit(X).embedding_

    def transform(self, X):
        check_is_fitted(self, "umap_")
        return self.umap_.transform((_readouts(X) - self.mean_) / self.scale_)


def spectra_matrix(flux, weight=None, fill=None) -> tuple[np.ndarray, np.ndarray]:
    """Spectra with masked pixels filled by the mean of that pixel over the spectra that cover it.

    Parameters
    ----------
    flux : ndarray (n, T)
    weight : ndarray (n, T), optional
        Inverse variance; pixels with weight 0 or non-finite flux are masked.
    fill : ndarray (T,), optional
        Values to fill with (those of the training set); computed from ``flux`` when None.

    Returns
    -------
    filled : ndarray (n, T)
    fill : ndarray (T,)
    """
    flux = np.asarray(flux, dtype="f8")
    good = np.isfinite(flux)
    if weight is not None:
        good &= np.asarray(weight) > 0
    if fill is None:
        f = np.where(good, flux, 0.0)
        count = good.sum(0)
        # a pixel no spectrum covers is filled with the global mean: it then carries no variance
        fill = np.where(count > 0, f.sum(0) / np.maximum(count, 1), f[good].mean() if good.any() else 0.0)
    return np.where(good, flux, np.asarray(fill)[None, :]), np.asarray(fill)


class SpectraPCA(TransformerMixin, BaseEstimator):
    """PCA of the resampled spectra (masked pixels filled per pixel, see :func:`spectra_matrix`).

    Parameters
    ----------
    n_components : int
    """

    def __init__(self, n_components=2):
        self.n_components = n_components

    def fit(self, X, y=None, weight=None):
        from sklearn.decomposition import PCA

        X, self.fill_ = spectra_matrix(X, weight)
        _check_components(self.n_components, *X.shape)
        self.pca_ = PCA(n_components=self.n_components).fit(X)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X, weight=None):
        check_is_fitted(self, "pca_")
        return self.pca_.transform(spectra_matrix(X, weight, self.fill_)[0])

    def fit_transform(self, X, y=None, weight=None):
        return self.fit(X, weight=weight).transform(X, weight=weight)


class SpectraUMAP(TransformerMixin, BaseEstimator):
    """UMAP of the resampled spectra (masked pixels filled per pixel, see :func:`spectra_matrix`).

    Parameters
    ----------
    n_components, n_neighbors, min_dist, random_state
        As :class:`ReadoutUMAP`'s.
    """

    def __init__(self, n_components=2, n_neighbors=15, min_dist=0.1, random_state=0):
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.random_state = random_state

    def fit(self, X, y=None, weight=None):
        X, self.fill_ = spectra_matrix(X, weight)
        _check_components(self.n_components, *X.shape)
        self.umap_ = _umap(self, len(X))
        self.embedding_ = self.umap_.fit_transform(X)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X, weight=None):
        check_is_fitted(self, "umap_")
        return self.umap_.transform(spectra_matrix(X, weight, self.fill_)[0])

    def fit_transform(self, X, y=None, weight=None):
        return self.fit(X, weight=weight).embedding_


def _umap(est, n_rows: int):
    """umap-learn's UMAP with ``est``'s settings (neighbours capped at ``n_rows - 1``), on one thread."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import umap

    return umap.UMAP(
        n_components=est.n_components,
        n_neighbors=min(est.n_neighbors, n_rows - 1),
        min_dist=est.min_dist,
        random_state=est.random_state,
        n_jobs=1,
    )
