"""The pipeline's default settings: one home for what ``latentsky pipeline``, ``latentsky demo`` and the
app's steps use when the caller gives none.

Stage 2 has no settings of its own here: its defaults are
:class:`~latentsky.autoencoder.estimator.LatentAutoencoder`'s (a bare
``LatentAutoencoder()`` makes the pipeline's map), read by
:func:`train_defaults`.  How each setting was chosen, with the figures
measured, is in ``docs/decisions/``.
"""

from latentsky.embed.defaults import ESN_DEFAULTS

#: Stage-1 settings of the pipeline, of ``latentsky embed`` and of the app's Embed step: the
#: defaults of :class:`~latentsky.embed.esn.ESNReadoutEmbedder` itself (their one home,
#: :mod:`latentsky.embed.defaults`), less the settings of the machine (back end, threads,
#: batch sizes), which do not change results.
EMBED_DEFAULTS = dict(ESN_DEFAULTS)

#: Parameters of :class:`~latentsky.autoencoder.estimator.LatentAutoencoder` that are not settings of
#: the map (where a run keeps its files, its seed, its progress callback): the pipeline sets them.
_RUN_PARAMETERS = ("checkpoint_dir", "cache_dir", "progress", "random_state")


def train_defaults() -> dict:
    """The autoencoder's default settings: ``LatentAutoencoder()``'s own (without the run's paths, seed and
    callback).  Importing the estimator does not load TensorFlow."""
    from latentsky.autoencoder.estimator import LatentAutoencoder

    params = LatentAutoencoder().get_params()
    return {k: v for k, v in params.items() if k not in _RUN_PARAMETERS}


def __getattr__(name):
    if name == "TRAIN_DEFAULTS":  # read-only view for scripts: the estimator's defaults
        return train_defaults()
    raise AttributeError(name)


#: Spectra passed through the autoencoder per Adam training phase, at most (spectra x epochs): on a
#: big training set (Adam trains where the full-batch inputs do not fit in memory) the pipeline
#: cuts ``epochs`` (and the patience of early stopping and of the learning-rate schedule, in
#: proportion) to this budget, at least :data:`MIN_EPOCHS`.  The pipeline's 10,000-spectrum
#: training sample gets 56 epochs per phase (about 16,000 gradient steps), which on 2 cores trains
#: in minutes instead of an hour.
TRAIN_VISITS = 500_000
#: Fewest epochs per phase the budget leaves.
MIN_EPOCHS = 30


def within_budget(params: dict, n_fit: int, visits: int | None = TRAIN_VISITS) -> dict:
    """``params`` (of :class:`~latentsky.autoencoder.estimator.LatentAutoencoder`) cut to ``visits``.

    Parameters
    ----------
    params : dict
        Training parameters with ``epochs`` and ``patience`` (``lr_patience``
        defaults to the estimator's 10).
    n_fit : int
        Spectra fitted on per epoch (the training rows less the validation ones).
    visits : int or None
        Spectra x epochs per phase, at most; None: no budget.

    Returns
    -------
    dict
        ``params`` itself when within the budget, else a copy with fewer
        ``epochs`` and proportionally shorter patiences.
    """
    if visits is None:
        return params
    cap = max(MIN_EPOCHS, -(-int(visits) // max(1, int(n_fit))))
    epochs = int(params["epochs"])
    if cap >= epochs:
        return params
    scale = cap / epochs
    out = {
        **params,
        "epochs": cap,
        "patience": max(3, round(int(params["patience"]) * scale)),
        "lr_patience": max(2, round(int(params.get("lr_patience", 10)) * scale)),
    }
    return out
