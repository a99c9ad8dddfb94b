"""Scores every latent map is judged by.

* :func:`knn_purity`: leave-one-out k-nearest-neighbour purity of any catalog
  column in latent space (repeat observations of one star should be each
  other's neighbours);
* :func:`trustworthiness` and :func:`continuity`: are latent neighbours true
  neighbours, and do true neighbours stay neighbours;
* :func:`flux_distances`, :func:`neighbour_resemblance` and
  :func:`trust_data`: judged on the spectra themselves (the data space), not
  on any method's own coordinates: how much a spectrum's map neighbour looks
  like it, and trustworthiness with flux-space neighbours;
* :func:`knn_regression`: how well a numeric column (redshift) is predicted
  by the mean of a point's map neighbours;
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


#: Fewest pixels two spectra must share (both valid) to be compared; fewer: they are unrelated (distance 1).
MIN_SHARED_PIXELS = 16


def _flux_arrays(flux, weight):
    flux = np.asarray(flux, dtype="f8")
    if flux.ndim != 2:
        raise AutoencoderError(f"parameter flux: expected shape (n, n_pixels), got {flux.shape}")
    valid = np.isfinite(flux)
    if weight is not None:
        weight = np.asarray(weight)
        if weight.shape != flux.shape:
            raise AutoencoderError(f"parameter weight: shape {weight.shape} differs from the flux's {flux.shape}")
        valid &= weight > 0
    return np.where(valid, flux, 0.0), valid.astype("f8")


def _residual(fg, gg_on_f, ff_on_g, shared):
    """Relative residual ``|f - a g| / |f|`` at the best scale ``a`` from the inner products on shared pixels."""
    with np.errstate(divide="ignore", invalid="ignore"):
        res = ff_on_g - np.where(gg_on_f > 0, fg**2 / gg_on_f, 0.0)
        rel = np.sqrt(np.clip(res, 0.0, None) / ff_on_g)
    return np.where((shared >= MIN_SHARED_PIXELS) & (ff_on_g > 0), np.minimum(rel, 1.0), 1.0)


def flux_distances(flux, weight=None, rows=None) -> np.ndarray:
    """Relative residuals between spectra at the best scale, on the pixels both have valid.

    ``R[i, j] = min_a |f_i - a f_j| / |f_i|`` over the pixels where both
    spectra are valid (finite flux, ``weight > 0``); 1 (nothing in common)
    when they share fewer than :data:`MIN_SHARED_PIXELS` pixels.  The best
    scale takes out a spectrum's overall brightness, so what is left is
    the difference in shape.  Dimensionless, in [0, 1].

    Parameters
    ----------
    flux : ndarray (n, n_pixels)
        Spectra on a common grid (a store's ``flux``).
    weight : ndarray (n, n_pixels), optional
        Inverse variance (0: masked).
    rows : array of int, optional
        Only these rows of ``R`` (against every spectrum); default all.

    Returns
    -------
    ndarray (len(rows), n)
        Not symmetric: row ``i`` is relative to ``|f_i|``.
    """
    f, v = _flux_arrays(flux, weight)
    rows = np.arange(len(f)) if rows is None else np.asarray(rows)
    fi, vi = f[rows], v[rows]
    fg = fi @ f.T  # <f_i, f_j> on shared pixels (masked pixels are 0)
    gg_on_f = vi @ (f * f).T  # |f_j|^2 on the pixels of f_i
    ff_on_g = (fi * fi) @ v.T  # |f_i|^2 on the pixels of f_j
    shared = vi @ v.T
    return _residual(fg, gg_on_f, ff_on_g, shared)


def neighbour_resemblance(Z, flux, weight=None, *, per_spectrum: bool = False):
    """How much each spectrum resembles its nearest map neighbour: the median relative residual.

    For every point, its nearest other point in the map ``Z``; the relative
    residual ``min_a |f_i - a f_j| / |f_i|`` between their spectra on the
    pixels both have valid (see :func:`flux_distances`).  Lower is better:
    0 for a neighbour of the very same shape, 1 for one with nothing in
    common.  The reference is the nearest neighbour in flux space itself
    (:func:`flux_distances`' row minimum), which no 2-D map can beat.

    Parameters
    ----------
    Z : ndarray (n, d)
    flux, weight : ndarray (n, n_pixels)
    per_spectrum : bool
        Return every spectrum's residual (n,) instead of the median.
    """
    Z = _points(Z)
    f, v = _flux_arrays(flux, weight)
    if len(f) != len(Z):
        raise AutoencoderError(f"parameters Z and flux: {len(Z)} points and {len(f)} spectra")
    j = neighbours(Z, 1)[:, 0]
    fj, vj = f[j], v[j]
    rel = _residual(
        np.einsum("nt,nt->n", f, fj),
        np.einsum("nt,nt->n", v, fj * fj),
        np.einsum("nt,nt->n", f * f, vj),
        np.einsum("nt,nt->n", v, vj),
    )
    return rel if per_spectrum else float(np.median(rel))


def trust_data(Z, flux, weight=None, k: int = 5, *, distances=None) -> float:
    """Trustworthiness of the map ``Z`` with neighbours in data space (the spectra).

    :func:`sklearn.manifold.trustworthiness` on the symmetrised relative
    residuals of :func:`flux_distances` (``(R + R') / 2``): 1 when every
    point's ``k`` map neighbours are among its ``k`` most similar spectra.
    Pass ``distances`` (n, n) to reuse them across maps.
    """
    from sklearn.manifold import trustworthiness as _tw

    Z = _points(Z)
    if distances is None:
        distances = flux_distances(flux, weight)
    d = np.asarray(distances, dtype="f8")
    if d.shape != (len(Z), len(Z)):
        raise AutoencoderError(f"parameter distances: expected shape ({len(Z)}, {len(Z)}), got {d.shape}")
    if not (isinstance(k, numbers.Integral) and 1 <= k < len(Z) / 2):
        raise AutoencoderError(f"parameter k={k!r}: must be an integer in [1, n/2) for n = {len(Z)}")
    d = 0.5 * (d + d.T)
    np.fill_diagonal(d, 0.0)
    return float(_tw(d, Z, n_neighbors=k, metric="precomputed"))


def knn_regression(Z, values, k: int = 5) -> float:
    """Leave-one-out kNN regression score (R^2) of a numeric column in the map.

    Each point with a finite value is predicted by the mean value of its
    ``k`` nearest other points that have one; the score is
    ``1 - sum (v - v_hat)^2 / sum (v - mean v)^2`` over those points: 1 for
    a perfect prediction, 0 for no better than the mean, negative for worse.
    NaN when fewer than ``k + 2`` points have a value.
    """
    Z = _points(Z)
    v = np.asarray(values, dtype="f8")
    if v.shape != (len(Z),):
        raise AutoencoderError(f"parameter values: {v.shape} for {len(Z)} points")
    ok = np.isfinite(v)
    if ok.sum() < k + 2:
        return float("nan")
    Zo, vo = Z[ok], v[ok]
    pred = vo[neighbours(Zo, k)].mean(axis=1)
    sst = np.sum((vo - vo.mean()) ** 2)
    return float(1.0 - np.sum((vo - pred) ** 2) / sst) if sst > 0 else float("nan")


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
        raise AutoencoderError(f"parameter readouts: shape {w.shape} does not match the statistics {stats.xty.shape}")
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


def score_map(
    Z,
    catalog: pd.DataFrame,
    *,
    labels=("object",),
    numeric=(),
    readouts=None,
    stats=None,
    reconstructed=None,
    flux=None,
    weight=None,
    distances=None,
    ks=(1, 5),
    neighbourhood: int = 5,
    max_trust: int = 2000,
    seed: int = 0,
) -> dict:
    """Every score of one map, as a flat JSON-friendly dictionary.

    Parameters
    ----------
    Z : ndarray (n, d)
        The map.
    catalog : DataFrame
        One row per point, holding the label and numeric columns.
    labels : sequence of str
        Catalog columns to score purity on (``purity_<column>_k<k>``).
    numeric : sequence of str
        Catalog columns to score the kNN regression of (``knn_r2_<column>``,
        k = ``neighbourhood``); columns absent from the catalog are skipped.
    readouts : ndarray (n, N+1), optional
        The stage-1 readouts: ``trust_readouts`` and ``continuity_readouts``
        (in the standardised readouts, the space the ``umap`` map's graph
        is built in), and the reference of the anomaly scores.
    stats : ReadoutStatistics, optional
        With ``reconstructed``, gives ``recon_error`` (mean ``sse/n_steps``),
        ``recon_excess`` (mean anomaly score) and ``stage1_error`` (the floor).
    reconstructed : ndarray (n, N+1), optional
    flux, weight : ndarray (n, n_pixels), optional
        The spectra: ``resemblance`` (:func:`neighbour_resemblance`) and
        ``trust_data`` (:func:`trust_data`, on a random subset of at most
        ``max_trust`` points drawn with ``seed``, unless ``distances`` are
        given for all).
    distances : ndarray (n, n), optional
        :func:`flux_distances` of the spectra, to reuse across maps.
    ks : sequence of int
    neighbourhood : int
        ``k`` of the trustworthiness scores and of the kNN regression.
    """
    Z = _points(Z)
    out: dict = {"n": int(len(Z))}
    for col in labels:
        if col not in catalog:
            raise AutoencoderError(f"parameter labels: the catalog has no column {col!r}")
        for k in ks:
            if k < len(Z):
                out[f"purity_{col}_k{k}"] = knn_purity(Z, catalog[col].to_numpy(), k)
    for col in numeric:
        if col in catalog:
            values = pd.to_numeric(catalog[col], errors="coerce").to_numpy(dtype="f8")
            out[f"knn_r2_{col}"] = knn_regression(Z, values, neighbourhood)
    fits = neighbourhood < len(Z) / 2
    if readouts is not None and fits:
        r = standardised(readouts)
        out["trust_readouts"] = trustworthiness(r, Z, neighbourhood)
        out["continuity_readouts"] = continuity(r, Z, neighbourhood)
    if flux is not None:
        out["resemblance"] = neighbour_resemblance(Z, flux, weight)
        if distances is not None and fits:
            out["trust_data"] = trust_data(Z, flux, weight, neighbourhood, distances=distances)
        elif fits:
            sub = np.arange(len(Z))
            if len(Z) > max_trust:
                sub = np.sort(np.random.default_rng(seed).choice(len(Z), max_trust, replace=False))
            w = None if weight is None else np.asarray(weight)[sub]
            out["trust_data"] = trust_data(Z[sub], np.asarray(flux)[sub], w, neighbourhood)
    if stats is not None and reconstructed is not None:
        out["recon_error"] = float(np.mean(reconstruction_error(stats, reconstructed)))
        if readouts is not None:
            out["stage1_error"] = float(np.mean(reconstruction_error(stats, readouts)))
            out["recon_excess"] = float(np.mean(anomaly_scores(stats, reconstructed, readouts)))
    return out
