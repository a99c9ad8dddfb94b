"""The local archive's image endpoints: hips2fits-like resampled images and native-pixel cutouts."""

from __future__ import annotations

import warnings

import numpy as np
from astropy.io import fits

from latentsky.archives.local.files import fits_bytes
from latentsky.archives.local.server import HTTPError, Request, Response

HIPS_ALIASES = {
    "CDS/P/SDSS9/u": "SDSS-u",
    "CDS/P/SDSS9/g": "SDSS-g",
    "CDS/P/SDSS9/r": "SDSS-r",
    "CDS/P/SDSS9/i": "SDSS-i",
    "CDS/P/SDSS9/z": "SDSS-z",
    "CDS/P/FIRST": "FIRST",
    "CDS/P/UKIDSS/K": "UKIDSS-K",
    "CDS/P/UKIDSS/H": "UKIDSS-H",
    "CDS/P/UKIDSS/J": "UKIDSS-J",
    "CDS/P/UKIDSS/Y": "UKIDSS-Y",
}
"""HiPS identifiers the hips2fits endpoint understands, mapped to local survey names
(a survey name itself, e.g. ``"FIRST"``, is accepted too)."""

MAX_CUTOUT_PIXELS = 1000 * 1000
"""Largest hips2fits image served, width x height in pixels (1 Mpx, about a second of resampling here;
2048 x 2048 took 7.4 s and 606 MB).  The real service's own limit could not be read offline: this one is ours."""


def find_images(archive, survey: str):
    name = HIPS_ALIASES.get(survey, survey)
    images = [im for im in archive.catalog.images if im.survey.lower() == name.lower()]
    if not images:
        raise HTTPError(404, f"unknown survey {survey!r}; this archive has {archive.catalog.surveys()}")
    return images


def hips2fits(archive, request: Request) -> Response:
    """CDS hips2fits from the folder's images: resampled where they cover, blank (NaN) elsewhere."""
    asked = hips2fits_request(request)
    if isinstance(asked, Response):
        return asked
    hips, ra, dec, width, height, fov = asked
    try:
        images = find_images(archive, hips)
    except HTTPError as err:
        if hips not in HIPS_ALIASES and hips not in HIPS_ALIASES.values():
            return Response.json({"title": "Unknown HiPS", "description": err.message}, status=400)
        # a survey the real service knows but this folder has no image of: all blank, as off-footprint
        images = []
    hdu = resample_tan(images, ra, dec, width, height, fov)
    return Response(fits_bytes(hdu), content_type="application/fits")


def synthetic_hips2fits(archive, request: Request) -> Response:
    """hips2fits over the folder's images where they cover the centre, the synthetic sky elsewhere.

    The synthetic answers say so in their header (``SYNTHSKY = T``, see :mod:`.sky`).
    """
    asked = hips2fits_request(request)
    if isinstance(asked, Response):
        return asked
    hips, ra, dec, width, height, fov = asked
    body = survey_fits(archive, HIPS_ALIASES.get(hips, hips), hips, ra, dec, width, height, fov)
    if body is None:
        return Response.json(
            {
                "title": "Unknown HiPS",
                "description": f"{hips!r} is not a survey of the synthetic sky ({', '.join(sorted(HIPS_ALIASES))})",
            },
            status=400,
        )
    return Response(body, content_type="application/fits")


def survey_fits(
    archive, survey: str, label: str, ra: float, dec: float, width: int, height: int, fov: float
) -> bytes | None:
    """A FITS image of ``survey`` (``SDSS-r``, ``FIRST``, ``UKIDSS-K``...) on a TAN grid centred on (ra, dec):
    from the folder's images where one covers the centre, else from the synthetic sky (marked so; blank off
    its footprint); None for a survey neither knows.  ``label`` names what was asked (a HiPS id...)."""
    from latentsky.archives.local import sky

    images = [im for im in archive.catalog.images if im.survey.lower() == survey.lower() and im.contains(ra, dec)]
    if images:
        return fits_bytes(resample_tan(images, ra, dec, width, height, fov))
    if sky.survey_band(survey) is not None:
        return sky.synthetic_fits(survey, label, ra, dec, width, height, fov)
    return None


def hips2fits_request(request: Request):
    """``(hips, ra, dec, width, height, fov)`` of a hips2fits request, or the 400 answer it deserves."""
    try:
        hips = request.param("hips")
        if not hips:
            raise ValueError("hips is missing")
        width, height = int(request.param("width", "0")), int(request.param("height", "0"))
        fov, ra, dec = (float(request.param(k, "nan")) for k in ("fov", "ra", "dec"))
        projection = (request.param("projection") or "TAN").upper()
        fmt = (request.param("format") or "fits").lower()
    except ValueError as err:
        return Response.json({"title": "Bad request", "description": str(err)}, status=400)
    if not (width > 0 and height > 0) or not np.isfinite([fov, ra, dec]).all() or fov <= 0 or not -90 <= dec <= 90:
        return Response.json(
            {
                "title": "Bad request",
                "description": "width, height (pixels), fov (deg), ra, dec (deg) must be positive numbers",
            },
            status=400,
        )
    if width * height > MAX_CUTOUT_PIXELS:
        return Response.json(
            {
                "title": "Bad request",
                "description": f"{width} x {height} pixels is over this "
                f"service's limit of {MAX_CUTOUT_PIXELS} pixels per image",
            },
            status=400,
        )
    if fmt != "fits" or projection != "TAN":
        return Response.json(
            {"title": "Bad request", "description": "the local hips2fits serves format=fits, projection=TAN only"},
            status=400,
        )
    return hips, ra % 360.0, dec, width, height, fov


def cutout(archive, request: Request) -> Response:
    from astropy.coordinates import SkyCoord
    from astropy.nddata import Cutout2D, NoOverlapError

    try:
        ra, dec = float(request.param("ra", "nan")), float(request.param("dec", "nan"))
        size = int(request.param("size", "28"))
    except ValueError as err:
        raise HTTPError(400, f"ra, dec (deg) and size (pixels) must be numbers: {err}") from err
    if not (np.isfinite(ra) and np.isfinite(dec) and -90 <= dec <= 90 and 0 < size <= 4096):
        raise HTTPError(400, f"bad cutout request ra={ra} dec={dec} size={size}")
    for image in find_images(archive, request.path_params["survey"]):
        if not image.contains(ra, dec):
            continue
        with fits.open(image.path, memmap=False) as hdul:
            src = hdul[image.hdu]
            try:
                cut = Cutout2D(
                    src.data,
                    SkyCoord(ra, dec, unit="deg"),
                    (size, size),
                    wcs=image.wcs,
                    mode="partial",
                    fill_value=np.nan,
                )
            except NoOverlapError:
                continue
            header = src.header.copy()
            header.update(cut.wcs.to_header())
            header["SURVEY"] = image.survey
            header["ORIGFILE"] = image.path.name
            data = np.asarray(cut.data, dtype=np.float32)
        return Response(fits_bytes(fits.PrimaryHDU(data, header)), content_type="application/fits")
    raise HTTPError(404, f"position ra={ra} dec={dec} is outside the footprint of {request.path_params['survey']}")


def resample_tan(images, ra: float, dec: float, width: int, height: int, fov: float) -> fits.PrimaryHDU:
    """An image on a TAN grid centred on (ra, dec), ``fov`` degrees wide, sampled from ``images``.

    Pixels no image covers are NaN (hips2fits' blank value), so a position
    off the survey gives an all-NaN image.  Bilinear interpolation.
    """
    from scipy.ndimage import map_coordinates

    from latentsky.archives.local.sky import tan_wcs

    wcs = tan_wcs(ra, dec, width, height, fov)
    out = np.full((height, width), np.nan, dtype=np.float32)
    yy, xx = np.mgrid[0:height, 0:width]
    world = wcs.pixel_to_world(xx, yy)
    for image in images:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sx, sy = image.wcs.world_to_pixel(world)
        ny, nx = image.shape
        inside = (
            np.isfinite(sx)
            & np.isfinite(sy)
            & (sx >= -0.5)
            & (sx <= nx - 0.5)
            & (sy >= -0.5)
            & (sy <= ny - 0.5)
            & np.isnan(out)
        )
        if not inside.any():
            continue
        with fits.open(image.path, memmap=False) as hdul:
            data = np.asarray(hdul[image.hdu].data, dtype=np.float64)
        values = map_coordinates(data, [sy[inside], sx[inside]], order=1, mode="nearest")
        out[inside] = values
    header = wcs.to_header()
    header["ORIGIN"] = "latentsky local hips2fits"
    return fits.PrimaryHDU(out, header)
