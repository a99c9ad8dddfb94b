"""Stage 1: embed each spectrum as the readout weights of one echo-state network.

* :mod:`.defaults`: the recommended settings, in one place;
* :mod:`.reservoir`: simple cycle and random sparse reservoirs (optionally
  with the position along the spectrum as a second input);
* :mod:`.series`: spectra to the series a reservoir reads (masking, binning);
* :mod:`.esn`: :class:`ESNReadoutEmbedder` (scikit-learn estimator);
* :mod:`.statistics`: the per-spectrum sufficient statistics, ridge by GCV;
* :mod:`.tuning`: :func:`tune_reservoir`;
* :mod:`.quality`: the persistence ratio and cross-prediction contrast (:func:`stage1_report`);
* :mod:`.backends`: the batched NumPy and TensorFlow computations;
* :mod:`.runner`: :func:`embed_store`, out of core (optionally on Dask);
* :mod:`.layout`: the on-disk layout stage 2 reads, :func:`open_embeddings`.

TensorFlow and Dask are imported only when used, and every module of the
package only when one of its names is first used.
"""

#: Public name -> the module that defines it; imported on first use (PEP 562), so that
#: ``latentsky.embed.defaults`` (the command line's import) pulls in neither scikit-learn nor zarr.
_HOMES = {
    "ESNReadoutEmbedder": "esn",
    "stage1_report": "quality",
    "Reservoir": "reservoir",
    "random_sparse_reservoir": "reservoir",
    "simple_cycle_reservoir": "reservoir",
    "reference_statistics": "series",
    "ReadoutStatistics": "statistics",
    "gcv_ridge": "statistics",
    "solve_readouts": "statistics",
    "tune_reservoir": "tuning",
    "embed_store": "runner",
    "open_embeddings": "layout",
}

__all__ = sorted(_HOMES)


def __getattr__(name):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f"latentsky.embed.{_HOMES[name]}"), name)
    raise AttributeError(name)
