"""A Doppler shift moves a spectrum along the log-lambda grid: its embedding must stay
much closer to the unshifted one than to any other star's.

The shifted copies are made from the original HARPS s1d pixels (wavelengths
times 1 + v/c) and resampled like ingest does, so the test sees a real shift,
not an interpolated translation of the resampled series.
"""

import logging

import numpy as np
import pytest

from latentsky.embed import ESNReadoutEmbedder
from latentsky.io.grid import LogLambdaGrid, normalise, resample
from latentsky.io.readers import C_KMS, read_spectrum

HARPS_GRID = LogLambdaGrid(5000.0, 5290.0, 4096)  # as in conftest.py

log = logging.getLogger(__name__)

SHIFTS_KMS = (5.0, 15.0, 30.0)
OTHER_STARS = [
    "HARPS.2003-12-13T06_19_48.371_s1d_A.fits.gz",  # Gl 273, M3.5V
    "HARPS.2010-09-18T23_42_36.178_s1d_A.fits.gz",
]  # Gl 581, M3V
SDSS_STARS = [
    "spec-0618-52049-0372",
    "spec-1123-52882-0065",
    "spec-4068-55445-0924",
    "spec-4961-55719-0378",
    "spec-5047-55833-0936",
    "spec-7332-56683-0788",
    "spec-7454-56751-0770",
]  # M1 M4 A9 F3 M1 G8 K0


def on_grid(spectrum, shift_kms=0.0):
    spectrum.wave = spectrum.wave * (1.0 + shift_kms / C_KMS)
    flux, ivar = resample(spectrum, HARPS_GRID)
    return normalise(flux, ivar, "median")


@pytest.fixture(scope="module")
def shifted_and_others(sample):
    base_file = sample / "harps" / "HARPS.2012-03-24T08_37_45.581_s1d_A.fits.gz"  # alpha Cen B, K1V
    rows = [on_grid(read_spectrum(base_file), v) for v in (0.0,) + SHIFTS_KMS]
    others = [on_grid(read_spectrum(sample / "harps" / name)) for name in OTHER_STARS]
    others += [on_grid(read_spectrum(sample / "sdss" / f"{name}.fits.gz")) for name in SDSS_STARS]
    flux = np.array([f for f, _ in rows + others])
    weight = np.array([w for _, w in rows + others])
    return flux, weight


def ratios_of(d):
    """Nearest other star's distance over each shifted copy's distance."""
    d_shift, d_other = d[1:4], d[4:]
    return d_other.min() / d_shift


def test_doppler_shift_in_readout_space(shifted_and_others):
    """Euclidean distance between readouts.

    With the default ridge (1e-2) the readouts keep large components along
    directions that X^T X hardly constrains (eigenvalues ~1e-9 of the largest),
    which swing with any change of the data: the ratios are then only ~1.2-1.7.
    A ridge that damps those directions (100 here, ~0.02 per step) gives an
    embedding whose Euclidean geometry is Doppler-robust; stage 2 should use
    such a ridge or the data-space metric of the next test.
    """
    flux, weight = shifted_and_others
    w = ESNReadoutEmbedder(backend="numpy", ridge=100.0).fit(flux, weight=weight).transform(flux, weight)
    d = np.linalg.norm(w - w[0], axis=1)
    r = ratios_of(d)
    default = ESNReadoutEmbedder(backend="numpy").fit(flux, weight=weight).transform(flux, weight)
    r_default = ratios_of(np.linalg.norm(default - default[0], axis=1))
    log.info("readout space: ratios %s at ridge 100, %s at ridge 1e-2", r, r_default)
    print(
        f"\nDoppler {SHIFTS_KMS} km/s, nearest other star / shifted copy, Euclidean readout distance: "
        f"ridge 100 {np.round(r, 1).tolist()}, ridge 1e-2 {np.round(r_default, 2).tolist()}"
    )
    assert r.min() > 5.0, r


def test_doppler_shift_in_data_space(shifted_and_others):
    """Distance as stage 2's model-coupled loss sees it, at the default ridge:
    how differently two readouts predict the unshifted spectrum,
    ``sqrt((w_a - w_b)' X'X (w_a - w_b) / n)`` with the unshifted spectrum's X."""
    flux, weight = shifted_and_others
    emb = ESNReadoutEmbedder(backend="numpy").fit(flux, weight=weight)
    st = emb.statistics(flux, weight)
    w = st.readouts(emb.ridge_)
    dw = w - w[0]
    d = np.sqrt(np.einsum("ni,ij,nj->n", dw, st.gram[0], dw) / st.n_steps[0])
    r = ratios_of(d)
    log.info("data space: distances %s, ratios %s", d, r)
    print(
        f"\nDoppler {SHIFTS_KMS} km/s, nearest other star / shifted copy, data-space distance "
        f"(ridge 1e-2): {np.round(r, 1).tolist()}"
    )
    assert r.min() > 3.0, r
