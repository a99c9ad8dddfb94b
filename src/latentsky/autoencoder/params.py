"""Checks of a :class:`~latentsky.autoencoder.estimator.LatentAutoencoder`'s parameters, made when it fits."""

from __future__ import annotations

import numbers

from latentsky.autoencoder.maps import KINDS
from latentsky.exceptions import AutoencoderError


def check_params(est) -> None:
    """Raise :class:`AutoencoderError` naming the first parameter of ``est`` out of its range."""
    from latentsky.autoencoder.coupled import NORMALISATIONS

    def check(name, ok, what):
        if not ok:
            raise AutoencoderError(f"parameter {name}={getattr(est, name)!r}: {what}")

    def integer(name, low):
        v = getattr(est, name)
        check(name, isinstance(v, numbers.Integral) and v >= low, f"must be an integer >= {low}")

    def real(name, low, strict=False):
        v = getattr(est, name)
        ok = isinstance(v, numbers.Real) and (v > low if strict else v >= low)
        check(name, ok, f"must be {'>' if strict else '>='} {low}")

    check("map", est.map in KINDS, f"must be one of {KINDS}")
    integer("n_latent", 1)
    check(
        "hidden",
        all(isinstance(h, numbers.Integral) and h >= 1 for h in est.hidden),
        "must be a sequence of positive integers",
    )
    check("normalise", est.normalise in NORMALISATIONS, f"must be one of {NORMALISATIONS}")
    check("whiten", est.whiten in ("auto", "metric", "std", "split"), "must be 'auto', 'metric', 'std' or 'split'")
    check("optimizer", est.optimizer in ("auto", "lbfgs", "adam"), "must be 'auto', 'lbfgs' or 'adam'")
    for name in ("restarts", "max_iter", "epochs", "batch_size", "steps_per_execution", "negative_rate"):
        integer(name, 1)
    integer("n_neighbors", 2)
    integer("patience", 0)
    real("tol", 0)
    real("weight_decay", 0)
    real("neighbour_weight", 0)
    real("euclidean_weight", 0)
    check(
        "data_scale",
        est.data_scale == "floor" or (isinstance(est.data_scale, numbers.Real) and est.data_scale > 0),
        "must be 'floor' or a number > 0",
    )
    real("learning_rate", 0, strict=True)
    real("edges_per_spectrum", 0, strict=True)
    check("min_dist", isinstance(est.min_dist, numbers.Real) and 0 <= est.min_dist <= 1, "must be in [0, 1]")
    check(
        "validation_fraction",
        est.validation_fraction is None
        or (isinstance(est.validation_fraction, numbers.Real) and 0 <= est.validation_fraction < 1),
        "must be None or in [0, 1)",
    )
