"""The recommended stage-1 settings, in one place.

:class:`~latentsky.embed.esn.ESNReadoutEmbedder` takes its defaults from here,
and so do the pipeline (:data:`latentsky.pipeline_defaults.EMBED_DEFAULTS`),
``latentsky embed`` and the app's Embed step.  Chosen on the bundled sample
and reported on independent SDSS and HARPS sets in
docs/decisions/stage1-defaults.md.  Only the settings that change the readouts
are here; those of the machine (back end, threads, batch sizes) are the
estimator's own.  This module imports nothing, so the command line starts fast.
"""

#: Parameter -> default of :class:`~latentsky.embed.esn.ESNReadoutEmbedder`: a leaky simple cycle
#: reservoir reading the flux binned by 16 pixels, with the position along the spectrum as a
#: second input (ours), no tuning.
ESN_DEFAULTS = {
    "n_units": 100,
    "reservoir": "cycle",
    "cycle_weight": 0.9,
    "input_scaling": 0.5,
    "bias": 0.0,
    "leak_rate": 0.5,
    "position_scaling": 1.0,
    "bin_pixels": 16,
    "density": 0.1,
    "washout": 20,
    "ridge": 1e-2,
    "ridge_grid": None,
    "input_offset": "mean",
    "tune": 0,
    "tune_iter": 60,
    "tune_params": ("cycle_weight", "input_scaling", "bias"),
}
