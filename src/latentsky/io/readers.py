"""FITS spectrum readers: ESO Phase-3, HARPS DRS (s1d, e2ds) and SDSS (spec, spSpec).

:func:`read_spectrum` opens a file, chooses the reader from the file's
*header* (never its name; the readers are in :mod:`latentsky.io.eso` and
:mod:`latentsky.io.sdss`) and returns a :class:`Spectrum` in vacuum
wavelengths.  Every failure is a :class:`~latentsky.exceptions.SpectrumError`
that names the file and says what is wrong.

Formats
-------
ESO Phase-3 1-D spectrum (``ADP.*.fits``)
    A binary-table extension with one row holding array columns WAVE, FLUX and
    ERR (ESO Science Data Products standard); the air/vacuum convention comes
    from the header (``SPEC_VAL``/``TTYPE`` comments rarely say; HARPS ADP
    products are in air, as the DRS s1d).
HARPS DRS ``*_s1d_A.fits``
    Primary float32 array on a linear air-wavelength grid CRVAL1 + CDELT1 * i
    (Angstrom), barycentric, blaze-corrected, relative flux.
HARPS DRS ``*_e2ds_A.fits``
    72 orders x 4096 pixels; order *o*'s air wavelength at pixel *x* is
    sum_i c[i + o*(deg+1)] x**i with the coefficients in
    ``HIERARCH ESO DRS CAL TH COEFF LLn``.  In the observatory frame, so the
    reader applies the barycentric correction ``ESO DRS BERV`` (km/s) to match
    the s1d product.  Flux is divided by the blaze when the blaze file named in
    ``ESO DRS BLAZE FILE`` lies beside the e2ds (or is given); without it (as
    e2ds files usually travel) each order is divided by its own continuum, a
    clipped polynomial that follows the blaze times the source's continuum
    across the order, so the orders come out continuum-normalised.  The orders
    are merged by the resampler (overlaps are averaged with weights).
SDSS ``spec-PLATE-MJD-FIBER.fits`` (DR8+, full or lite)
    COADD table with loglam (log10 vacuum Angstrom), flux (1e-17 erg/s/cm2/A)
    and ivar; class and redshift from the SPECOBJ (or SPALL) table.
SDSS DR7 ``spSpec-MJD-PLATE-FIBER.fit``
    Primary image rows (flux, continuum-subtracted flux, error, mask, ...),
    vacuum wavelength 10**(COEFF0 + COEFF1 * i); class from SPEC_CLN, Z.

Noise: when a product carries no uncertainty (HARPS s1d/e2ds) the inverse
variance is the photon-noise estimate 1/flux in the product's own counts,
which is what the DRS itself assumes; it only sets relative pixel weights.

``meta["flux_calibrated"]`` says whether the continuum is the source's (SDSS;
ESO products with ``FLUXCAL = 'ABSOLUTE'``) or only relative flux (HARPS DRS
products): :func:`latentsky.io.grid.resolve_normalisation` uses it.
"""

from __future__ import annotations

import gzip
import io
import warnings
import zlib
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits

from latentsky.exceptions import SpectrumError
from latentsky.io.eso import _read_eso_phase3, _read_harps_e2ds, _read_harps_s1d, harps_e2ds_wavelength  # noqa: F401
from latentsky.io.sdss import SPPIXMASK, _read_sdss_spec, _read_sdss_spspec, sdss_unusable  # noqa: F401
from latentsky.io.spectrum import C_KMS, Spectrum, air_to_vacuum  # noqa: F401

GZIP_MAGIC = b"\x1f\x8b"
MAX_GUNZIPPED_BYTES = 64 * 2**20
"""Most bytes one gzip-compressed spectrum may decompress to (64 MiB; the largest products read here,
echelle spectra, are a few MiB to a few tens of MiB): beyond it the file is refused before it is parsed,
as reading a spectrum takes about 20 times its size in memory."""
GUNZIP_BLOCK = 1 << 20
"""Bytes decompressed at a time, bytes."""
ABSURD_FACTOR = 1e3  # pixels this many times the median |flux| are masked as garbage


def read_spectrum(path, *, data: bytes | None = None, blaze=None) -> Spectrum:
    """Read one FITS spectrum, choosing the reader from its header.

    Parameters
    ----------
    path : path-like
        A FITS file, gzip-compressed or not.
    data : bytes, optional
        The file's contents when already read (``path`` then only names it and
        locates companion files such as the blaze).
    blaze : path-like, optional
        HARPS e2ds only: the blaze file; by default the one named in the header
        is looked up beside the e2ds.

    Raises
    ------
    SpectrumError
        Not FITS, truncated, no spectrum inside, empty or all-NaN flux,
        wavelengths not increasing.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # astropy warns before it fails on truncated files; the error below says it better
            warnings.simplefilter("ignore")
            if data is None:
                data = path.read_bytes()
            if data[:2] == GZIP_MAGIC:  # astropy only gunzips files it opens by name
                data = gunzip(data, path)
            with fits.open(io.BytesIO(data), memmap=False) as hdul:
                reader = _choose_reader(hdul)
                if reader is None:
                    raise SpectrumError(
                        path,
                        "FITS file holds no spectrum latentsky can read "
                        f"(HDUs: {', '.join(_describe(h) for h in hdul)})",
                    )
                if reader is _read_harps_e2ds:
                    spectrum = reader(hdul, path, blaze)
                elif reader is _read_sdss_spec:
                    spectrum = reader(hdul, path, data)
                else:
                    spectrum = reader(hdul, path)
    except SpectrumError:
        raise
    except FileNotFoundError:
        raise SpectrumError(path, "no such file") from None
    except (OSError, EOFError, ValueError, TypeError, IndexError, KeyError, zlib.error) as err:
        if data is None:  # the file itself could not be read
            raise SpectrumError(path, f"cannot read the file ({getattr(err, 'strerror', None) or err})") from None
        kind = "truncated or corrupt FITS file" if _looks_like_fits(data) else "not a FITS file"
        if isinstance(err, (zlib.error, gzip.BadGzipFile, EOFError)) and data[:2] == GZIP_MAGIC:
            kind = "corrupt gzip file"
        raise SpectrumError(path, f"{kind} ({type(err).__name__}: {err})") from None
    except Exception as err:  # content no reader expects: reported, never a crash of the whole run
        raise SpectrumError(path, f"unexpected content ({type(err).__name__}: {err})") from None
    _validate(spectrum, path)
    spectrum.meta.setdefault("format", reader.__name__.removeprefix("_read_"))
    return spectrum


def gunzip(data: bytes, path) -> bytes:
    """The decompressed contents of gzip ``data`` (every member), streamed and refused beyond
    :data:`MAX_GUNZIPPED_BYTES`.

    Raises
    ------
    SpectrumError
        When the contents would exceed the cap (a "gzip bomb" or not a spectrum).
    zlib.error, OSError, EOFError
        When the gzip stream is corrupt or cut short.
    """
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
        while block := gz.read(GUNZIP_BLOCK):
            if out.tell() + len(block) > MAX_GUNZIPPED_BYTES:
                raise SpectrumError(
                    path,
                    f"decompresses to more than {MAX_GUNZIPPED_BYTES / 2**20:.0f} MiB, the "
                    "most latentsky reads from one compressed spectrum",
                )
            out.write(block)
    return out.getvalue()


def _looks_like_fits(data: bytes | None) -> bool:
    try:
        if data and data[:2] == GZIP_MAGIC:
            data = gzip.GzipFile(fileobj=io.BytesIO(data)).read(9)
        return bool(data) and data[:9] == b"SIMPLE  ="
    except (OSError, EOFError, zlib.error):
        return False


def _describe(hdu) -> str:
    name = hdu.name or type(hdu).__name__
    shape = getattr(hdu, "shape", None) or ()
    return f"{name}{list(shape) if shape else ''}"


def _choose_reader(hdul):
    header = hdul[0].header
    for hdu in hdul[1:]:
        if isinstance(hdu, fits.BinTableHDU):
            names = {n.upper() for n in hdu.columns.names}
            if {"LOGLAM", "FLUX", "IVAR"} <= names:
                return _read_sdss_spec
            if {"WAVE", "FLUX"} <= names:
                return _read_eso_phase3
    instrument = str(header.get("INSTRUME", "")).upper()
    naxis = header.get("NAXIS", 0)
    if instrument.startswith("HARPS") and hdul[0].data is not None:
        if naxis == 1 and "CRVAL1" in header and "CDELT1" in header:
            return _read_harps_s1d
        if naxis == 2 and header.get("ESO DPR CATG") == "SCIENCE" and "ESO DRS CAL TH DEG LL" in header:
            deg = int(header["ESO DRS CAL TH DEG LL"])
            n_coeff = sum(k.startswith("ESO DRS CAL TH COEFF LL") for k in header)
            if n_coeff == header["NAXIS2"] * (deg + 1):  # CCF products have one row more than orders
                return _read_harps_e2ds
    if "SDSS" in str(header.get("TELESCOP", "")).upper() and naxis == 2 and "COEFF0" in header:
        return _read_sdss_spspec
    return None


def _validate(spectrum: Spectrum, path: Path) -> None:
    flux = spectrum.flux.value
    if flux.size == 0:
        raise SpectrumError(path, "the spectrum is empty (0 pixels)")
    usable = np.isfinite(flux) & (spectrum.ivar > 0)
    if usable.any():
        # Some DRS products carry runs of absurd values (e.g. +-1e13 in a 2003 HARPS s1d,
        # where the blaze was ~0); no real spectrum varies by 1e3 times its median level
        level = np.median(np.abs(flux[usable]))
        absurd = usable & (np.abs(flux) > ABSURD_FACTOR * max(level, np.finfo("f4").tiny))
        spectrum.meta["n_absurd_pixels"] = int(absurd.sum())
        usable &= ~absurd
    if not usable.any():
        raise SpectrumError(path, "flux has no usable pixel (all NaN, or all flagged bad)")
    wave = spectrum.wave.to_value(u.AA)
    for seg in spectrum.segments:
        steps = np.diff(wave[seg])
        bad = np.flatnonzero(~(steps > 0))
        if bad.size:
            i = bad[0] + (seg.start or 0)
            raise SpectrumError(
                path, f"wavelengths are not increasing (pixel {i}: {wave[i]:.3f} -> {wave[i + 1]:.3f} Angstrom)"
            )
    spectrum.ivar = np.where(usable, spectrum.ivar, 0.0)
