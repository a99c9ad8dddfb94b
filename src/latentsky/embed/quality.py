"""How much the stage-1 readouts say: two figures for ``metrics.json`` and the benchmarks.

Persistence ratio
    Each spectrum's one-step squared error with its own readout, divided by the
    error of *persistence* on the same steps (predict each value by the one
    before it: "repeat the last pixel").  Below 1 the readout has learnt
    something about the spectrum's dynamics; reported as the median over
    spectra and the share of spectra below 1.
Cross-prediction contrast
    The error of a random *other* spectrum's readout on a spectrum, divided by
    the spectrum's own readout's error; reported as the median over
    (spectrum, other) pairs.  Near 1, a readout hardly tells its spectrum from
    any other, and the model-coupled loss of stage 2 (which judges a
    reconstructed readout by this data-space error) cannot separate spectra.

Both are computed from the sufficient statistics alone
(:class:`~latentsky.embed.statistics.ReadoutStatistics`), without the spectra.
"""

from __future__ import annotations

import numpy as np

from latentsky.embed.statistics import ReadoutStatistics


def persistence_ratios(stats: ReadoutStatistics, readouts: np.ndarray) -> np.ndarray:
    """Own one-step error over persistence's, per spectrum (NaN where persistence was not recorded or is 0)."""
    if stats.persistence is None:
        return np.full(len(stats), np.nan)
    own = np.clip(stats.sse(readouts), 0.0, None)
    return np.divide(own, stats.persistence, out=np.full(len(stats), np.nan), where=stats.persistence > 0)


def cross_prediction_ratios(stats: ReadoutStatistics, readouts: np.ndarray, *, partners: int = 8,
                            seed: int = 0) -> np.ndarray:
    """Error of ``partners`` random other spectra's readouts over the own readout's, shape (n, partners)."""
    n = len(stats)
    if n < 2:
        return np.full((n, 0), np.nan)
    rng = np.random.default_rng(seed)
    own = np.maximum(np.clip(stats.sse(readouts), 0.0, None), 1e-300)
    out = np.empty((n, partners))
    for k in range(partners):
        other = (np.arange(n) + rng.integers(1, n, size=n)) % n        # never the spectrum itself
        out[:, k] = np.clip(stats.sse(readouts[other]), 0.0, None) / own
    return out


def stage1_report(source, *, max_spectra: int = 5000, partners: int = 8, seed: int = 0) -> dict:
    """The figures of the module docstring for ``metrics.json``.

    Parameters
    ----------
    source : Embeddings, path-like, or (ReadoutStatistics, readouts)
        An EMBEDDINGS directory (:func:`~latentsky.embed.runner.open_embeddings`) or the statistics and
        readouts themselves.
    max_spectra : int
        Beyond this many spectra, a random sample of them (drawn with ``seed``) is scored.
    partners : int
        Other spectra per spectrum for the contrast.
    seed : int

    Returns
    -------
    dict
        ``persistence_ratio_median``, ``persistence_win_share`` (share of spectra whose readout
        beats persistence), ``cross_prediction_contrast`` (median), ``n_scored``; the ratios are
        None for embeddings written without the persistence error.
    """
    if isinstance(source, tuple):
        stats, readouts = source
    else:
        from latentsky.embed.layout import Embeddings, open_embeddings

        emb = source if isinstance(source, Embeddings) else open_embeddings(source)
        n = len(emb)
        rows = np.sort(np.random.default_rng(seed).choice(n, max_spectra, replace=False)) if n > max_spectra \
            else slice(None)
        stats = emb.statistics(rows)
        readouts = np.asarray(emb.readout[rows] if isinstance(rows, slice)
                              else emb.readout.get_orthogonal_selection((rows, slice(None))), dtype="f8")
    readouts = np.asarray(readouts, dtype="f8")
    ratio = persistence_ratios(stats, readouts)
    finite = np.isfinite(ratio)
    contrast = cross_prediction_ratios(stats, readouts, partners=partners, seed=seed)
    return {
        "persistence_ratio_median": float(np.median(ratio[finite])) if finite.any() else None,
        "persistence_win_share": float(np.mean(ratio[finite] < 1.0)) if finite.any() else None,
        "cross_prediction_contrast": float(np.median(contrast)) if contrast.size else None,
        "n_scored": int(len(stats)),
    }
