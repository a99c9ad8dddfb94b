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


def cross_prediction_ratios(
    stats: ReadoutStatistics,
    readouts: np.ndarray,
    *,
    partners: int = 8,
    seed: int = 0,
    others: np.ndarray | None = None,
    rows=None,
) -> np.ndarray:
    """Error of ``partners`` random other spectra's readouts over the own readout's, shape (n, partners).

    ``others`` (default ``readouts``) are the readouts the partners are drawn from and ``rows`` (default
    ``0..n-1``) the positions of ``stats``' spectra among them (never their own partner).
    """
    others = readouts if others is None else others
    m = len(others)
    n = len(stats)
    rows = np.arange(n) if rows is None else np.asarray(rows)
    if m < 2:
        return np.full((n, 0), np.nan)
    rng = np.random.default_rng(seed)
    own = np.maximum(np.clip(stats.sse(readouts), 0.0, None), 1e-300)
    out = np.empty((n, partners))
    for k in range(partners):
        other = (rows + rng.integers(1, m, size=n)) % m  # never the spectrum itself
        out[:, k] = np.clip(stats.sse(others[other]), 0.0, None) / own
    return out


def stage1_report(source, *, max_spectra: int = 5000, partners: int = 8, seed: int = 0, chunk_rows: int = 500) -> dict:
    """The figures of the module docstring for ``metrics.json``.

    Parameters
    ----------
    source : Embeddings, path-like, or (ReadoutStatistics, readouts)
        An EMBEDDINGS directory (:func:`~latentsky.embed.layout.open_embeddings`) or the statistics and
        readouts themselves.
    max_spectra : int
        Beyond this many spectra, a random sample of them (drawn with ``seed``) is scored.
    partners : int
        Other spectra per spectrum for the contrast (drawn among the scored ones).
    seed : int
    chunk_rows : int
        Spectra whose Gram matrices are unpacked at a time (an EMBEDDINGS directory is read in chunks).

    Returns
    -------
    dict
        ``persistence_ratio_median``, ``persistence_win_share`` (share of spectra whose readout
        beats persistence), ``cross_prediction_contrast`` (median), ``n_scored``; the ratios are
        None for embeddings written without the persistence error.
    """
    if isinstance(source, tuple):
        stats, readouts = source
        readouts = np.asarray(readouts, dtype="f8")
        parts = [(stats, readouts, np.arange(len(readouts)))]
    else:
        from latentsky.embed.layout import Embeddings, open_embeddings

        emb = source if isinstance(source, Embeddings) else open_embeddings(source)
        n = len(emb)
        rows = (
            np.sort(np.random.default_rng(seed).choice(n, max_spectra, replace=False))
            if n > max_spectra
            else np.arange(n)
        )
        readouts = np.asarray(emb.readout.get_orthogonal_selection((rows, slice(None))), dtype="f8")
        parts = (
            (
                emb.statistics(rows[lo : lo + chunk_rows]),
                readouts[lo : lo + chunk_rows],
                np.arange(lo, min(lo + chunk_rows, len(rows))),
            )
            for lo in range(0, len(rows), chunk_rows)
        )
    ratios, contrasts = [], []
    for k, (stats, own, at) in enumerate(parts):
        ratios.append(persistence_ratios(stats, own))
        contrasts.append(
            cross_prediction_ratios(stats, own, partners=partners, seed=seed + k, others=readouts, rows=at)
        )
    ratio, contrast = np.concatenate(ratios), np.concatenate(contrasts)
    finite = np.isfinite(ratio)
    return {
        "persistence_ratio_median": float(np.median(ratio[finite])) if finite.any() else None,
        "persistence_win_share": float(np.mean(ratio[finite] < 1.0)) if finite.any() else None,
        "cross_prediction_contrast": float(np.median(contrast)) if contrast.size else None,
        "n_scored": int(len(ratio)),
    }
