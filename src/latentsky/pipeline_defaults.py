"""The pipeline's default hyper-parameters, chosen on the bundled sample.

One home for the settings `latentsky pipeline` (and `latentsky demo`) uses when
the caller gives none; bench/quality.py scores the map they make.
"""

#: Stage-1 settings of the pipeline (the ``latentsky embed`` defaults).
EMBED_DEFAULTS = {"n_units": 100, "reservoir": "cycle", "ridge": 1e-2}

#: Autoencoder settings of the pipeline, chosen on the bundled sample (see bench/quality.py).
#: ``validation_fraction`` None: 0.1 from 1,000 spectra on, else 0 (a map of a few hundred
#: spectra is fitted on all of them and stops when the training loss stalls).
TRAIN_DEFAULTS = {"hidden": (64,), "learning_rate": 1e-2, "epochs": 600, "batch_size": 32,
                  "validation_fraction": None, "patience": 60, "weight_decay": 1e-4, "loss": "coupled"}
