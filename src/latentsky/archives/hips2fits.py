"""One hips2fits cutout: the request astroquery.hips2fits builds, its FITS answer judged, and a one-off fetch.

The CDS **hips2fits** service (``conf.hips2fits_url``) resamples a HiPS
survey onto exactly the requested ``size`` x ``size`` TAN grid (pixel scale
in arcsec, centre in degrees ICRS).  astroquery.hips2fits builds the request
(:func:`hips2fits_params`, its ``get_query_payload=True``) and sends one-off
cutouts (:func:`fetch_one`); :func:`parse_cutout` tells an image from a blank
(off-footprint) answer or damaged bytes.  Many cutouts at once:
:func:`latentsky.archives.cutouts.fetch_cutouts`.
"""

from __future__ import annotations

import numpy as np

from latentsky.archives.base import check_offline, session
from latentsky.config import conf


def hips2fits_params(hips: str, ra: float, dec: float, size: int, pixel_scale_arcsec: float) -> dict:
    """The query parameters astroquery.hips2fits sends for one ``size`` x ``size`` TAN cutout (FITS).

    Parameters
    ----------
    hips : str
        HiPS identifier, e.g. ``"CDS/P/SDSS9/r"``.
    ra, dec : float
        Centre, degrees (ICRS).
    size : int
        Width and height, pixels.
    pixel_scale_arcsec : float
        Pixel size, arcsec; the field of view is ``size * pixel_scale``.
    """
    from astroquery.hips2fits import hips2fitsClass

    return hips2fitsClass().query_async(
        get_query_payload=True, **_hips2fits_args(hips, ra, dec, size, pixel_scale_arcsec)
    )


def _hips2fits_args(hips, ra, dec, size, pixel_scale_arcsec) -> dict:
    """astroquery.hips2fits's arguments for one FITS cutout (its ``query`` defaults spelled out)."""
    import astropy.units as u
    from astropy.coordinates import Angle, Latitude, Longitude

    return {
        "hips": hips,
        "width": int(size),
        "height": int(size),
        "projection": "TAN",
        "ra": Longitude(float(ra) * u.deg),
        "dec": Latitude(float(dec) * u.deg),
        "fov": Angle(size * pixel_scale_arcsec / 3600.0 * u.deg),
        "coordsys": "icrs",
        "rotation_angle": Angle(0.0 * u.deg),
        "format": "fits",
        "min_cut": 0.5,
        "max_cut": 99.5,
        "stretch": "linear",
        "cmap": "Greys_r",
    }


def parse_cutout(body: bytes, size: int) -> tuple[str, np.ndarray | None, float]:
    """``(status, image, coverage)`` of a hips2fits FITS answer.

    A blank (all-NaN or all-zero) image means the position is off the survey
    (``"off_footprint"``, no image); ``coverage`` is the fraction of non-blank
    pixels of an ``"ok"`` image (a target near a survey edge is partly blank).

    Raises
    ------
    ValueError
        Not a FITS image of the expected shape (a damaged answer).
    """
    from astropy.io import fits

    if not body.startswith(b"SIMPLE"):
        raise ValueError(f"not a FITS file: {body[:40]!r}")
    try:
        data = np.asarray(fits.PrimaryHDU.fromstring(body).data, dtype=np.float32)  # a quarter cheaper than open
    except Exception as err:  # astropy raises many kinds on damaged bytes
        raise ValueError(f"unreadable FITS ({type(err).__name__}: {err})") from None
    if data.shape != (size, size):
        raise ValueError(f"a {data.shape} image, expected ({size}, {size})")
    finite = np.isfinite(data)
    if not finite.any() or not np.any(data[finite]):
        return "off_footprint", None, 0.0
    return "ok", data, float(finite.mean())


def fetch_one(
    hips: str, ra: float, dec: float, size: int, pixel_scale_arcsec: float
) -> tuple[str, np.ndarray | None, str]:
    """One cutout through astroquery.hips2fits: ``(status, image or None, error text)``.

    The server is ``conf.hips2fits_url`` (read at call time: astroquery's own
    ``conf.server`` only accepts the two CDS addresses), the timeout
    ``conf.timeout``; the request goes through latentsky's session (a
    retryable status is asked again, :mod:`latentsky.download.policy`), and
    offline (``conf.offline``) only the local archive is asked.
    """
    from astroquery.hips2fits import hips2fitsClass

    url = conf.hips2fits_url
    try:
        check_offline(url)
        client = hips2fitsClass()
        client.server, client.timeout, client._session = url, conf.timeout, session()
        response = client.query_async(**_hips2fits_args(hips, ra, dec, size, pixel_scale_arcsec))
    except Exception as err:  # astroquery and requests raise many kinds; the caller wants a status
        return "error", None, f"hips2fits {url}: {type(err).__name__}: {err}"
    if response.status_code != 200:
        return "error", None, f"hips2fits {url}: HTTP {response.status_code}: {response.text[:120]!r}"
    try:
        status, image, _ = parse_cutout(response.content, int(size))
    except ValueError as err:
        return "error", None, f"hips2fits {url}: {err}"
    return status, image, ""
