"""Readers of ESO products: HARPS DRS s1d and e2ds (blaze-corrected or order-normalised), ESO Phase-3 1-D spectra.

The formats are described in :mod:`latentsky.io.readers`; :func:`~latentsky.io.readers.read_spectrum` chooses the
reader from the header.
"""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits

from latentsky.exceptions import SpectrumError
from latentsky.io.continuum import polynomial_continuum
from latentsky.io.spectrum import C_KMS, Spectrum, air_to_vacuum

#: Degree of the per-order continuum (Chebyshev, over an order's pixels) of an e2ds read without its blaze.
E2DS_ORDER_DEGREE = 4
#: Order pixels whose blaze is below this fraction of the order's peak are dropped (the order edges).
BLAZE_FLOOR = 0.05
#: The same for the per-order continuum of an e2ds read without its blaze: the polynomial is least
#: certain where the blaze falls off, and the neighbouring orders cover most of those wavelengths
#: (docs/decisions/stage1-cross-format.md).
ORDER_CONTINUUM_FLOOR = 0.5


def _harps_meta(header, fmt: str) -> dict:
    snr = header.get("ESO DRS SPE EXT SN50")
    return {
        "instrument": str(header.get("INSTRUME", "HARPS")),
        "object": str(header.get("OBJECT", "")).strip(),
        "ra": float(header.get("RA", np.nan)),
        "dec": float(header.get("DEC", np.nan)),
        "mjd": float(header.get("MJD-OBS", np.nan)),
        "exptime": float(header.get("EXPTIME", np.nan)),
        "snr": float(snr) if snr is not None else np.nan,
        "spec_class": "STAR",
        "redshift": np.nan,
        "format": fmt,
        "flux_calibrated": False,
    }


def _poisson_ivar(counts: np.ndarray) -> np.ndarray:
    ivar = np.zeros_like(counts, dtype="f8")
    good = np.isfinite(counts) & (counts > 0)
    ivar[good] = 1.0 / counts[good]
    return ivar


def _read_harps_s1d(hdul, path) -> Spectrum:
    header = hdul[0].header
    flux = np.asarray(hdul[0].data, dtype="f8")
    pix = np.arange(flux.size) + 1 - header.get("CRPIX1", 1.0)
    wave_air = header["CRVAL1"] + header["CDELT1"] * pix
    return Spectrum(
        air_to_vacuum(wave_air) * u.AA,
        flux * u.dimensionless_unscaled,
        _poisson_ivar(flux),
        _harps_meta(header, "harps_s1d"),
    )


def harps_e2ds_wavelength(header) -> np.ndarray:
    """Air wavelength (Angstrom) of every e2ds pixel, shape (orders, pixels), from the header polynomials."""
    deg = int(header["ESO DRS CAL TH DEG LL"])
    n_orders, n_pix = header["NAXIS2"], header["NAXIS1"]
    coeff = np.array(
        [
            [header[f"ESO DRS CAL TH COEFF LL{i + order * (deg + 1)}"] for i in range(deg + 1)]
            for order in range(n_orders)
        ]
    )
    x = np.arange(n_pix, dtype="f8")
    return np.stack([np.polynomial.polynomial.polyval(x, c) for c in coeff])


def _read_harps_e2ds(hdul, path, blaze=None) -> Spectrum:
    header = hdul[0].header
    counts = np.asarray(hdul[0].data, dtype="f8")
    wave_air = harps_e2ds_wavelength(header)
    berv = float(header.get("ESO DRS BERV", 0.0))
    # e2ds wavelengths are in the observatory frame; s1d products are barycentric
    wave_air = wave_air * (1 + berv / C_KMS)
    ivar = _poisson_ivar(counts)
    meta = _harps_meta(header, "harps_e2ds")
    blaze_path = Path(blaze) if blaze else _find_blaze(header, Path(path))
    if blaze_path is not None:
        with fits.open(blaze_path, memmap=False) as bl:
            blaze_data = np.asarray(bl[0].data, dtype="f8")
        if blaze_data.shape != counts.shape:
            raise SpectrumError(
                path, f"blaze file {blaze_path} has shape {blaze_data.shape}, not the e2ds shape {counts.shape}"
            )
        meta["blaze_corrected"] = True
        meta["blaze_file"] = str(blaze_path)
    else:
        # no blaze file: each order's own continuum (blaze x source continuum) takes the blaze out
        blaze_data = np.stack(
            [
                polynomial_continuum(row, w > 0, E2DS_ORDER_DEGREE, kind="chebyshev", iterations=6)
                for row, w in zip(counts, ivar)
            ]
        )
        blaze_data = np.nan_to_num(blaze_data, nan=0.0)
        meta["blaze_corrected"] = False
        meta["orders_continuum_normalised"] = True
    floor = BLAZE_FLOOR if meta["blaze_corrected"] else ORDER_CONTINUUM_FLOOR
    ok = blaze_data > floor * np.nanmax(blaze_data, axis=1, keepdims=True)  # drop the order edges
    flux = np.where(ok, counts / np.where(ok, blaze_data, 1), 0.0)
    ivar = np.where(ok, ivar * blaze_data**2, 0.0)
    n_orders, n_pix = counts.shape
    segments = [slice(o * n_pix, (o + 1) * n_pix) for o in range(n_orders)]
    return Spectrum(
        air_to_vacuum(wave_air.ravel()) * u.AA, flux.ravel() * u.dimensionless_unscaled, ivar.ravel(), meta, segments
    )


def _find_blaze(header, path: Path) -> Path | None:
    name = header.get("ESO DRS BLAZE FILE")
    if not name:
        return None
    # archive file names carry ':' that are often replaced by '_' on disk
    for candidate in (name, name.replace(":", "_")):
        for suffix in ("", ".gz"):
            p = path.with_name(candidate + suffix)
            if p.exists():
                return p
    return None


def _read_eso_phase3(hdul, path) -> Spectrum:
    header = hdul[0].header
    table = next(
        h
        for h in hdul[1:]
        if isinstance(h, fits.BinTableHDU) and {"WAVE", "FLUX"} <= {n.upper() for n in h.columns.names}
    )
    names = {n.upper(): n for n in table.columns.names}
    row = table.data[0]
    wave = np.asarray(row[names["WAVE"]], dtype="f8").ravel()
    flux = np.asarray(row[names["FLUX"]], dtype="f8").ravel()
    err = np.asarray(row[names["ERR"]], dtype="f8").ravel() if "ERR" in names else None
    wave_unit = u.Unit(table.columns[names["WAVE"]].unit or "Angstrom", parse_strict="silent")
    if not isinstance(wave_unit, u.UnitBase) or wave_unit.physical_type != "length":
        wave_unit = u.AA
    wave = (wave * wave_unit).to_value(u.AA)
    ivar = np.zeros_like(flux)
    if err is not None:
        good = np.isfinite(err) & (err > 0)
        ivar[good] = 1.0 / err[good] ** 2
    else:
        ivar = np.where(np.isfinite(flux), 1.0, 0.0)
    flux_unit = u.Unit(table.columns[names["FLUX"]].unit or "", parse_strict="silent")
    if not isinstance(flux_unit, u.UnitBase) or isinstance(flux_unit, u.UnrecognizedUnit):
        flux_unit = u.dimensionless_unscaled
    # ESO products say so in SPECSYS/AIRORVAC when they can; HARPS ADP spectra are in air
    in_air = str(header.get("AIRORVAC", table.header.get("AIRORVAC", "air"))).lower().startswith("air")
    if in_air:
        wave = air_to_vacuum(wave)
    snr = header.get("SNR")
    meta = {
        "instrument": str(header.get("INSTRUME", "")),
        "object": str(header.get("OBJECT", "")).strip(),
        "ra": float(header.get("RA", np.nan)),
        "dec": float(header.get("DEC", np.nan)),
        "mjd": float(header.get("MJD-OBS", np.nan)),
        "exptime": float(header.get("EXPTIME", header.get("TEXPTIME", np.nan))),
        "snr": float(snr) if snr is not None else np.nan,
        "spec_class": "STAR" if str(header.get("INSTRUME", "")).upper().startswith("HARPS") else "",
        "redshift": np.nan,
        "format": "eso_phase3",
        # ESO science data products say FLUXCAL = 'ABSOLUTE' or 'UNCALIBRATED'
        "flux_calibrated": str(header.get("FLUXCAL", table.header.get("FLUXCAL", ""))).strip().upper() == "ABSOLUTE",
    }
    return Spectrum(wave * u.AA, flux * flux_unit, ivar, meta)
