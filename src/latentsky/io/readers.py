"""FITS spectrum readers: ESO Phase-3, HARPS DRS (s1d, e2ds) and SDSS (spec, spSpec).

:func:`read_spectrum` opens a file, chooses the reader from the file's
*header* (never its name) and returns a :class:`Spectrum` in vacuum
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

import dataclasses
import gzip
import io
import re
import warnings
import zlib
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits

from latentsky.exceptions import SpectrumError
from latentsky.io.continuum import polynomial_continuum

C_KMS = 299792.458
#: Degree of the per-order continuum (Chebyshev, over an order's pixels) of an e2ds read without its blaze.
E2DS_ORDER_DEGREE = 4
#: Order pixels whose blaze is below this fraction of the order's peak are dropped (the order edges).
BLAZE_FLOOR = 0.05
#: The same for the per-order continuum of an e2ds read without its blaze: the polynomial is least
#: certain where the blaze falls off, and the neighbouring orders cover most of those wavelengths
#: (docs/decisions/stage1-cross-format.md).
ORDER_CONTINUUM_FLOOR = 0.5
GZIP_MAGIC = b"\x1f\x8b"
MAX_GUNZIPPED_BYTES = 64 * 2**20
"""Most bytes one gzip-compressed spectrum may decompress to (64 MiB; the largest products read here,
echelle spectra, are a few MiB to a few tens of MiB): beyond it the file is refused before it is parsed,
as reading a spectrum takes about 20 times its size in memory."""
GUNZIP_BLOCK = 1 << 20
"""Bytes decompressed at a time, bytes."""
ABSURD_FACTOR = 1e3  # pixels this many times the median |flux| are masked as garbage
FLAM_SDSS = u.Unit("1e-17 erg / (s cm2 Angstrom)")  # SDSS flux density unit


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
                    raise SpectrumError(path, "FITS file holds no spectrum latentsky can read "
                                              f"(HDUs: {', '.join(_describe(h) for h in hdul)})")
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
                raise SpectrumError(path, f"decompresses to more than {MAX_GUNZIPPED_BYTES / 2**20:.0f} MiB, the "
                                          "most latentsky reads from one compressed spectrum")
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
    return Spectrum(air_to_vacuum(wave_air) * u.AA, flux * u.dimensionless_unscaled, _poisson_ivar(flux),
                    _harps_meta(header, "harps_s1d"))


def harps_e2ds_wavelength(header) -> np.ndarray:
    """Air wavelength (Angstrom) of every e2ds pixel, shape (orders, pixels), from the header polynomials."""
    deg = int(header["ESO DRS CAL TH DEG LL"])
    n_orders, n_pix = header["NAXIS2"], header["NAXIS1"]
    coeff = np.array([[header[f"ESO DRS CAL TH COEFF LL{i + order * (deg + 1)}"] for i in range(deg + 1)]
                      for order in range(n_orders)])
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
            raise SpectrumError(path, f"blaze file {blaze_path} has shape {blaze_data.shape}, "
                                      f"not the e2ds shape {counts.shape}")
        meta["blaze_corrected"] = True
        meta["blaze_file"] = str(blaze_path)
    else:
        # no blaze file: each order's own continuum (blaze x source continuum) takes the blaze out
        blaze_data = np.stack([polynomial_continuum(row, w > 0, E2DS_ORDER_DEGREE, kind="chebyshev", iterations=6)
                               for row, w in zip(counts, ivar)])
        blaze_data = np.nan_to_num(blaze_data, nan=0.0)
        meta["blaze_corrected"] = False
        meta["orders_continuum_normalised"] = True
    floor = BLAZE_FLOOR if meta["blaze_corrected"] else ORDER_CONTINUUM_FLOOR
    ok = blaze_data > floor * np.nanmax(blaze_data, axis=1, keepdims=True)  # drop the order edges
    flux = np.where(ok, counts / np.where(ok, blaze_data, 1), 0.0)
    ivar = np.where(ok, ivar * blaze_data**2, 0.0)
    n_orders, n_pix = counts.shape
    segments = [slice(o * n_pix, (o + 1) * n_pix) for o in range(n_orders)]
    return Spectrum(air_to_vacuum(wave_air.ravel()) * u.AA, flux.ravel() * u.dimensionless_unscaled,
                    ivar.ravel(), meta, segments)


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
    table = next(h for h in hdul[1:] if isinstance(h, fits.BinTableHDU)
                 and {"WAVE", "FLUX"} <= {n.upper() for n in h.columns.names})
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
        "flux_calibrated": str(header.get("FLUXCAL", table.header.get("FLUXCAL", ""))).strip().upper()
        == "ABSOLUTE",
    }
    return Spectrum(wave * u.AA, flux * flux_unit, ivar, meta)


def _sdss_object_name(ra: float, dec: float) -> str:
    from astropy.coordinates import SkyCoord

    c = SkyCoord(ra * u.deg, dec * u.deg)
    return "SDSS J" + c.ra.to_string(u.hourangle, sep="", precision=2, pad=True) + \
        c.dec.to_string(sep="", precision=1, alwayssign=True, pad=True)


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
            chunk = raw[offset + pos: offset + pos + width]
            out[name] = chunk.decode("ascii", "replace").strip("\x00 ") if code == "A" else \
                np.frombuffer(chunk, _TFORM_DTYPE[code])[0].item()
        pos += width
    return out


#: SDSS spectroscopic pixel mask bits (``SPPIXMASK`` in idlutils' ``sdssMaskbits.par``, the SDSS
#: "Bitmasks" documentation): 0-15 describe the fibre, 16-31 the pixel.
SPPIXMASK = {"NOPLUG": 0, "BADTRACE": 1, "BADFLAT": 2, "BADARC": 3, "MANYBADCOLUMNS": 4, "MANYREJECTED": 5,
             "LARGESHIFT": 6, "BADSKYFIBER": 7, "NEARWHOPPER": 8, "WHOPPER": 9, "SMEARIMAGE": 10,
             "SMEARHIGHSN": 11, "SMEARMEDSN": 12, "NEARBADPIXEL": 16, "LOWFLAT": 17, "FULLREJECT": 18,
             "PARTIALREJECT": 19, "SCATTEREDLIGHT": 20, "CROSSTALK": 21, "NOSKY": 22, "BRIGHTSKY": 23,
             "NODATA": 24, "COMBINEREJ": 25, "BADFLUXFACTOR": 26, "BADSKYCHI": 27, "REDMONSTER": 28}
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
    coadd = next(h for h in hdul[1:] if isinstance(h, fits.BinTableHDU)
                 and {"loglam", "flux", "ivar"} <= {n.lower() for n in h.columns.names})
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
                hdu.name in ("SPECOBJ", "SPALL") or {"CLASS", "Z"} <= {n.upper() for n in hdu.columns.names}):
            row = _first_row_fields(hdul, index, raw, {"CLASS", "Z", "SN_MEDIAN_ALL", "PLUG_RA", "PLUG_DEC"})
            spec_class = row.get("CLASS", "")
            z = float(row.get("Z", np.nan))
            snr = float(row.get("SN_MEDIAN_ALL", np.nan))
            ra, dec = float(row.get("PLUG_RA", ra)), float(row.get("PLUG_DEC", dec))
            break
    meta = {
        "instrument": "BOSS" if header.get("MJD", 0) >= 55000 else "SDSS",
        "object": _sdss_object_name(ra, dec),
        "ra": float(ra), "dec": float(dec),
        "mjd": float(header.get("MJD", np.nan)),
        "exptime": float(header.get("EXPTIME", np.nan)),
        "snr": snr, "spec_class": spec_class, "redshift": z,
        "plate": int(header.get("PLATEID", -1)), "fiber": int(header.get("FIBERID", -1)),
        "format": "sdss_spec", "flux_calibrated": True,
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
    if data.shape[0] > 3:   # the pixel mask row: SPPIXMASK bits, as the spec files' and_mask
        good &= ~sdss_unusable(data[3])
    ivar = np.zeros_like(flux)
    ivar[good] = 1.0 / err[good] ** 2
    ra, dec = float(header.get("RAOBJ", header.get("RA", np.nan))), float(header.get("DECOBJ", header.get("DEC", np.nan)))
    sn = [header.get(k) for k in ("SN_G", "SN_R", "SN_I") if header.get(k) is not None]
    meta = {
        "instrument": "SDSS",
        "object": _sdss_object_name(ra, dec),
        "ra": ra, "dec": dec,
        "mjd": float(header.get("MJD", np.nan)),
        "exptime": float(header.get("EXPTIME", np.nan)),
        "snr": float(np.median(sn)) if sn else np.nan,
        "spec_class": _SPEC_CLN.get(int(header.get("SPEC_CLN", 0)), "UNKNOWN"),
        "redshift": float(header.get("Z", np.nan)),
        "plate": int(header.get("PLATEID", -1)), "fiber": int(header.get("FIBERID", -1)),
        "format": "sdss_spspec", "flux_calibrated": True,
    }
    return Spectrum(wave * u.AA, flux * FLAM_SDSS, ivar, meta)


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
            raise SpectrumError(path, f"wavelengths are not increasing (pixel {i}: {wave[i]:.3f} -> "
                                      f"{wave[i + 1]:.3f} Angstrom)")
    spectrum.ivar = np.where(usable, spectrum.ivar, 0.0)
