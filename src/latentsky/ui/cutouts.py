"""Image cutouts at a tapped spectrum's sky position, shown beside the spectrum.

Two sources, tried in this order:

- a cutout store written by :func:`latentsky.archives.cutouts.fetch_cutouts`
  (``DIR/cutouts/`` of a results folder): the images of the row, matched by
  ``id`` when the store's index has that column, else by position;
- on demand: one hips2fits request per band at the row's ``ra``/``dec``
  through astroquery.hips2fits (:func:`latentsky.archives.cutouts.fetch_one`,
  so ``conf.hips2fits_url``, the offline flag and the local archive apply as
  everywhere else), cached for the session.

A band whose image is blank (the position is outside the survey) or could not
be fetched is left out; a row without a cutout in any band shows a one-line
message instead.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

DEFAULT_BANDS = ("SDSS-r", "FIRST", "UKIDSS-K")
"""Bands asked on demand: optical, radio and near-infrared surveys of :data:`latentsky.archives.cutouts.SURVEYS`."""

MATCH_ARCSEC = 1.0
"""A cutout store's target within this distance of a row is that row's."""


@dataclasses.dataclass
class Cutout:
    """One band's image around a position.

    Attributes
    ----------
    band : str
        Survey band, e.g. ``"FIRST"``.
    image : ndarray (H, W), float32
        Pixel values in the survey's unit (row 0 is the south edge, as FITS).
    pixel_scale : float
        Arcsec per pixel.
    """

    band: str
    image: np.ndarray
    pixel_scale: float


class Cutouts:
    """The cutouts of a table row, from a cutout store or fetched on demand.

    Parameters
    ----------
    store : path-like, optional
        A folder written by :func:`~latentsky.archives.cutouts.fetch_cutouts`.
    bands : sequence of str
        Bands fetched on demand (keys of :data:`~latentsky.archives.cutouts.SURVEYS`); empty: none.
    size : int
        Width and height of on-demand cutouts, pixels.
    """

    def __init__(self, store=None, *, bands=DEFAULT_BANDS, size: int = 64):
        from latentsky.archives.cutouts import SURVEYS

        unknown = [b for b in bands if b not in SURVEYS]
        if unknown:
            raise ValueError(f"bands: unknown band {unknown[0]!r}; known: {', '.join(sorted(SURVEYS))}")
        self.bands, self.size = tuple(bands), int(size)
        self._cache: dict[tuple, list[Cutout]] = {}
        self._lock = threading.Lock()
        self._images = self._index = None
        if store is not None:
            from latentsky.archives.cutouts import open_cutouts

            self._images, self._index = open_cutouts(Path(store))
            self._store_bands = [c[len("status_") :] for c in self._index.columns if c.startswith("status_")]

    def _from_store(self, row: pd.Series) -> list[Cutout] | None:
        from latentsky.archives.cutouts import SURVEYS

        if self._index is None:
            return None
        idx = self._index
        if "id" in idx.columns and "id" in row.index:
            hits = np.flatnonzero(idx["id"].astype(str).to_numpy() == str(row["id"]))
        else:
            ra, dec = np.radians(idx["ra"].to_numpy()), np.radians(idx["dec"].to_numpy())
            r0, d0 = np.radians(float(row["ra"])), np.radians(float(row["dec"]))
            sep = (
                np.degrees(
                    np.arccos(np.clip(np.sin(dec) * np.sin(d0) + np.cos(dec) * np.cos(d0) * np.cos(ra - r0), -1, 1))
                )
                * 3600
            )
            hits = np.flatnonzero(sep <= MATCH_ARCSEC)[:1]
        if len(hits) == 0:
            return None
        i = int(hits[0])
        cube = np.asarray(self._images[i])
        scales = dict(self._images.attrs.get("pixel_scale_arcsec", {}))  # as the store was made
        return [
            Cutout(b, cube[k], float(scales.get(b, SURVEYS.get(b, ("", 1.0))[1])))
            for k, b in enumerate(self._store_bands)
            if idx[f"status_{b}"].iloc[i] == "ok"
        ]

    def _fetch(self, ra: float, dec: float) -> list[Cutout]:
        from latentsky.archives.cutouts import SURVEYS, fetch_one

        key = (round(ra, 7), round(dec, 7))
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        out = []
        for band in self.bands:
            hips, scale = SURVEYS[band]
            status, image, error = fetch_one(hips, ra, dec, self.size, scale)
            if status == "ok":
                out.append(Cutout(band, image, scale))
            elif status == "error":
                log.info("cutout %s at (%.5f, %.5f): %s", band, ra, dec, error)
        with self._lock:
            self._cache[key] = out
        return out

    def get(self, row: pd.Series) -> list[Cutout]:
        """The row's cutouts (empty when it has no position or no survey covers it). May use the network."""
        stored = self._from_store(row)
        if stored is not None:
            return stored
        if not self.bands or not {"ra", "dec"} <= set(row.index) or not (pd.notna(row["ra"]) and pd.notna(row["dec"])):
            return []
        return self._fetch(float(row["ra"]), float(row["dec"]))
