"""The spectrum every reader returns (:class:`Spectrum`, vacuum wavelengths) and the air-to-vacuum conversion."""

from __future__ import annotations

import dataclasses

import astropy.units as u
import numpy as np

C_KMS = 299792.458
"""The speed of light, km/s."""


@dataclasses.dataclass
class Spectrum:
    """A 1-D spectrum as read from a file.

    Attributes
    ----------
    wave : Quantity, Angstrom
        Vacuum wavelength of each pixel, strictly increasing (orders of an
        echelle spectrum are concatenated and may overlap: see ``segments``).
    flux : Quantity
        Flux density in the product's unit (dimensionless for relative flux).
    ivar : ndarray
        Inverse variance of ``flux`` (in 1/flux-unit**2); 0 marks a bad pixel.
    meta : dict
        Catalog fields: instrument, object, ra, dec (deg), mjd, exptime (s),
        snr, spec_class, redshift, format.
    segments : list of slice
        Pieces with increasing wavelength each (one per echelle order; one
        slice for a 1-D product).
    """

    wave: u.Quantity
    flux: u.Quantity
    ivar: np.ndarray
    meta: dict
    segments: list = dataclasses.field(default_factory=list)

    def __post_init__(self):
        if not self.segments:
            self.segments = [slice(0, len(self.wave))]


def air_to_vacuum(wave_air: np.ndarray) -> np.ndarray:
    """Convert air wavelengths (Angstrom) to vacuum (Angstrom).

    The IAU standard (Morton 2000, ApJS 130, 403), as used by SDSS and VALD;
    written out because astropy has no air/vacuum conversion and specutils'
    would pull a large dependency tree for four lines.
    """
    sigma2 = (1e4 / np.asarray(wave_air, dtype="f8")) ** 2
    n = 1 + 8.34254e-5 + 2.406147e-2 / (130 - sigma2) + 1.5998e-4 / (38.9 - sigma2)
    return wave_air * n
