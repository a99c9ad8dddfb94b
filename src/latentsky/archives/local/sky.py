"""A deterministic synthetic sky for the local archive's image services, marked as synthetic in every answer.

Offline, the bundled images cover a few square arcminutes, so almost every
position is off their footprint and a benchmark or a class fetching 10^5
cutouts would measure nothing.  :func:`render` makes up the sky instead, the
same at every call:

- **sources** are placed per HEALPix cell (nested, ``nside`` :data:`NSIDE`,
  cells of ~26 arcsec, through :mod:`astropy_healpix`): each cell has
  :data:`SLOTS` slots, each holding a source with a probability set by the
  survey's density, its position in the cell, flux, colour, shape (point or
  exponential disc: size, axis ratio, angle) all drawn from a counter-based
  hash of (survey family, cell, slot).  Overlapping cutouts therefore see the
  same sources, and the bands of one survey (SDSS u..z, UKIDSS Y..K) the same
  objects with different fluxes;
- **noise**, Gaussian, seeded by a hash of the request (survey, band,
  centre, size, field of view): the same request gets the same pixels;
- **footprints**: each survey covers a coarse, survey-like region (galactic
  latitude and declination cuts, :data:`FAMILIES`); a cutout centred outside
  it is blank (NaN), as hips2fits answers off a survey.

Answers carry ``SYNTHSKY = T`` and ``COMMENT`` cards saying so.  The sky is
made to exercise clients (real resampling sizes, real transfers, blank
answers), not to be measured as astronomy.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import struct

import numpy as np
from astropy.io import fits

NSIDE = 2**13
"""HEALPix resolution of the source cells (nested ordering): ~25.8 arcsec cells."""

SLOTS = 6
"""Candidate sources per cell."""

_CELL_RADIUS_DEG = 1.1 * 25.8 / 3600  # a cell's centre-to-corner distance, with a margin


@dataclasses.dataclass(frozen=True)
class Family:
    """One survey's synthetic sky.

    Attributes
    ----------
    name : str
        ``"SDSS"``, ``"UKIDSS"`` or ``"FIRST"``.
    bands : dict of str to float
        Band -> colour weight (a source's flux in a band is its flux times
        ``weight ** colour``, colour drawn per source).
    density : float
        Mean sources per HEALPix cell.
    fwhm : float
        Point-spread function FWHM, arcsec.
    noise : float
        Standard deviation of the pixel noise (flux units).
    flux : float
        Faintest source's peak-scale flux (the fluxes follow a power law above it).
    extended : float
        Fraction of sources that are discs rather than points.
    footprint : tuple
        ``(min galactic b, min dec, max dec)`` of the north-cap region, and
        ``(half width in dec, ra start, ra end)`` of an equatorial stripe.
    """

    name: str
    bands: dict
    density: float
    fwhm: float
    noise: float
    flux: float
    extended: float
    footprint: tuple


FAMILIES = {
    "SDSS": Family(
        "SDSS",
        {"u": 0.5, "g": 0.8, "r": 1.0, "i": 1.15, "z": 1.25},
        density=3.0,
        fwhm=1.4,
        noise=0.05,
        flux=0.4,
        extended=0.6,
        footprint=((25.0, -10.0, 90.0), (1.25, 310.0, 60.0)),
    ),
    "UKIDSS": Family(
        "UKIDSS",
        {"Y": 1.0, "J": 1.1, "H": 1.2, "K": 1.3},
        density=3.0,
        fwhm=0.9,
        noise=0.08,
        flux=0.5,
        extended=0.5,
        footprint=((30.0, -3.0, 30.0), (1.25, 310.0, 60.0)),
    ),
    "FIRST": Family(
        "FIRST",
        {"": 1.0},
        density=0.4,
        fwhm=5.4,
        noise=0.15,
        flux=1.0,
        extended=0.3,
        footprint=((30.0, -10.0, 65.0), (1.6, 315.0, 50.0)),
    ),
}
"""The synthetic surveys; bands are named like the local archive's surveys (``SDSS-r``, ``UKIDSS-K``, ``FIRST``)."""


def survey_band(survey: str) -> tuple[Family, str] | None:
    """``("SDSS-r")`` -> (the SDSS family, ``"r"``); None for a survey the synthetic sky does not make."""
    name, _, band = survey.partition("-")
    family = FAMILIES.get(name.upper())
    if family is None or band not in family.bands:
        return None
    return family, band


def in_footprint(family: Family, ra: float, dec: float) -> bool:
    """True when (ra, dec) (degrees, ICRS) lies in the family's synthetic footprint."""
    (b_min, dec_min, dec_max), (half, ra_start, ra_end) = family.footprint
    if dec_min <= dec <= dec_max and galactic_latitude(ra, dec) >= b_min:
        return True
    in_ra = ra >= ra_start or ra <= ra_end if ra_start > ra_end else ra_start <= ra <= ra_end
    return abs(dec) <= half and in_ra


@functools.lru_cache(maxsize=1)
def _to_galactic() -> np.ndarray:
    """The ICRS -> Galactic rotation matrix, from astropy (computed once)."""
    from astropy.coordinates import SkyCoord

    axes = SkyCoord(x=[1, 0, 0], y=[0, 1, 0], z=[0, 0, 1], representation_type="cartesian", frame="icrs")
    gal = axes.galactic.cartesian
    return np.array([gal.x.value, gal.y.value, gal.z.value])  # columns: images of the ICRS axes


def galactic_latitude(ra: float, dec: float) -> float:
    """Galactic latitude b, degrees, of an ICRS position (degrees)."""
    r, d = np.radians(ra), np.radians(dec)
    v = _to_galactic() @ np.array([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)])
    return float(np.degrees(np.arcsin(np.clip(v[2], -1.0, 1.0))))


def _uniform(*keys: np.ndarray) -> np.ndarray:
    """Numbers in [0, 1) that depend only on the integer ``keys`` (splitmix64 of a combined counter)."""
    x = np.zeros(np.broadcast(*keys).shape, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in keys:
            x = (x ^ np.asarray(k, dtype=np.uint64)) * np.uint64(0x9E3779B97F4A7C15)
            x ^= x >> np.uint64(31)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def sources(family: Family, ra: float, dec: float, radius_deg: float) -> dict:
    """The family's sources that can reach a disc of ``radius_deg`` around (ra, dec).

    Returns arrays ``ra, dec`` (deg), ``flux``, ``colour``, ``extended`` (bool),
    ``size`` (arcsec, disc scale length), ``q`` (axis ratio), ``angle`` (rad).
    """
    import astropy.units as u
    from astropy_healpix.core import healpix_cone_search, healpix_to_lonlat

    cells = healpix_cone_search(ra * u.deg, dec * u.deg, (radius_deg + _CELL_RADIUS_DEG) * u.deg, NSIDE, order="nested")
    fam = np.uint64(int.from_bytes(hashlib.blake2b(family.name.encode(), digest_size=4).digest(), "big"))
    cell = np.repeat(np.asarray(cells, dtype=np.uint64), SLOTS)
    slot = np.tile(np.arange(SLOTS, dtype=np.uint64), len(cells))

    def draw(field: int) -> np.ndarray:
        return _uniform(fam, cell, slot, np.uint64(field))

    keep = draw(0) < family.density / SLOTS
    cell, slot = cell[keep], slot[keep]
    lon, lat = healpix_to_lonlat(cell.astype(np.int64), NSIDE, dx=draw(1), dy=draw(2), order="nested")
    extended = draw(4) < family.extended
    return {
        "ra": lon.to_value(u.deg),
        "dec": lat.to_value(u.deg),
        "flux": family.flux * np.minimum(draw(3), 1.0 - 1e-12) ** (-1 / 1.5),  # power law, slope 1.5
        "colour": draw(5) * 2.0 - 0.5,
        "extended": extended,
        "size": 0.4 + 2.5 * draw(6),
        "q": 0.3 + 0.7 * draw(7),
        "angle": np.pi * draw(8),
    }


def tan_wcs(ra: float, dec: float, width: int, height: int, fov: float):
    """The TAN grid of a hips2fits answer: centred on (ra, dec), ``fov`` degrees across ``width`` pixels."""
    from astropy.wcs import WCS

    scale = fov / width
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [(width + 1) / 2, (height + 1) / 2]
    wcs.wcs.cdelt = [-scale, scale]
    wcs.wcs.cunit = ["deg", "deg"]
    return wcs


def render(survey: str, ra: float, dec: float, width: int, height: int, fov: float) -> np.ndarray | None:
    """The synthetic image of ``survey`` (e.g. ``"SDSS-r"``) on a hips2fits TAN grid; None off its footprint.

    Parameters
    ----------
    survey : str
        A band of :data:`FAMILIES` (``SDSS-g``, ``UKIDSS-K``, ``FIRST``...).
    ra, dec : float
        Centre, degrees (ICRS).
    width, height : int
        Pixels.
    fov : float
        Width of the field, degrees.

    Returns
    -------
    ndarray (height, width), float32, or None
    """
    found = survey_band(survey)
    if found is None:
        return None
    family, band = found
    if not in_footprint(family, ra, dec):
        return None
    scale = fov / width * 3600.0  # arcsec per pixel
    reach = 5.0 * max(family.fwhm, 3.0)  # arcsec: farther sources add less than the noise
    src = sources(family, ra, dec, 0.5 * fov * np.hypot(1.0, height / width) + reach / 3600.0)
    image = np.zeros((height, width), dtype=np.float64)
    if len(src["ra"]):
        x, y = tan_wcs(ra, dec, width, height, fov).wcs_world2pix(src["ra"], src["dec"], 0)
        near = (x > -reach / scale) & (x < width + reach / scale) & (y > -reach / scale) & (y < height + reach / scale)
        flux = src["flux"] * family.bands[band] ** src["colour"]
        sigma = family.fwhm / 2.3548
        yy, xx = np.mgrid[0:height, 0:width]
        for kind in (False, True):
            k = near & (src["extended"] == kind)
            if not k.any():
                continue
            dx = (xx[None] - x[k, None, None]) * scale  # arcsec
            dy = (yy[None] - y[k, None, None]) * scale
            if kind:  # an exponential disc, softened by the PSF at its centre
                c, s = np.cos(src["angle"][k])[:, None, None], np.sin(src["angle"][k])[:, None, None]
                r2 = (dx * c + dy * s) ** 2 + ((dy * c - dx * s) / src["q"][k, None, None]) ** 2
                shape = np.exp(-np.sqrt(r2 + sigma**2) / src["size"][k, None, None])
            else:
                shape = np.exp(-0.5 * (dx**2 + dy**2) / sigma**2)
            image += np.tensordot(flux[k], shape, axes=1)
    seed = struct.unpack(
        "<Q",
        hashlib.blake2b(
            repr((survey, round(ra, 10), round(dec, 10), width, height, round(fov, 12))).encode(), digest_size=8
        ).digest(),
    )[0]
    image += np.random.default_rng(seed).normal(0.0, family.noise, image.shape)
    return image.astype(np.float32)


def header_cards(survey: str, hips: str) -> list:
    """The cards saying that an answer is synthetic (added to its FITS header)."""
    return [
        ("SYNTHSKY", True, "latentsky synthetic sky: not real data"),
        ("HIPS", hips, "HiPS identifier asked for"),
        ("SURVEY", survey, "survey imitated"),
        ("COMMENT", "Synthetic sky made by the latentsky local archive: seeded noise"),
        ("COMMENT", f"plus point and disc sources placed per HEALPix cell (nside {NSIDE})."),
        ("COMMENT", "Not a survey image: for testing clients, not for science."),
    ]


def synthetic_fits(survey: str, hips: str, ra: float, dec: float, width: int, height: int, fov: float) -> bytes:
    """A hips2fits-like FITS answer from the synthetic sky: blank (NaN) off the footprint, marked synthetic.

    The header is astropy's, made once per survey and grid (:func:`_template`);
    each answer only gets its own ``CRVAL1``/``CRVAL2`` cards (astropy formats
    them) and its data unit, big-endian float32 padded to 2880-byte blocks as
    the FITS standard lays it out.
    """
    data = render(survey, ra, dec, width, height, fov)
    if data is None:
        data = np.full((height, width), np.nan, dtype=np.float32)
    head, offsets = _template(survey, hips, width, height, fov)
    head = bytearray(head)
    for key, value, pos in (("CRVAL1", ra, offsets[0]), ("CRVAL2", dec, offsets[1])):
        head[pos : pos + 80] = fits.Card(key, float(value)).image.encode("ascii")
    body = data.astype(">f4").tobytes()
    return bytes(head) + body + b"\0" * (-len(body) % 2880)


@functools.lru_cache(maxsize=256)
def _template(survey: str, hips: str, width: int, height: int, fov: float) -> tuple[bytes, tuple[int, int]]:
    """The primary header of a synthetic answer (bytes) and the byte offsets of its CRVAL1/CRVAL2 cards."""
    header = tan_wcs(0.0, 0.0, width, height, fov).to_header()
    for key in ("LATPOLE", "MJDREF"):  # not needed by a TAN grid, and LATPOLE would change with CRVAL2
        header.remove(key, ignore_missing=True)
    for card in header_cards(survey, hips):
        header.append(card)
    hdu = fits.PrimaryHDU(np.zeros((height, width), dtype=np.float32), header)
    text = hdu.header.tostring()
    cards = [text[i : i + 80] for i in range(0, len(text), 80)]
    offsets = tuple(
        80 * next(i for i, c in enumerate(cards) if c.startswith(f"{key:<8}=")) for key in ("CRVAL1", "CRVAL2")
    )
    return text.encode("ascii"), offsets
