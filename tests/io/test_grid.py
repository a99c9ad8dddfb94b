"""The log-lambda grid, flux-conserving resampling and normalisation."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest

from latentsky.exceptions import SpectrumError
from latentsky.io.grid import LogLambdaGrid, normalise, resample
from latentsky.io.readers import Spectrum


def _spectrum(wave, flux, ivar=None):
    return Spectrum(
        np.asarray(wave) * u.AA,
        np.asarray(flux) * u.dimensionless_unscaled,
        np.ones(len(wave)) if ivar is None else np.asarray(ivar),
        {},
    )


def test_grid_has_a_constant_velocity_step():
    grid = LogLambdaGrid(4000.0, 8000.0, 1001)
    wave = grid.wave
    assert wave[0] == pytest.approx(4000.0) and wave[-1] == pytest.approx(8000.0)
    ratio = wave[1:] / wave[:-1]
    np.testing.assert_allclose(ratio, ratio[0])
    assert grid.velocity_step.to_value(u.km / u.s) == pytest.approx((ratio[0] - 1) * 299792.458)
    edges = grid.edges
    assert np.all((edges[:-1] < wave) & (wave < edges[1:]))


def test_grid_from_velocity_step():
    grid = LogLambdaGrid.from_velocity_step(5000.0, 6000.0, 10.0)
    assert grid.velocity_step.to_value(u.km / u.s) == pytest.approx(10.0, rel=1e-9)
    assert grid.wave_max >= 6000.0


@pytest.mark.parametrize("kwargs", [dict(wave_min=5000, wave_max=4000), dict(n_pixels=1), dict(wave_min=-1)])
def test_impossible_grids_are_refused_naming_the_parameter(kwargs):
    with pytest.raises(ValueError, match="grid"):
        LogLambdaGrid(**kwargs)


def test_resampling_conserves_flux_of_a_line():
    wave = np.arange(5000.0, 6000.0, 0.01)
    flux = 1 + 5 * np.exp(-0.5 * ((wave - 5500) / 0.3) ** 2)
    grid = LogLambdaGrid(5100.0, 5900.0, 2000)
    out, ivar = resample(_spectrum(wave, flux), grid)
    assert np.all(ivar > 0)
    dwave = np.diff(grid.edges)
    line_in = np.sum((flux - 1)[(wave > 5490) & (wave < 5510)]) * 0.01
    sel = (grid.wave > 5490) & (grid.wave < 5510)
    assert np.sum((out - 1)[sel] * dwave[sel]) == pytest.approx(line_in, rel=0.01)
    # the noise of a mean of ~n pixels drops as 1/n: ivar grows with the number of input pixels
    n_per_pixel = dwave / 0.01
    np.testing.assert_allclose(ivar, n_per_pixel, rtol=0.02)


def test_masked_pixels_and_off_coverage_get_zero_weight():
    wave = np.arange(5000.0, 6000.0, 0.5)
    flux = np.ones_like(wave)
    ivar = np.ones_like(wave)
    ivar[(wave > 5400) & (wave < 5500)] = 0
    grid = LogLambdaGrid(4500.0, 6500.0, 1000)
    out, w = resample(_spectrum(wave, flux, ivar), grid)
    assert np.all(w[(grid.wave > 5405) & (grid.wave < 5495)] == 0)
    assert np.all(w[grid.wave < 4990] == 0) and np.all(w[grid.wave > 6010] == 0)
    good = w > 0
    np.testing.assert_allclose(out[good], 1.0)


def test_range_that_misses_the_grid_is_an_error_naming_the_file():
    spec = _spectrum(np.arange(5000.0, 6000.0, 1.0), np.ones(1000))
    with pytest.raises(SpectrumError, match="misses the grid") as info:
        resample(spec, LogLambdaGrid(7000.0, 9000.0, 100), path="spec-x.fits")
    assert "spec-x.fits" in str(info.value)


def test_normalisations():
    rng = np.random.default_rng(1)
    x = np.linspace(0, 1, 2000)
    continuum = 100 * (1 + 0.5 * x)
    flux = continuum * (1 - 0.6 * np.exp(-0.5 * ((x - 0.5) / 0.005) ** 2)) + rng.normal(0, 0.5, x.size)
    ivar = np.full_like(x, 4.0)
    med, med_ivar = normalise(flux, ivar, "median")
    assert np.median(med) == pytest.approx(1.0)
    np.testing.assert_allclose(med_ivar, ivar * np.median(flux) ** 2)
    cont, _ = normalise(flux, ivar, "continuum")
    away = np.abs(x - 0.5) > 0.05
    assert np.median(np.abs(cont[away] - 1)) < 0.01  # the slope is gone
    assert cont[np.argmin(np.abs(x - 0.5))] == pytest.approx(0.4, abs=0.03)  # the line stays
    same, _ = normalise(flux, ivar, "none")
    np.testing.assert_array_equal(same, flux)
    with pytest.raises(ValueError, match="normalisation"):
        normalise(flux, ivar, "spline")
