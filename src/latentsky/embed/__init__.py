"""Stage 1: embed each spectrum as the readout weights of one echo-state network.

* :mod:`.reservoir`: simple cycle and random sparse reservoirs (optionally
  with the position along the spectrum as a second input);
* :mod:`.series`: spectra to the series a reservoir reads (masking, binning);
* :mod:`.esn`: :class:`ESNReadoutEmbedder` (scikit-learn estimator);
* :mod:`.statistics`: the per-spectrum sufficient statistics, ridge by GCV;
* :mod:`.tuning`: :func:`tune_reservoir`;
* :mod:`.quality`: the persistence ratio and cross-prediction contrast (:func:`stage1_report`);
* :mod:`.backends`: the batched NumPy and TensorFlow computations;
* :mod:`.runner`: :func:`embed_store`, out of core (optionally on Dask), and the
  on-disk layout stage 2 reads.

TensorFlow and Dask are imported only when used.
"""

from latentsky.embed.esn import ESNReadoutEmbedder
from latentsky.embed.quality import stage1_report
from latentsky.embed.reservoir import Reservoir, random_sparse_reservoir, simple_cycle_reservoir
from latentsky.embed.series import reference_statistics
from latentsky.embed.statistics import ReadoutStatistics, gcv_ridge, solve_readouts
from latentsky.embed.tuning import tune_reservoir

__all__ = ["ESNReadoutEmbedder", "ReadoutStatistics", "Reservoir", "gcv_ridge", "random_sparse_reservoir",
           "reference_statistics", "simple_cycle_reservoir", "solve_readouts", "stage1_report", "tune_reservoir",
           "embed_store", "open_embeddings"]


def __getattr__(name):
    # The runner pulls in zarr/pandas; keep `import latentsky.embed` light.
    if name in ("embed_store", "open_embeddings"):
        from latentsky.embed import runner

        return getattr(runner, name)
    raise AttributeError(name)
