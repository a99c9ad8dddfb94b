"""What a folder of FITS files holds, read from the files' headers.

:func:`scan` walks a folder and sorts every FITS file into three tables the
local archive serves:

- an **ObsCore** table (``ivoa.ObsCore`` columns, one row per spectrum) for the
  ESO-like TAP endpoint: HARPS DRS ``s1d`` files and ESO phase-3 spectra;
- an SDSS **SpecObj** table (``specobjid, ra, dec, z, class, plate, mjd,
  fiberid, run2d, instrument``) for the SkyServer-like SQL endpoint: SDSS
  ``spec-*.fits`` (DR8+) and ``spSpec-*.fit`` (DR7) files;
- a list of **images** with a celestial WCS (FIRST, UKIDSS, SDSS frames...) for
  the cutout endpoints, keyed by survey name.

Nothing is invented: a column the headers do not give stays empty (NaN or
``""``).  Files that are none of these are skipped with a debug log line; files
that cannot be read or lack what their kind needs (an SDSS spectrum without
``MJD``) are skipped and listed in :attr:`FolderCatalog.skipped` with the reason.
Only files that really lie inside the folder are catalogued: a symbolic link
pointing outside it is skipped (and never served).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time
from astropy.wcs import WCS, FITSFixedWarning

log = logging.getLogger(__name__)

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz")

OBSCORE_COLUMNS = {
    "dp_id": str,
    "obs_id": str,
    "obs_collection": str,
    "facility_name": str,
    "instrument_name": str,
    "dataproduct_type": str,
    "dataproduct_subtype": str,
    "calib_level": int,
    "target_name": str,
    "s_ra": float,
    "s_dec": float,
    "s_fov": float,
    "t_min": float,
    "t_max": float,
    "t_exptime": float,
    "em_min": float,
    "em_max": float,
    "access_url": str,
    "access_format": str,
    "access_estsize": int,
    "obs_release_date": str,
    "snr": float,
    "filename": str,
}
"""ObsCore columns of the local TAP table (ESO's names) and their types; ``filename``
is the local archive's own column (path relative to the root)."""

SPECOBJ_COLUMNS = {
    "specobjid": str,
    "ra": float,
    "dec": float,
    "z": float,
    "class": str,
    "subclass": str,
    "plate": int,
    "mjd": int,
    "fiberid": int,
    "run2d": str,
    "instrument": str,
    "filename": str,
}

# DR7 spSpec SPEC_CLN codes (SDSS DR7 schema, SpecClass)
_SPEC_CLN = {0: "UNKNOWN", 1: "STAR", 2: "GALAXY", 3: "QSO", 4: "QSO", 5: "SKY", 6: "STAR"}


@dataclasses.dataclass
class ImageFile:
    """One image with a celestial WCS.

    Attributes
    ----------
    survey : str
        Survey name, e.g. ``"FIRST"``, ``"UKIDSS-K"``, ``"SDSS-r"``.
    path : Path
        The file.
    hdu : int
        Index of the image HDU.
    wcs : WCS
        Its celestial WCS.
    shape : tuple of int
        ``(ny, nx)`` pixels.
    """

    survey: str
    path: Path
    hdu: int
    wcs: WCS
    shape: tuple

    def contains(self, ra: float, dec: float) -> bool:
        """Whether (ra, dec) in degrees falls on the image's pixels."""
        from astropy.coordinates import SkyCoord

        try:
            x, y = self.wcs.world_to_pixel(SkyCoord(ra, dec, unit="deg"))
        except Exception:  # a position the projection cannot reach (e.g. the far side for SIN)
            return False
        ny, nx = self.shape
        return bool(np.isfinite(x) and np.isfinite(y) and -0.5 <= x < nx - 0.5 and -0.5 <= y < ny - 0.5)


@dataclasses.dataclass
class FolderCatalog:
    """The three tables of a scanned folder (see the module docstring)."""

    root: Path
    obscore: Table
    specobj: Table
    images: list
    skipped: list = dataclasses.field(default_factory=list)
    """``(path relative to the root, reason)`` of the files left out."""

    def path_of(self, filename: str) -> Path:
        """Absolute path of a ``filename`` column value; ValueError when it resolves outside the root."""
        path = (self.root / filename).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"{filename} lies outside the archive folder {self.root}")
        return path

    def surveys(self) -> list[str]:
        """Names of the image surveys found."""
        return sorted({im.survey for im in self.images})


def is_fits_name(path: Path) -> bool:
    return path.name.lower().endswith(FITS_SUFFIXES)


def scan(root: str | Path) -> FolderCatalog:
    """Read the headers of every FITS file under ``root`` (recursively).

    Parameters
    ----------
    root : path-like
        A folder.

    Returns
    -------
    FolderCatalog
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"local archive root {root} is not a folder")
    obscore, specobj, images, skipped = [], [], [], []
    for path in sorted(p for p in root.rglob("*") if is_fits_name(p)):
        rel = path.relative_to(root).as_posix()
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError) as err:
            skipped.append((rel, f"cannot be resolved ({err})"))
            continue
        if not real.is_relative_to(root):
            skipped.append((rel, "a symbolic link to a file outside the folder"))
            continue
        if not real.is_file():
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FITSFixedWarning)
                warnings.simplefilter("ignore", fits.verify.VerifyWarning)
                with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
                    kind = _classify(hdul)
                    if kind == "eso_spectrum":
                        obscore.append(_obscore_row(hdul, path, rel))
                    elif kind == "sdss_spectrum":
                        specobj.append(_specobj_row(hdul, path, rel))
                    elif kind == "image":
                        images.extend(_images(hdul, path))
                    else:
                        log.debug("local archive: %s is not a spectrum or image we serve; skipped", rel)
        except Exception as err:  # one bad file never stops the scan: it is reported with its reason
            skipped.append((rel, f"{type(err).__name__}: {err}"))
    for rel, reason in skipped:
        log.warning("local archive: %s skipped: %s", rel, reason)
    return FolderCatalog(root, _table(obscore, OBSCORE_COLUMNS), _table(specobj, SPECOBJ_COLUMNS), images, skipped)


def _table(rows: list[dict], columns: dict) -> Table:
    out = Table()
    for name, typ in columns.items():
        values = [row.get(name) for row in rows]
        if typ is float:
            out[name] = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
        elif typ is int:
            out[name] = np.array([-1 if v is None else int(v) for v in values], dtype=np.int64)
        else:
            out[name] = np.array(["" if v is None else str(v) for v in values], dtype=str)
    return out


def _classify(hdul) -> str | None:
    h0 = hdul[0].header
    telescope = str(h0.get("TELESCOP", "")).upper()
    if telescope.startswith("SDSS") and ("PLATEID" in h0 or "PLUG_RA" in h0):
        return "sdss_spectrum"
    if telescope.startswith("ESO"):
        # 1-D spectra only (HARPS s1d, phase-3 SCIENCE.SPECTRUM); CCF/bisector files are 1-D in velocity
        axis = str(h0.get("CTYPE1", "")).strip().lower()
        if h0.get("NAXIS") == 1 and axis in {"angstrom", "wave", "wavelength", "lambda", "awav"}:
            return "eso_spectrum"
        if str(h0.get("PRODCATG", "")).upper().startswith("SCIENCE.SPEC"):
            return "eso_spectrum"
        return None
    for hdu in hdul:
        if hdu.is_image and hdu.header.get("NAXIS") == 2 and str(hdu.header.get("CTYPE1", "")).startswith("RA"):
            return "image"
    return None


def _mjd(header) -> float | None:
    if "MJD-OBS" in header:
        return float(header["MJD-OBS"])
    if "DATE-OBS" in header:
        try:
            return float(Time(_iso_date(str(header["DATE-OBS"]))).mjd)
        except ValueError:
            return None
    return None


def _iso_date(text: str) -> str:
    # FIRST writes DATE-OBS as YYYYMMDD
    if re.fullmatch(r"\d{8}", text):
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


def _obscore_row(hdul, path: Path, rel: str) -> dict:
    h = hdul[0].header
    instrument = str(h.get("INSTRUME", "")).strip()
    t_min = _mjd(h)
    exptime = h.get("EXPTIME")
    em_min = em_max = None
    if h.get("NAXIS") == 1 and "CRVAL1" in h and "CDELT1" in h:
        # s1d: linear grid in Angstrom; ObsCore wants metres
        start = float(h["CRVAL1"]) - (float(h.get("CRPIX1", 1)) - 1) * float(h["CDELT1"])
        em_min = start * 1e-10
        em_max = (start + (int(h["NAXIS1"]) - 1) * float(h["CDELT1"])) * 1e-10
    # a stable product id: ESO's dp_id style, from the file name (':' was replaced on disk)
    dp_id = re.sub(r"\.(fits|fit|fts)(\.gz|\.fz)?$", "", path.name, flags=re.I)
    return {
        "dp_id": dp_id,
        "obs_id": str(h.get("HIERARCH ESO OBS ID", "")),
        "obs_collection": instrument,
        "facility_name": str(h.get("TELESCOP", "")),
        "instrument_name": instrument,
        "dataproduct_type": "spectrum",
        "dataproduct_subtype": str(h.get("HIERARCH ESO PRO CATG", "")) or "s1d",
        "calib_level": 2,
        "target_name": str(h.get("OBJECT", "")).strip(),
        "s_ra": h.get("RA"),
        "s_dec": h.get("DEC"),
        "s_fov": None,
        "t_min": t_min,
        "t_max": None if t_min is None or exptime is None else t_min + float(exptime) / 86400.0,
        "t_exptime": exptime,
        "em_min": em_min,
        "em_max": em_max,
        "access_url": "",
        "access_format": "application/fits",
        "access_estsize": path.stat().st_size // 1024,
        "obs_release_date": "",
        "snr": h.get("HIERARCH ESO DRS SPE EXT SN50"),
        "filename": rel,
    }


def _specobj_row(hdul, path: Path, rel: str) -> dict:
    h = hdul[0].header
    row = {
        "plate": h.get("PLATEID"),
        "mjd": h.get("MJD"),
        "fiberid": h.get("FIBERID"),
        "filename": rel,
        "instrument": "SDSS",
        "run2d": "26",
        "class": "",
        "subclass": "",
        "z": None,
        "ra": h.get("PLUG_RA", h.get("RAOBJ")),
        "dec": h.get("PLUG_DEC", h.get("DECOBJ")),
    }
    table_hdu = next((name for name in ("SPECOBJ", "SPALL") if name in hdul), None)
    if table_hdu is not None:
        # DR8+ spec files keep the redshift and class in SPECOBJ (SPALL for eBOSS plates)
        wanted = ("SPECOBJID", "Z", "CLASS", "SUBCLASS", "RUN2D", "INSTRUMENT", "PLUG_RA", "PLUG_DEC")
        values = first_row(hdul, table_hdu, wanted)

        def first(name):
            return values.get(name)

        row.update(
            {
                k: v
                for k, v in {
                    "specobjid": first("SPECOBJID"),
                    "z": first("Z"),
                    "class": first("CLASS"),
                    "subclass": first("SUBCLASS"),
                    "run2d": first("RUN2D"),
                    "instrument": first("INSTRUMENT"),
                    "ra": first("PLUG_RA"),
                    "dec": first("PLUG_DEC"),
                }.items()
                if v is not None
            }
        )
    else:
        # DR7 spSpec: redshift and class in the primary header
        if "RAOBJ" in h:
            row["ra"], row["dec"] = h["RAOBJ"], h["DECOBJ"]
        row["z"] = h.get("Z")
        row["class"] = _SPEC_CLN.get(int(h.get("SPEC_CLN", 0)), "UNKNOWN")
        row["run2d"] = "26"
    missing = [
        keyword
        for key, keyword in (("plate", "PLATEID"), ("mjd", "MJD"), ("fiberid", "FIBERID"))
        if row.get(key) is None
    ]
    if missing:
        raise ValueError(f"an SDSS spectrum without {', '.join(missing)} in its primary header")
    for key in ("class", "subclass", "run2d", "instrument", "specobjid"):
        if isinstance(row.get(key), bytes):
            row[key] = row[key].decode()
        if row.get(key) is not None:
            row[key] = str(row[key]).strip()
    if not row.get("specobjid"):
        # no SPECOBJID in DR7 files: a stable local id from plate, mjd and fiber
        row["specobjid"] = f"{int(row['plate'])}{int(row['mjd']):05d}{int(row['fiberid']):04d}"
    return row


_TFORM = re.compile(r"\s*(\d*)([LXBIJKAEDCMPQ])")
_TYPES = {
    "L": ("?", 1),
    "B": (">u1", 1),
    "I": (">i2", 2),
    "J": (">i4", 4),
    "K": (">i8", 8),
    "A": ("S", 1),
    "E": (">f4", 4),
    "D": (">f8", 8),
    "C": (">c8", 8),
    "M": (">c16", 16),
    "P": (None, 8),
    "Q": (None, 16),
}


def first_row(hdul, extname: str, wanted) -> dict:
    """The first row's values of the named columns of a binary table, read from the table's header and bytes.

    astropy builds every column of the table first (0.3 s for an SDSS SPECOBJ of 165
    columns); this reads one row.  Columns it cannot decode this way (arrays,
    heap pointers, scaled values) come from astropy's ``data``.
    """
    header = hdul[extname].header
    offset, found = 0, {}
    for i in range(1, int(header["TFIELDS"]) + 1):
        m = _TFORM.match(str(header[f"TFORM{i}"]))
        if m is None:
            return _first_row_astropy(hdul, extname, wanted)
        repeat, code = int(m.group(1) or 1), m.group(2)
        width = (repeat + 7) // 8 if code == "X" else repeat * _TYPES[code][1]
        name = str(header.get(f"TTYPE{i}", "")).strip().upper()
        if name in wanted:
            # integers may carry an offset (TZERO = 2**63: unsigned 64-bit ids); any other scaling goes to astropy
            zero = header.get(f"TZERO{i}", 0)
            scaled = header.get(f"TSCAL{i}", 1) != 1 or (zero and (code not in "BIJK" or zero != int(zero)))
            if scaled or code in "XPQ" or (code != "A" and repeat != 1):
                return _first_row_astropy(hdul, extname, wanted)
            found[name] = (offset, code, width, int(zero))
        offset += width
    if offset != int(header["NAXIS1"]) or int(header["NAXIS2"]) < 1:
        return _first_row_astropy(hdul, extname, wanted)
    info = hdul.fileinfo(hdul.index_of(extname))
    info["file"].seek(info["datLoc"])
    raw = info["file"].read(offset)
    out = {}
    for name, (start, code, width, zero) in found.items():
        chunk = raw[start : start + width]
        if code == "A":
            out[name] = chunk.split(b"\0", 1)[0].decode("ascii", "replace").rstrip()
        else:
            out[name] = np.frombuffer(chunk, dtype=_TYPES[code][0])[0].item() + zero
    return out


def _first_row_astropy(hdul, extname: str, wanted) -> dict:
    data = hdul[extname].data
    names = {n.upper(): n for n in data.names}
    return {name: data[names[name]][0] for name in wanted if name in names}


def _images(hdul, path: Path) -> list[ImageFile]:
    out = []
    h0 = hdul[0].header
    for index, hdu in enumerate(hdul):
        if not hdu.is_image or hdu.header.get("NAXIS") != 2:
            continue
        header = hdu.header
        if not str(header.get("CTYPE1", "")).startswith("RA"):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header).celestial
        out.append(
            ImageFile(_survey_name(h0, header, path), path, index, wcs, (int(header["NAXIS2"]), int(header["NAXIS1"])))
        )
    return out


def _survey_name(h0, header, path: Path) -> str:
    telescope = str(header.get("TELESCOP", h0.get("TELESCOP", ""))).upper()
    band = str(header.get("FILTER", h0.get("FILTER", ""))).strip()
    if telescope == "VLA":
        return "FIRST"
    if telescope == "UKIRT" or str(h0.get("INSTRUME", "")).upper() == "WFCAM":
        return f"UKIDSS-{band or 'K'}"
    if telescope.startswith("SDSS"):
        return f"SDSS-{band or 'r'}"
    return path.parent.name.upper()
