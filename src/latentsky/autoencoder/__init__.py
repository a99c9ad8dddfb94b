"""Stage 2: autoencode ESN readouts into a latent map.

* :mod:`.model`: :class:`ReadoutAutoencoder`, a ``keras.Model`` whose
  ``train_step`` minimises the model-coupled loss (the data-space error of the
  reconstructed readout, from the stage-1 statistics);
* :mod:`.estimator`: :class:`LatentAutoencoder`, the scikit-learn-style wrapper
  (streams EMBEDDINGS with ``tf.data``, early stopping, checkpoints, progress
  events, ``.keras`` files);
* :mod:`.baselines`: PCA and UMAP on the readouts, PCA on the spectra.

TensorFlow (and umap, which loads it) is imported only when a model is built
or loaded.
"""

__all__ = ["LatentAutoencoder", "TrainingEvent", "ReadoutPCA", "ReadoutUMAP", "SpectraPCA"]


def __getattr__(name):
    if name in ("LatentAutoencoder", "TrainingEvent"):
        from latentsky.autoencoder import estimator

        return getattr(estimator, name)
    if name in ("ReadoutPCA", "ReadoutUMAP", "SpectraPCA"):
        from latentsky.autoencoder import baselines

        return getattr(baselines, name)
    if name == "ReadoutAutoencoder":
        from latentsky.autoencoder.model import ReadoutAutoencoder

        return ReadoutAutoencoder
    raise AttributeError(name)
