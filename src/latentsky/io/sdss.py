"""Readers of SDSS spectra: DR8+ ``spec-PLATE-MJD-FIBER`` tables and DR7 ``spSpec`` images, with the SDSS
pixel mask bits that make a pixel unusable.

The formats are described in :mod:`latentsky.io.readers`; :func:`~latentsky.io.readers.read_spectrum` chooses the
reader from the header.
"""

from __future__ import annotations

import re

import astropy.units as u
import numpy as np
from astropy.io import fits

from latentsky.io.spectrum import Spectrum

FLAM_SDSS = u.Unit("1e-17 erg / (s cm2 Angstrom)")  # SDSS flux density unit


def _sdss_object_name(ra: float, dec: float) -> str:
    from astropy.coordinates import SkyCoord

    c = SkyCoord(ra * u.deg, dec * u.deg)
    return (
        "SDSS J"
        + c.ra.to_string(u.hourangle, sep="", precision=2, pad=True)
        + c.dec.to_string(sep="", precision=1, alwayssign=True, pad=True)
    )


_TFORM_BYTES = {"L": 1, "B": 1, "I": 2, "J": 4, "K": 8, "A": 1, "E": 4, "D": 8, "C": 8, "M": 16, "P": 8, "Q": 16}
_TFORM_DTYPE = {"L": "i1", "B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8"}


def _first_row_fields(hdul, index: int, raw: bytes, names: set[str]) -> dict:
    """A few fields (upper-case ``names``) of the first row of a binary table, read straight from the file's bytes.

    Written by hand because astropy builds a Column object for every column
    before it gives one value, and SDSS SPECOBJ/SPALL tables have 126-232
    columns: 20-30 ms per file, more than the rest of ingest.  Only the
    fixed-width scalar and string columns we need are decoded.
    """
    header = hdul[index].header
    offset = hdul.fileinfo(index)["datLoc"]
    pos, out = 0, {}
    for i in range(1, header["TFIELDS"] + 1):
        repeat, code = re.fullmatch(r"(\d*)([A-Z])(.*)", header[f"TFORM{i}"].strip()).group(1, 2)
        repeat = int(repeat or 1)
        width = (repeat + 7) // 8 if code == "X" else repeat * _TFORM_BYTES[code]
        name = header[f"TTYPE{i}"].strip().upper()
        if name in names and (code == "A" or (repeat == 1 and code in _TFORM_DTYPE)):
            chunk = raw[offset + pos : offset + pos + width]
            out[name] = (
                chunk.decode("ascii", "replace").strip("\x00 ")
                if code == "A"
                else np.frombuffer(chunk, _TFORM_DTYPE[code])[0].item()
            )
        pos += width
    return out


#: SDSS spectroscopic pixel mask bits (``SPPIXMASK`` in idlutils' ``sdssMaskbits.par``, the SDSS
#: "Bitmasks" documentation): 0-15 describe the fibre, 16-31 the pixel.
SPPIXMASK = {
    "NOPLUG": 0,
    "BADTRACE": 1,
    "BADFLAT": 2,
    "BADARC": 3,
    "MANYBADCOLUMNS": 4,
    "MANYREJECTED": 5,
    "LARGESHIFT": 6,
    "BADSKYFIBER": 7,
    "NEARWHOPPER": 8,
    "WHOPPER": 9,
    "SMEARIMAGE": 10,
    "SMEARHIGHSN": 11,
    "SMEARMEDSN": 12,
    "NEARBADPIXEL": 16,
    "LOWFLAT": 17,
    "FULLREJECT": 18,
    "PARTIALREJECT": 19,
    "SCATTEREDLIGHT": 20,
    "CROSSTALK": 21,
    "NOSKY": 22,
    "BRIGHTSKY": 23,
    "NODATA": 24,
    "COMBINEREJ": 25,
    "BADFLUXFACTOR": 26,
    "BADSKYCHI": 27,
    "REDMONSTER": 28,
}
#: The bits of a coadd's AND mask (set in every exposure) after which a pixel is not the object's
#: flux: no fibre or no trace or arc solution; rejected or without data or sky model (ivar is 0 there
#: anyway); or sky-dominated (BRIGHTSKY: sky > flux + 10 sigma, its flux is sky-subtraction
#: residual).  The other bits are warnings that ivar already weighs (BADFLAT, LOWFLAT: fewer
#: counts, larger errors); SDSS's advice is to take ivar as the weight.
SDSS_UNUSABLE_BITS = ("NOPLUG", "BADTRACE", "BADARC", "FULLREJECT", "NOSKY", "BRIGHTSKY", "NODATA", "COMBINEREJ")
SDSS_UNUSABLE_MASK = sum(1 << SPPIXMASK[name] for name in SDSS_UNUSABLE_BITS)


def sdss_unusable(mask) -> np.ndarray:
    """True where an SDSS pixel mask (``and_mask``, or a DR7 spSpec mask row) has an unusable bit."""
    return (np.asarray(mask).astype("i8") & SDSS_UNUSABLE_MASK) != 0


def _read_sdss_spec(hdul, path, raw: bytes) -> Spectrum:
    header = hdul[0].header
    coadd = next(
        h
        for h in hdul[1:]
        if isinstance(h, fits.BinTableHDU) and {"loglam", "flux", "ivar"} <= {n.lower() for n in h.columns.names}
    )
    names = {n.lower(): n for n in coadd.columns.names}
    wave = 10 ** np.asarray(coadd.data[names["loglam"]], dtype="f8")
    flux = np.asarray(coadd.data[names["flux"]], dtype="f8")
    ivar = np.asarray(coadd.data[names["ivar"]], dtype="f8")
    if "and_mask" in names:
        ivar = np.where(sdss_unusable(coadd.data[names["and_mask"]]), 0.0, ivar)
    spec_class, z, snr = "", np.nan, np.nan
    ra, dec = header.get("PLUG_RA", np.nan), header.get("PLUG_DEC", np.nan)
    for index, hdu in enumerate(hdul[2:], start=2):
        # the catalogue row: SPECOBJ (SDSS-I/II), SPALL (BOSS); DR16 files written by MWRFITS name
        # no extension, so it is also recognised by its columns
        if isinstance(hdu, fits.BinTableHDU) and (
            hdu.name in ("SPECOBJ", "SPALL") or {"CLASS", "Z"} <= {n.upper() for n in hdu.columns.names}
        ):
            row = _first_row_fields(hdul, index, raw, {"CLASS", "Z", "SN_MEDIAN_ALL", "PLUG_RA", "PLUG_DEC"})
            spec_class = row.get("CLASS", "")
            z = float(row.get("Z", np.nan))
            snr = float(row.get("SN_MEDIAN_ALL", np.nan))
            ra, dec = float(row.get("PLUG_RA", ra)), float(row.get("PLUG_DEC", dec))
            break
    meta = {
        "instrument": "BOSS" if header.get("MJD", 0) >= 55000 else "SDSS",
        "object": _sdss_object_name(ra, dec),
        "ra": float(ra),
        "dec": float(dec),
        "mjd": float(header.get("MJD", np.nan)),
        "exptime": float(header.get("EXPTIME", np.nan)),
        "snr": snr,
        "spec_class": spec_class,
        "redshift": z,
        "plate": int(header.get("PLATEID", -1)),
        "fiber": int(header.get("FIBERID", -1)),
        "format": "sdss_spec",
        "flux_calibrated": True,
    }
    return Spectrum(wave * u.AA, flux * FLAM_SDSS, ivar, meta)


_SPEC_CLN = {0: "UNKNOWN", 1: "STAR", 2: "GALAXY", 3: "QSO", 4: "QSO", 5: "SKY", 6: "STAR"}


def _read_sdss_spspec(hdul, path) -> Spectrum:
    header = hdul[0].header
    data = np.asarray(hdul[0].data, dtype="f8")
    n_pix = data.shape[1]
    wave = 10 ** (header["COEFF0"] + header["COEFF1"] * np.arange(n_pix))
    flux, err = data[0], data[2]
    good = np.isfinite(err) & (err > 0)
    if data.shape[0] > 3:  # the pixel mask row: SPPIXMASK bits, as the spec files' and_mask
        good &= ~sdss_unusable(data[3])
    ivar = np.zeros_like(flux)
    ivar[good] = 1.0 / err[good] ** 2
    ra = float(header.get("RAOBJ", header.get("RA", np.nan)))
    dec = float(header.get("DECOBJ", header.get("DEC", np.nan)))
    sn = [header.get(k) for k in ("SN_G", "SN_R", "SN_I") if header.get(k) is not None]
    meta = {
        "instrument": "SDSS",
        "object": _sdss_object_name(ra, dec),
        "ra": ra,
        "dec": dec,
        "mjd": float(header.get("MJD", np.nan)),
        "exptime": float(header.get("EXPTIME", np.nan)),
        "snr": float(np.median(sn)) if sn else np.nan,
        "spec_class": _SPEC_CLN.get(int(header.get("SPEC_CLN", 0)), "UNKNOWN"),
        "redshift": float(header.get("Z", np.nan)),
        "plate": int(header.get("PLATEID", -1)),
        "fiber": int(header.get("FIBERID", -1)),
        "format": "sdss_spspec",
        "flux_calibrated": True,
    }
    return Spectrum(wave * u.AA, flux * FLAM_SDSS, ivar, meta)
