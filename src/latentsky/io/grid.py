"""The common log-lambda grid, resampling onto it, and continuum normalisation.

A log-lambda grid has a constant velocity step, so a Doppler shift is a
translation along the grid: the natural input for a time-series model.
"""

from __future__ import annotations

import dataclasses

import astropy.units as u
import numpy as np

from latentsky.exceptions import SpectrumError
from latentsky.io.continuum import polynomial_continuum, running_continuum
from latentsky.io.readers import C_KMS, Spectrum

NORMALISATIONS = ("auto", "median", "continuum", "local", "none")
#: What ingest does unless told otherwise (:func:`resolve_normalisation`).
DEFAULT_NORMALISATION = "auto"
#: Width of the running window of ``local`` normalisation (km/s): the narrowest that holds a line and
#: continuum on both sides at the default grid's 63 km/s (5 pixels; docs/decisions/stage1-cross-format.md).
LOCAL_WINDOW_KMS = 250.0
#: The envelope's percentile of ``local`` normalisation.
LOCAL_PERCENTILE = 80.0


@dataclasses.dataclass(frozen=True)
class LogLambdaGrid:
    """A wavelength grid uniform in ln(lambda).

    Parameters
    ----------
    wave_min, wave_max : float, Angstrom (vacuum)
        Centres of the first and last pixels.
    n_pixels : int
        Number of pixels.
    """

    wave_min: float = 3800.0
    wave_max: float = 9000.0
    n_pixels: int = 4096

    def __post_init__(self):
        if not (0 < self.wave_min < self.wave_max):
            raise ValueError(f"grid: need 0 < wave_min < wave_max, got {self.wave_min}, {self.wave_max} Angstrom")
        if self.n_pixels < 2:
            raise ValueError(f"grid: n_pixels must be at least 2, got {self.n_pixels}")

    @classmethod
    def from_velocity_step(cls, wave_min: float, wave_max: float, step_kms: float) -> "LogLambdaGrid":
        """The grid from ``wave_min`` with pixels ``step_kms`` km/s apart, ending at or just past ``wave_max``."""
        if step_kms <= 0:
            raise ValueError(f"grid: step_kms must be positive, got {step_kms}")
        dln = np.log1p(step_kms / C_KMS)
        n = int(np.ceil(np.log(wave_max / wave_min) / dln)) + 1
        return cls(wave_min, float(wave_min * np.exp(dln * (n - 1))), n)

    @property
    def dln(self) -> float:
        """Step in ln(lambda)."""
        return float(np.log(self.wave_max / self.wave_min) / (self.n_pixels - 1))

    @property
    def velocity_step(self) -> u.Quantity:
        """Pixel size as a velocity (km/s)."""
        return np.expm1(self.dln) * C_KMS * u.km / u.s

    @property
    def wave(self) -> np.ndarray:
        """Pixel centres, Angstrom."""
        return self.wave_min * np.exp(self.dln * np.arange(self.n_pixels))

    @property
    def edges(self) -> np.ndarray:
        """Pixel edges (n_pixels + 1), Angstrom."""
        return self.wave_min * np.exp(self.dln * (np.arange(self.n_pixels + 1) - 0.5))

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _pixel_edges(wave: np.ndarray) -> np.ndarray:
    """Edges around increasing pixel centres (midpoints; half a step beyond each end)."""
    mid = 0.5 * (wave[1:] + wave[:-1])
    return np.concatenate([[wave[0] - (mid[0] - wave[0])], mid, [wave[-1] + (wave[-1] - mid[-1])]])


def resample(
    spectrum: Spectrum, grid: LogLambdaGrid, *, min_coverage: float = 0.5, path: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a spectrum onto ``grid``, conserving flux density.

    Each grid pixel gets the mean of the good input pixels it overlaps, each
    counted by the fraction of it that falls inside; its variance is
    propagated from the inputs.  Echelle orders are resampled one by one and
    their overlaps averaged with inverse-variance weights.  This is done by
    hand (cumulative sums and ``np.interp``) because it has to run on millions
    of spectra without Python loops over pixels; specutils' resamplers loop.

    Parameters
    ----------
    spectrum : Spectrum
        From :func:`latentsky.io.readers.read_spectrum`.
    grid : LogLambdaGrid
        Target grid.
    min_coverage : float
        A grid pixel less than this fraction covered by good input pixels gets weight 0.
    path : str
        Named in the error message.

    Returns
    -------
    flux, ivar : ndarray (grid.n_pixels,)
        ``ivar`` is 0 where the pixel is masked or not covered; ``flux`` is 0 there.

    Raises
    ------
    SpectrumError
        When the spectrum's wavelength range misses the grid.
    """
    wave = spectrum.wave.to_value(u.AA)
    lo, hi = np.nanmin(wave), np.nanmax(wave)
    if hi < grid.edges[0] or lo > grid.edges[-1]:
        raise SpectrumError(
            path or spectrum.meta.get("path", "spectrum"),
            f"wavelength range {lo:.1f}-{hi:.1f} Angstrom misses the grid "
            f"{grid.wave_min:.1f}-{grid.wave_max:.1f} Angstrom",
        )
    out_edges = grid.edges
    sum_f = np.zeros(grid.n_pixels)
    sum_ivar = np.zeros(grid.n_pixels)
    for seg in spectrum.segments:
        f, var_w = _resample_segment(wave[seg], spectrum.flux.value[seg], spectrum.ivar[seg], out_edges, min_coverage)
        sum_f += f * var_w
        sum_ivar += var_w
    flux = np.divide(sum_f, sum_ivar, out=np.zeros_like(sum_f), where=sum_ivar > 0)
    return flux, sum_ivar


def _resample_segment(wave, flux, ivar, out_edges, min_coverage):
    edges = _pixel_edges(wave)
    good = (ivar > 0) & np.isfinite(flux)
    var = np.divide(1.0, ivar, out=np.zeros_like(ivar), where=good)
    zero = np.zeros(1)
    cum_n = np.concatenate([zero, np.cumsum(good)])
    cum_f = np.concatenate([zero, np.cumsum(np.where(good, flux, 0.0))])
    cum_v = np.concatenate([zero, np.cumsum(var)])
    cum_pix = np.arange(len(wave) + 1, dtype="f8")
    # interpolation at the output edges = fractional overlap of every input pixel
    n = np.diff(np.interp(out_edges, edges, cum_n))
    fsum = np.diff(np.interp(out_edges, edges, cum_f))
    vsum = np.diff(np.interp(out_edges, edges, cum_v))
    spanned = np.diff(np.interp(out_edges, edges, cum_pix))
    ok = (n > 0) & (spanned > 0) & (n >= min_coverage * spanned) & (vsum > 0)
    flux_out = np.divide(fsum, n, out=np.zeros_like(fsum), where=ok)
    # variance of a mean of n pixels: sum(var) / n^2
    ivar_out = np.divide(n**2, vsum, out=np.zeros_like(vsum), where=ok)
    return flux_out, ivar_out


def resolve_normalisation(method: str, meta: dict) -> str:
    """The normalisation a spectrum gets: ``method``, or for ``"auto"`` one chosen from the product.

    ``auto`` keeps the continuum of flux-calibrated spectra (``meta["flux_calibrated"]``: SDSS; its
    shape is the source's) and divides it by the median; spectra in relative flux (HARPS s1d and e2ds,
    uncalibrated ESO products) get ``local``: their continuum is the instrument's response times the
    source's, and an e2ds read without its blaze file has none left to compare, so only the lines are
    common to every format of one exposure.
    """
    if method != "auto":
        return method
    return "median" if meta.get("flux_calibrated") else "local"


def normalise(
    flux: np.ndarray,
    ivar: np.ndarray,
    method: str,
    *,
    path: str = "",
    degree: int = 5,
    grid: LogLambdaGrid | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Divide a resampled spectrum by its continuum.

    Parameters
    ----------
    flux, ivar : ndarray
        On the grid, ``ivar`` 0 where masked.
    method : {"median", "continuum", "local", "none"}
        ``median``: divide by the median of the good pixels (keeps the shape of
        the continuum, removes the flux scale); ``continuum``: divide by a
        Legendre polynomial of ``degree`` fitted to the good pixels with
        iterative clipping of absorption lines (removes the continuum shape too);
        ``local``: divide by a running upper envelope (the
        :data:`LOCAL_PERCENTILE` percentile over :data:`LOCAL_WINDOW_KMS`,
        smoothed over as much; removes every feature wider than that window,
        keeps the line pattern); ``none``: leave as is.  ``"auto"`` must be resolved
        first (:func:`resolve_normalisation`).
    grid : LogLambdaGrid, optional
        The grid ``flux`` is on (sizes the ``local`` window; default 31 pixels).

    Returns
    -------
    flux, ivar : ndarray
        Normalised flux and its inverse variance.
    """
    if method not in NORMALISATIONS or method == "auto":
        raise ValueError(
            f"normalisation must be one of {NORMALISATIONS[1:]}, got {method!r}"
            + (" (resolve 'auto' with resolve_normalisation)" if method == "auto" else "")
        )
    good = ivar > 0
    if method == "none":
        return flux, ivar
    if method == "median":
        scale = np.full_like(flux, np.median(flux[good]))
    elif method == "continuum":
        scale = polynomial_continuum(flux, good, degree)
    else:
        window = 31 if grid is None else max(3, int(round(LOCAL_WINDOW_KMS / grid.velocity_step.value)) | 1)
        scale = running_continuum(flux, good, window, percentile=LOCAL_PERCENTILE)
        good &= scale > 0  # flux at the noise level around zero: no continuum to divide by
        if not good.any():
            raise SpectrumError(
                path or "spectrum",
                "local normalisation failed: the continuum is nowhere positive (flux too faint or negative)",
            )
    if not np.all(np.isfinite(scale[good])) or np.any(scale[good] <= 0):
        raise SpectrumError(
            path or "spectrum",
            f"{method} normalisation failed: the continuum is not positive (flux too faint or negative)",
        )
    safe = np.where(good, scale, 1.0)
    return np.where(good, flux / safe, 0.0), np.where(good, ivar * safe**2, 0.0)
