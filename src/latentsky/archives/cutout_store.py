"""The folder a cutout run writes: pixels in Zarr, targets in Parquet, progress in SQLite.

``<dest>/``:

- ``cutouts.zarr``, array ``images``: float32, N targets x B bands x H x W,
  chunked by blocks of targets, NaN where there is no image.  A block's chunk
  is written when every cell of the block asked in a run has its answer
  (zarr writes a chunk atomically, through a temporary file);
- ``index.parquet``: one row per target (``row, ra, dec`` and the input
  table's other columns), written once, when the store is made;
- ``progress.sqlite``: the progress record.  Table ``cells`` holds one row
  per (target, band) cell that has an answer: status, attempts, coverage,
  error; table ``pending`` holds the pixels of answered cells whose block is
  not written yet.  Both are written per batch of answers in one
  transaction, so recording costs the same for every cell however large the
  run, and a ``kill -9`` at any moment loses at most the answers not yet
  recorded: a rerun asks for those only.

One run at a time per folder: an OS lock (``flock``) on
``progress.sqlite.lock``, released by the OS even when the process is killed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
from pathlib import Path

import numpy as np

from latentsky.exceptions import LatentskyError, StoreError

try:
    import fcntl
except ImportError:  # Windows: no run lock
    fcntl = None

ZARR_NAME = "cutouts.zarr"
INDEX_NAME = "index.parquet"
PROGRESS_NAME = "progress.sqlite"

STATUSES = ("pending", "ok", "off_footprint", "error")
"""Cell statuses; their position is the code stored in ``progress.sqlite``."""
PENDING, OK, OFF, ERROR = range(4)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cells (row INTEGER NOT NULL, band INTEGER NOT NULL, status INTEGER NOT NULL,
    attempts INTEGER NOT NULL, retry INTEGER NOT NULL, coverage REAL NOT NULL, error TEXT NOT NULL,
    PRIMARY KEY (row, band)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (row INTEGER NOT NULL, band INTEGER NOT NULL, pixels BLOB NOT NULL,
    PRIMARY KEY (row, band)) WITHOUT ROWID;
"""


def coordinates_digest(ra: np.ndarray, dec: np.ndarray) -> str:
    """A digest of the target positions (to the nano-degree): a folder is resumed only for the same targets."""
    grid = np.round(np.stack([np.asarray(ra, float), np.asarray(dec, float)]) * 1e9).astype(np.int64)
    return hashlib.sha256(grid.tobytes()).hexdigest()


class CutoutStore:
    """A cutout folder, open for reading or for one run.

    Use :meth:`create_or_open` to start or resume a run and :meth:`open` to read.

    Attributes
    ----------
    path : Path
    images : zarr.Array
        N x B x H x W.
    settings : dict
        ``bands, size, hips, pixel_scale_arcsec, n, block, digest``.
    """

    def __init__(self, path: Path, images, db: sqlite3.Connection, settings: dict):
        self.path, self.images, self.db, self.settings = path, images, db, settings
        self.block = int(settings["block"])
        self._lock = None

    # ------------------------------------------------------------------ making and opening
    @classmethod
    def create_or_open(cls, dest: str | Path, targets, settings: dict) -> "CutoutStore":
        """The store in ``dest`` for these targets and settings: made if absent, else checked and resumed.

        Parameters
        ----------
        dest : path-like
            The folder (created if needed; other files in it are left alone).
        targets : pandas.DataFrame
            ``row, ra, dec`` and any other columns to keep, one row per target.
        settings : dict
            ``bands, size, hips, pixel_scale_arcsec, block`` (``n`` and
            ``digest`` are added).

        Raises
        ------
        LatentskyError
            When ``dest`` holds a store of other targets, bands or size.
        """
        import zarr

        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        settings = dict(settings, n=len(targets), digest=coordinates_digest(targets["ra"], targets["dec"]))
        db = _connect(dest / PROGRESS_NAME)
        stored = _settings(db)
        if stored is not None:
            same = {k: stored.get(k) for k in ("n", "digest", "bands", "size")} == {
                k: settings[k] for k in ("n", "digest", "bands", "size")
            }
            if not same:
                db.close()
                raise LatentskyError(
                    f"dest: {dest} holds cutouts of other targets, bands or size ({stored['n']} "
                    f"targets, bands {stored['bands']}, size {stored['size']}); choose another "
                    "folder"
                )
            return cls(dest, zarr.open_group(str(dest / ZARR_NAME), mode="r+")["images"], db, stored)
        if (dest / INDEX_NAME).exists() and not (dest / ZARR_NAME).exists():
            db.close()
            raise LatentskyError(
                f"dest: {dest} already holds an {INDEX_NAME} that is not a cutout store; choose another folder"
            )
        # a new store; the settings row, written last, says it is whole (an interrupted start is redone)
        tmp = dest / (INDEX_NAME + ".tmp")
        targets.to_parquet(tmp, index=False)
        os.replace(tmp, dest / INDEX_NAME)
        n, nb, size = len(targets), len(settings["bands"]), int(settings["size"])
        group = zarr.open_group(str(dest / ZARR_NAME), mode="a")
        images = group.create_array(
            name="images",
            shape=(n, nb, size, size),
            dtype="float32",
            fill_value=np.nan,
            chunks=(max(1, min(int(settings["block"]), n)), nb, size, size),
            overwrite=True,
        )
        images.attrs.update({k: settings[k] for k in ("bands", "size", "hips", "pixel_scale_arcsec", "n")})
        with db:
            db.execute("DELETE FROM cells")
            db.execute("DELETE FROM pending")
            db.execute("INSERT INTO settings VALUES ('store', ?)", (json.dumps(settings),))
        return cls(dest, images, db, settings)

    @classmethod
    def open(cls, dest: str | Path) -> "CutoutStore":
        """Open an existing store to read it.

        Raises
        ------
        LatentskyError
            When ``dest`` holds no (complete) cutout store.
        """
        import zarr

        dest = Path(dest)
        if not (dest / PROGRESS_NAME).exists() or not (dest / ZARR_NAME).exists():
            raise LatentskyError(f"{dest}: no cutout store ({ZARR_NAME}, {INDEX_NAME} and {PROGRESS_NAME}) here")
        db = _connect(dest / PROGRESS_NAME)
        settings = _settings(db)
        if settings is None:
            db.close()
            raise LatentskyError(f"{dest}: the cutout store was never finished being made; run the cutouts again")
        return cls(dest, zarr.open_group(str(dest / ZARR_NAME), mode="r")["images"], db, settings)

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def running(self):
        """Hold the folder's run lock (one run at a time).

        Raises
        ------
        StoreError
            When another process is running cutouts into the same folder.
        """
        path = self.path / (PROGRESS_NAME + ".lock")
        fh = open(path, "a+")
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise StoreError(
                        f"{self.path}: another cutout run is writing this folder; wait for it or stop it"
                    ) from None
            yield self
        finally:
            fh.close()

    # ------------------------------------------------------------------ reading
    @property
    def bands(self) -> list[str]:
        return list(self.settings["bands"])

    @property
    def n(self) -> int:
        return int(self.settings["n"])

    def state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(status, attempts, retry)``: N x B arrays of the status codes, attempts so far and retry flags."""
        shape = (self.n, len(self.bands))
        status, attempts = np.zeros(shape, np.int8), np.zeros(shape, np.int32)
        retry = np.ones(shape, bool)
        cursor = self.db.execute("SELECT row, band, status, attempts, retry FROM cells")
        while rows := cursor.fetchmany(65536):
            a = np.array(rows, dtype=np.int64)
            status[a[:, 0], a[:, 1]] = a[:, 2]
            attempts[a[:, 0], a[:, 1]] = a[:, 3]
            retry[a[:, 0], a[:, 1]] = a[:, 4].astype(bool)
        return status, attempts, retry

    def cells(self) -> dict[str, np.ndarray]:
        """Every recorded cell, ordered by (row, band): arrays ``row, band, status, attempts, coverage``.

        Read in slices into preallocated arrays: memory stays a few bytes per cell.
        """
        n = self.db.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
        out = {
            "row": np.zeros(n, np.int64),
            "band": np.zeros(n, np.int64),
            "status": np.zeros(n, np.int8),
            "attempts": np.zeros(n, np.int32),
            "coverage": np.zeros(n, np.float64),
        }
        cursor = self.db.execute("SELECT row, band, status, attempts, coverage FROM cells ORDER BY row, band")
        k = 0
        while rows := cursor.fetchmany(65536):
            a = np.array(rows, dtype=np.float64)  # integers this small are exact in float64
            for j, name in enumerate(("row", "band", "status", "attempts", "coverage")):
                out[name][k : k + len(a)] = a[:, j]
            k += len(a)
        return out

    def errors(self) -> dict[tuple[int, int], str]:
        """``{(row, band): error text}`` of the cells in error."""
        return {(r, b): e for r, b, e in self.db.execute(f"SELECT row, band, error FROM cells WHERE status = {ERROR}")}

    def targets(self):
        """``index.parquet``: one row per target."""
        import pandas as pd

        return pd.read_parquet(self.path / INDEX_NAME)

    # ------------------------------------------------------------------ writing
    def record(self, cells: list[tuple], pixels: list[tuple]) -> None:
        """Record answers in one transaction.

        Parameters
        ----------
        cells : list of tuple
            ``(row, band, status code, attempts, retry, coverage, error)``.
        pixels : list of tuple
            ``(row, band, float32 H x W array)`` of the ``ok`` cells among them.
        """
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO cells VALUES (?, ?, ?, ?, ?, ?, ?)", cells)
            self.db.executemany(
                "INSERT OR REPLACE INTO pending VALUES (?, ?, ?)",
                [(r, b, np.ascontiguousarray(a, np.float32).tobytes()) for r, b, a in pixels],
            )

    def block_rows(self, block: int) -> tuple[int, int]:
        """Rows ``[lo, hi)`` of a block."""
        lo = block * self.block
        return lo, min(self.n, lo + self.block)

    def load_block(self, block: int, stored: bool) -> np.ndarray:
        """A block's pixels to fill in: the chunk as written (``stored``) or blank, plus its pending pixels."""
        lo, hi = self.block_rows(block)
        size = int(self.settings["size"])
        data = (
            np.asarray(self.images[lo:hi], dtype=np.float32)
            if stored
            else np.full((hi - lo, len(self.bands), size, size), np.nan, dtype=np.float32)
        )
        for row, band, blob in self.db.execute(
            "SELECT row, band, pixels FROM pending WHERE row >= ? AND row < ?", (lo, hi)
        ):
            data[row - lo, band] = np.frombuffer(blob, dtype=np.float32).reshape(size, size)
        return data

    def write_block(self, block: int, data: np.ndarray) -> None:
        """Write a block's chunk, then forget its pending pixels (they are in the chunk now)."""
        lo, hi = self.block_rows(block)
        self.images[lo:hi] = data
        with self.db:
            self.db.execute("DELETE FROM pending WHERE row >= ? AND row < ?", (lo, hi))

    def pending_blocks(self) -> list[int]:
        """Blocks with recorded pixels not yet in their chunk (a run was killed before writing them)."""
        rows = self.db.execute("SELECT DISTINCT row / ? FROM pending", (self.block,)).fetchall()
        return sorted(int(r[0]) for r in rows)


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    # a commit reaches the operating system before it returns: a killed process loses nothing committed
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_SCHEMA)
    return db


def _settings(db: sqlite3.Connection) -> dict | None:
    row = db.execute("SELECT value FROM settings WHERE key = 'store'").fetchone()
    return json.loads(row[0]) if row else None
