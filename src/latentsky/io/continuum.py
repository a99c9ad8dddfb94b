"""Continuum estimates: a clipped polynomial, and a running upper envelope.

Both follow the top of a spectrum and ignore its absorption lines: the
polynomial by iteratively leaving out pixels more than 1 sigma below (and 3
sigma above) the fit, the running envelope by taking a high percentile of the
flux in a sliding window (an absorption line is narrower than the window, so
the percentile sits on the continuum beside it) and smoothing that.  Written
here because astropy has no continuum fitter and specutils' fitters model one
spectrum at a time with astropy.modeling (slow for stores of millions, and a
large dependency for two functions).
"""

from __future__ import annotations

import numpy as np

#: Clipping of the polynomial fit: pixels this many sigma below / above the fit are left out.
CLIP_LOW, CLIP_HIGH = 1.0, 3.0


def polynomial_continuum(
    flux: np.ndarray, good: np.ndarray, degree: int, *, iterations: int = 5, kind: str = "legendre"
) -> np.ndarray:
    """A polynomial of ``degree`` in the pixel index fitted to the ``good`` pixels with clipping.

    Parameters
    ----------
    flux : ndarray (n,)
    good : ndarray (n,) bool
        Pixels that may enter the fit.
    degree : int
    iterations : int
        Fit-and-clip rounds.
    kind : {"legendre", "chebyshev"}
        The polynomial basis, on the pixel index mapped to [-1, 1].

    Returns
    -------
    ndarray (n,)
        The fitted continuum at every pixel (NaN when fewer than ``degree + 2`` good pixels).
    """
    fit, value = {
        "legendre": (np.polynomial.legendre.legfit, np.polynomial.legendre.legval),
        "chebyshev": (np.polynomial.chebyshev.chebfit, np.polynomial.chebyshev.chebval),
    }[kind]
    x = np.linspace(-1.0, 1.0, flux.size)
    keep = good & np.isfinite(flux)
    scale = np.full(flux.size, np.nan)
    for _ in range(iterations):
        if keep.sum() <= degree + 1:
            break
        scale = value(x, fit(x[keep], flux[keep], degree))
        resid = flux - scale
        sigma = np.std(resid[keep])
        keep = good & np.isfinite(flux) & (resid > -CLIP_LOW * sigma) & (resid < CLIP_HIGH * sigma)
    return scale


def running_continuum(flux: np.ndarray, good: np.ndarray, window: int, *, percentile: float = 90.0) -> np.ndarray:
    """The running ``percentile`` of the good pixels in a ``window``-pixel window, boxcar-smoothed over ``window``.

    Masked pixels are first filled by linear interpolation between their good
    neighbours (so they neither pull the envelope down nor leave holes).

    Returns
    -------
    ndarray (n,)
        The continuum at every pixel (NaN when there is no good pixel).
    """
    from scipy.ndimage import percentile_filter, uniform_filter1d

    ok = good & np.isfinite(flux)
    if not ok.any():
        return np.full(flux.size, np.nan)
    idx = np.arange(flux.size)
    filled = np.interp(idx, idx[ok], flux[ok])
    envelope = percentile_filter(filled, percentile, size=int(window), mode="nearest")
    return uniform_filter1d(envelope, int(window), mode="nearest")
