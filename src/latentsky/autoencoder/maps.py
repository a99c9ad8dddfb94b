"""The kinds of map :class:`~latentsky.autoencoder.estimator.LatentAutoencoder` makes, and their names.

======== ==================================================================
kind     how the 2-D coordinates are made
======== ==================================================================
coupled  the model-coupled autoencoder (Gianniotis et al. 2016): encoder and
         decoder trained end to end on the data-space error of the
         reconstructed readout, nothing else
hybrid   the same loss plus a neighbour term (UMAP's cross-entropy) on a
         graph built in the method's own geometry: the symmetrised
         cross-prediction error of one spectrum's readout on another spectrum
euclidean a dense autoencoder trained end to end on the Euclidean distance of
         the standardised readouts (the baseline the coupled loss replaces)
umap     umap-learn's layout of the standardised readouts, made parametric by
         regressing the encoder onto it (a baseline: the model-coupled loss
         does not move its points)
pca      PCA of the standardised readouts (a linear baseline, exact)
======== ==================================================================

Every kind has a decoder, so every map reconstructs a readout and is scored
by its data-space error: for ``umap`` and ``pca`` it is fitted to the
model-coupled loss with the map fixed (the best that map allows), for
``euclidean`` it is the Euclidean autoencoder's own.  This module imports
nothing heavy: the pipeline, the command line and the app read the names here.
"""

from __future__ import annotations

#: Map kinds, in the order they are offered.
KINDS = ("hybrid", "coupled", "umap", "euclidean", "pca")

#: What each kind is, in words (titles, legends, metrics.json, the README).
NAMES = {
    "coupled": "model-coupled autoencoder (ours)",
    "hybrid": "model-coupled autoencoder with a neighbour term (ours)",
    "euclidean": "Euclidean autoencoder of the readouts (baseline)",
    "umap": "UMAP of the readouts with a model-coupled decoder (baseline)",
    "pca": "PCA of the readouts with a model-coupled decoder (baseline)",
}

#: The recommended kind: ``LatentAutoencoder()``'s default, hence the pipeline's and the app's.  It is one of
#: :data:`COUPLED_KINDS` (the method is the product: a map the model-coupled loss lays out), the one with
#: the best neighbour resemblance on the bundled sample (docs/decisions/default-map.md); ``umap`` and
#: ``pca`` stay baselines, whatever they score.
DEFAULT_KIND = "hybrid"

#: Kinds whose encoder the model-coupled loss trains: the only candidates for :data:`DEFAULT_KIND`.
COUPLED_KINDS = ("coupled", "hybrid")

#: Kinds whose encoder is trained on a reconstruction loss (end to end); the others fix the map first.
END_TO_END = ("coupled", "hybrid", "euclidean")


def describe(kind: str) -> str:
    """The name of a map kind in words (the kind itself when unknown)."""
    return NAMES.get(kind, kind)
