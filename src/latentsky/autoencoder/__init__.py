"""Stage 2: latent maps of ESN readouts.

* :mod:`.maps`: the kinds of map (``hybrid``, ``coupled``, ``euclidean``,
  ``umap``, ``pca``) and their names;
* :mod:`.coupled`: the model-coupled loss, the data-space error of a readout
  from the stage-1 statistics;
* :mod:`.model`: :class:`ReadoutAutoencoder`, the ``keras.Model``;
* :mod:`.estimator`: :class:`LatentAutoencoder`, the scikit-learn-style
  estimator (with :mod:`.sources`, :mod:`.datasets`, :mod:`.lbfgs`,
  :mod:`.graphs`, :mod:`.fitting`, :mod:`.events`);
* :mod:`.baselines`: PCA and UMAP on the readouts, PCA and UMAP on the spectra.

TensorFlow (and umap, which loads it) is imported only when a model is built
or loaded.
"""

__all__ = ["LatentAutoencoder", "TrainingEvent", "ReadoutPCA", "ReadoutUMAP", "SpectraPCA", "SpectraUMAP"]


def __getattr__(name):
    if name in ("LatentAutoencoder", "TrainingEvent"):
        from latentsky.autoencoder import estimator

        return getattr(estimator, name)
    if name in ("ReadoutPCA", "ReadoutUMAP", "SpectraPCA", "SpectraUMAP"):
        from latentsky.autoencoder import baselines

        return getattr(baselines, name)
    if name == "ReadoutAutoencoder":
        from latentsky.autoencoder.model import ReadoutAutoencoder

        return ReadoutAutoencoder
    raise AttributeError(name)
