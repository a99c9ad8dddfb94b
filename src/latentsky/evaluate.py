"""Scores every latent map is judged by.

* :func:`knn_purity`: leave-one-out k-nearest-neighbour purity of any catalog
  column in latent space (repeat observations of one star should be each
  other's neighbours);
* :func:`trustworthiness` and :func:`continuity`: are latent neighbours true
  neighbours, and do true neighbours stay neighbours;
* :func:`reconstruction_error`: the data-space one-step error of
  reconstructed readouts, from the stage-1 statistics (no spectra needed);
* :func:`anomaly_scores`: per-spectrum excess of that error over the stage-1
  readout's, to rank unusual spectra;
* :func:`score_map`: all of them in one dictionary.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

from latentsky.exceptions import AutoencoderError


def _points(Z, name="Z") -> np.ndarray:
    Z = np.asarray(Z, dtype="f8")
    if Z.ndim == 1:
        Z = Z[:, None]
    if Z.ndim != 2 or not np.isfinite(Z).all():
        raise AutoencoderError(f"parameter {name}: expected a finite array of shape (n, d), got shape {Z.shape}")
    return Z


def _check_k(k, n):
    if not (isinstance(k, numbers.Integral) and 1 <= k < n):
        raise AutoencoderError(f"parameter k={k!r}: must be an integer in [1, n - 1] = [1, {n - 1}]")


def standardised(readouts) -> np.ndarray:
    """Readouts (n, M) with every weight shifted to mean 0 and scaled to unit std (constant ones left at 0)."""
    r = np.asarray(readouts, dtype="f8")
    std = r.std(0)
    return (r - r.mean(0)) / np.where(std > 0, std, 1.0)


def neighbours(Z, k: int) -> np.ndarray:
    """Indices (n, k) of each point's ``k`` nearest other points (Euclidean), nearest first.

    Up to 4096 points the distances are computed exactly and ties go to the
    lower index; beyond that a scikit-learn tree search is used.
    """
    Z = _points(Z)
    _check_k(k, len(Z))
    if len(Z) <= 4096:
        from scipy.spatial.distance import cdist

        d = cdist(Z, Z, "sqeuclidean")  # differences taken exactly: ties stay ties
        np.fill_diagonal(d, np.inf)
        # a stable sort keeps equal distances in index order
        order = np.argsort(d, axis=1, kind="stable")
        return order[:, :k]
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k + 1).fit(Z)
    idx = nn.kneighbors(Z, return_distance=False)
    out = np.empty((len(Z), k), dtype=int)
    for i, row in enumerate(idx):
        row = row[row != i]
        out[i] = row[:k]
    return out


def knn_purity(Z, labels, k: int = 1, *, repeated_only: bool = True) -> float:
    """Leave-one-out k-nearest-neighbour purity of ``labels`` in the map ``Z``.

    For every point, the fraction of its ``k`` nearest other points that share
    its label; averaged over the points scored.

    Parameters
    ----------
    Z : ndarray (n, d)
        Latent coordinates.
    labels : array-like (n,)
        Any catalog column (object name, class...); missing values (None/NaN)
        are never scored and never count as a match.
    k : int
        Neighbours per point.
    repeated_only : bool
        Score only points whose label occurs at least twice: a single
        observation of an object cannot have a neighbour of the same object,
        and would only lower the purity of every map alike.

    Returns
    -------
    float
        In [0, 1]; NaN when no point can be scored.
    """
    Z = _points(Z)
    labels = pd.Series(np.asarray(labels, dtype=object))
    if len(labels) != len(Z):
        raise AutoencoderError(f"parameter labels: {len(labels)} labels for {len(Z)} points")
    missing = labels.isna().to_numpy()
    codes = pd.factorize(labels)[0]  # -1 for missing
    idx = neighbours(Z, k)
    same = (codes[idx] == codes[:, None]) & ~missing[idx]
    counts = pd.Series(codes[~missing]).value_counts()
    scored = ~missing
    if repeated_only:
        scored &= np.array([counts.get(c, 0) >= 2 for c in codes])
    if not scored.any():
        return float("nan")
    return float(same[scored].mean(axis=1).mean())


def trustworthiness(X, Z, k: int = 5) -> float:
    """Trustworthiness of the map ``Z`` of the data ``X`` (:func:`sklearn.manifold.trustworthiness`).

    1 when every point's ``k`` latent neighbours are also among its nearest
    neighbours in ``X``; penalises points that the map brings close but that
    are far apart in ``X``, by their rank.
    """
    from sklearn.manifold import trustworthiness as _tw

    X, Z = _points(X, "X"), _points(Z)
    if len(X) != len(Z):
        raise AutoencoderError(f"parameters X and Z: {len(X)} and {len(Z)} points")
    if not (isinstance(k, numbers.Integral) and 1 <= k < len(X) / 2):
        raise AutoencoderError(f"parameter k={k!r}: must be an integer in [1, n/2) for n = {len(X)}")
    return float(_tw(X, Z, n_neighbors=k))


def continuity(X, Z, k: int = 5) -> float:
    """Continuity of the map: trustworthiness with the roles of ``X`` and ``Z`` swapped.

    1 when every point's ``k`` nearest neighbours in ``X`` stay among its
    latent neighbours; penalises neighbours the map tears apart.
    """
    return trustworthiness(Z, X, k)


def reconstruction_error(stats, readouts, *, per: str = "step") -> np.ndarray:
    """Data-space one-step squared error of readouts, per spectrum, from the stage-1 statistics.

    Parameters
    ----------
    stats : ReadoutStatistics
        ``G = X'X``, ``h = X'y``, ``c = y'y`` and ``n_steps`` of each spectrum.
    readouts : ndarray (n, N+1)
        Readouts to score (reconstructed by a map, or the stage-1 ones).
    per : {"step", "energy", "sum"}
        ``"step"``: ``sse / n_steps`` (mean squared error of the normalised
        flux); ``"energy"``: ``sse / y'y`` (fraction of the spectrum's energy
        not predicted); ``"sum"``: ``sse`` itself.

    Returns
    -------
    ndarray (n,)
    """
    w = np.asarray(readouts, dtype="f8")
    if w.shape != stats.xty.shape:
        raise AutoencoderError(f"parameter readouts: shape {w.shape} does not match the statistics "
                               f"{stats.xty.shape}")
    sse = np.maximum(stats.sse(w), 0.0)
    if per == "step":
        return sse / np.maximum(stats.n_steps, 1)
    if per == "energy":
        return sse / np.maximum(stats.yty, 1e-300)
    if per == "sum":
        return sse
    raise AutoencoderError(f"parameter per={per!r}: must be 'step', 'energy' or 'sum'")


def anomaly_scores(stats, reconstructed, readouts) -> np.ndarray:
    """How much of each spectrum's predictable structure the map loses.

    ``(sse(w_rec) - sse(w*)) / n_steps``: the excess one-step squared error of
    the reconstructed readout over the spectrum's own stage-1 readout, per step.
    Noise that no readout predicts cancels out, so noisy spectra are not
    ranked as unusual merely for being noisy; a spectrum unlike the others,
    which the map cannot place, scores high.

    Parameters
    ----------
    stats : ReadoutStatistics
    reconstructed : ndarray (n, N+1)
        Readouts reconstructed by the map.
    readouts : ndarray (n, N+1)
        The stage-1 readouts.
    """
    per = np.maximum(stats.n_steps, 1)
    w_rec = np.asarray(reconstructed, dtype="f8")
    w = np.asarray(readouts, dtype="f8")
    if w_rec.shape != w.shape:
        raise AutoencoderError(f"parameters reconstructed and readouts: shapes {w_rec.shape} and {w.shape}")
    return (stats.sse(w_rec) - stats.sse(w)) / per


def score_map(Z, catalog: pd.DataFrame, *, labels=("object",), readouts=None, stats=None, reconstructed=None,
              ks=(1, 5), neighbourhood: int = 5) -> dict:
    """Every score of one map, as a flat JSON-friendly dictionary.

    Parameters
    ----------
    Z : ndarray (n, d)
        The map.
    catalog : DataFrame
        One row per point, holding the label columns.
    labels : sequence of str
        Catalog columns to score purity on (``purity_<column>_k<k>``).
    readouts : ndarray (n, N+1), optional
        The stage-1 readouts: the high-dimensional space of trustworthiness and
        continuity (standardised per feature), and the reference of the anomaly
        scores.
    stats : ReadoutStatistics, optional
        With ``reconstructed``, gives ``recon_error`` (mean ``sse/n_steps``),
        ``recon_excess`` (mean anomaly score) and ``stage1_error`` (the floor).
    reconstructed : ndarray (n, N+1), optional
    ks : sequence of int
    neighbourhood : int
        ``k`` of trustworthiness and continuity.
    """
    Z = _points(Z)
    out: dict = {"n": int(len(Z))}
    for col in labels:
        if col not in catalog:
            raise AutoencoderError(f"parameter labels: the catalog has no column {col!r}")
        for k in ks:
            if k < len(Z):
                out[f"purity_{col}_k{k}"] = knn_purity(Z, catalog[col].to_numpy(), k)
    if readouts is not None:
        r = standardised(readouts)
        if neighbourhood < len(Z) / 2:
            out["trustworthiness"] = trustworthiness(r, Z, neighbourhood)
            out["continuity"] = continuity(r, Z, neighbourhood)
    if stats is not None and reconstructed is not None:
        out["recon_error"] = float(np.mean(reconstruction_error(stats, reconstructed)))
        if readouts is not None:
            out["stage1_error"] = float(np.mean(reconstruction_error(stats, readouts)))
            out["recon_excess"] = float(np.mean(anomaly_scores(stats, reconstructed, readouts)))
    return out
