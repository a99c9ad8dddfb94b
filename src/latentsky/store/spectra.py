"""The spectrum store: one Parquet catalog plus Zarr arrays on a common grid.

Layout of a store directory::

    STORE/catalog.parquet   one row per spectrum (``row`` is its index in the arrays)
    STORE/spectra.zarr/     wave (n_pixels,) Angstrom (vacuum), flux and weight (n_spectra, n_pixels)
    STORE/lineage.json      parameters, input hashes and code version (see lineage.py)

``flux`` is float32, continuum-normalised as recorded in the lineage;
``weight`` is float32 inverse variance of that normalised flux, 0 where a
pixel is masked, a gap, or off the spectrum's wavelength coverage.
Arrays are chunked by rows so that every later step can stream them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from latentsky.exceptions import StoreError
from latentsky.store.lineage import read_lineage
from latentsky.store.output import output_directory

CATALOG_FILE = "catalog.parquet"
ARRAYS_DIR = "spectra.zarr"
DEFAULT_CHUNK_ROWS = 256


def atomic_directory(dest: Path, kind: str | None = None, *, inputs: Iterable = ()):
    """Build output folder ``dest`` under a temporary name and move it into place when complete.

    A context manager yielding the temporary path; see
    :func:`latentsky.store.output.output_directory` (same parameters): ``dest``
    is replaced only when it is a latentsky output of the same kind, by one
    run at a time; on any error the temporary folder is removed and ``dest``
    is left as it was.
    """
    return output_directory(dest, kind, inputs=inputs)


class SpectrumStoreWriter:
    """Append resampled spectra to a new store, one chunk of rows at a time.

    Parameters
    ----------
    path : Path
        Directory to write (normally the temporary one of :func:`atomic_directory`).
    wave : ndarray, Angstrom
        The common wavelength grid.
    capacity : int
        Upper bound on the number of spectra; the arrays are trimmed on close.
    chunk_rows : int
        Spectra per Zarr chunk.
    """

    def __init__(self, path: Path, wave: np.ndarray, capacity: int, *, chunk_rows: int = DEFAULT_CHUNK_ROWS):
        import zarr

        self.path = Path(path)
        self.chunk_rows = chunk_rows
        n_pix = len(wave)
        group = zarr.open_group(self.path / ARRAYS_DIR, mode="w")
        group.create_array("wave", data=np.asarray(wave, dtype="f8"), chunks=(n_pix,))
        shape = (max(capacity, 1), n_pix)
        self._flux = group.create_array("flux", shape=shape, chunks=(chunk_rows, n_pix), dtype="f4", fill_value=0.0)
        self._weight = group.create_array("weight", shape=shape, chunks=(chunk_rows, n_pix), dtype="f4", fill_value=0.0)
        self._group = group
        self._buf_flux: list[np.ndarray] = []
        self._buf_weight: list[np.ndarray] = []
        self._written = 0

    @property
    def n_rows(self) -> int:
        """Spectra appended so far."""
        return self._written + len(self._buf_flux)

    def append(self, flux: np.ndarray, weight: np.ndarray) -> int:
        """Add one spectrum on the grid; returns its row number."""
        row = self.n_rows
        self._buf_flux.append(np.asarray(flux, dtype="f4"))
        self._buf_weight.append(np.asarray(weight, dtype="f4"))
        if len(self._buf_flux) == self.chunk_rows:
            self._flush()
        return row

    def append_block(self, flux: np.ndarray, weight: np.ndarray) -> int:
        """Add several spectra (rows of ``flux`` and ``weight``); returns the first one's row number."""
        row = self.n_rows
        flux, weight = np.asarray(flux, dtype="f4"), np.asarray(weight, dtype="f4")
        if flux.shape != weight.shape or flux.ndim != 2:
            raise StoreError(f"{self.path}: flux {flux.shape} and weight {weight.shape} must be equal (n, n_pixels)")
        if not self._buf_flux and len(flux) == self.chunk_rows:
            self._buf_flux, self._buf_weight = list(flux), list(weight)  # one whole chunk: written as it is
            self._flush()
            return row
        for f, w in zip(flux, weight):
            self.append(f, w)
        return row

    def _flush(self) -> None:
        if not self._buf_flux:
            return
        start, stop = self._written, self._written + len(self._buf_flux)
        if stop > self._flux.shape[0]:
            raise StoreError(f"{self.path}: more spectra than the capacity {self._flux.shape[0]}")
        self._flux[start:stop] = np.stack(self._buf_flux)
        self._weight[start:stop] = np.stack(self._buf_weight)
        self._written = stop
        self._buf_flux.clear()
        self._buf_weight.clear()

    def close(self, catalog: pd.DataFrame, attrs: dict | None = None) -> None:
        """Write the remaining rows, trim the arrays and write the catalog.

        ``catalog`` must have one row per appended spectrum, in row order.
        """
        self._flush()
        if len(catalog) != self._written:
            raise StoreError(f"{self.path}: catalog has {len(catalog)} rows for {self._written} spectra")
        n_pix = self._flux.shape[1]
        self._flux.resize((self._written, n_pix))
        self._weight.resize((self._written, n_pix))
        if attrs:
            self._group.attrs.update(attrs)
        catalog = catalog.reset_index(drop=True).copy()
        catalog["row"] = np.arange(len(catalog), dtype="i8")
        catalog.to_parquet(self.path / CATALOG_FILE, index=False)


class SpectrumStore:
    """Read access to a spectrum store written by ``latentsky ingest``.

    Parameters
    ----------
    path : path-like
        The store directory.

    Raises
    ------
    StoreError
        When the directory is not a complete store.
    """

    def __init__(self, path):
        import zarr

        self.path = Path(path)
        if not self.path.is_dir():
            raise StoreError(f"{self.path}: no such spectrum store")
        for part in (CATALOG_FILE, ARRAYS_DIR):
            if not (self.path / part).exists():
                raise StoreError(f"{self.path}: not a latentsky spectrum store (missing {part})")
        self._group = zarr.open_group(self.path / ARRAYS_DIR, mode="r")
        self._catalog: pd.DataFrame | None = None

    @property
    def catalog(self) -> pd.DataFrame:
        """One row per spectrum; ``row`` indexes the arrays."""
        if self._catalog is None:
            self._catalog = pd.read_parquet(self.path / CATALOG_FILE)
        return self._catalog

    def catalog_columns(self, columns) -> pd.DataFrame:
        """Those of ``columns`` the catalog has, read alone (at 10^6 spectra the whole catalog is ~300 MB)."""
        if self._catalog is not None:
            return self._catalog[[c for c in columns if c in self._catalog]]
        import pyarrow.parquet as pq

        file = self.path / CATALOG_FILE
        present = set(pq.ParquetFile(file).schema_arrow.names)
        return pd.read_parquet(file, columns=[c for c in columns if c in present])

    @property
    def wave(self) -> np.ndarray:
        """The common grid, vacuum wavelength in Angstrom."""
        return self._group["wave"][:]

    @property
    def flux(self):
        """Normalised flux, a Zarr array (n_spectra, n_pixels) float32."""
        return self._group["flux"]

    @property
    def weight(self):
        """Inverse variance of ``flux``, 0 where masked; Zarr array like ``flux``."""
        return self._group["weight"]

    @property
    def attrs(self) -> dict:
        """Grid and normalisation settings recorded at ingest."""
        return dict(self._group.attrs)

    @property
    def lineage(self) -> dict | None:
        """The lineage record (see :mod:`latentsky.store.lineage`)."""
        return read_lineage(self.path)

    @property
    def chunk_rows(self) -> int:
        """Spectra per stored chunk: the natural block size for streaming."""
        return self.flux.chunks[0]

    def __len__(self) -> int:
        return self.flux.shape[0]
