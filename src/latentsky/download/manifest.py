"""The download manifest: one SQLite row per item, the truth about what is done.

The manifest survives crashes, kernel restarts and ``kill -9``: SQLite in WAL
mode commits each state change, and a file is only marked ``done`` after it
has been verified and renamed into place.  Enqueueing an item twice is
harmless; enqueueing a changed item (new URL, size or checksum) updates it.

States
------
``pending``  to fetch (new, or interrupted: a ``.part`` file may hold its first bytes)
``done``     verified and in place; ``sha256`` and ``bytes`` describe the file
``failed``   gave up in the last run (``last_error`` says why); the next run retries it

Examples
--------
>>> import tempfile, pathlib
>>> from latentsky.download.items import DownloadItem
>>> m = Manifest(pathlib.Path(tempfile.mkdtemp()) / "manifest.sqlite")
>>> item = DownloadItem("a", "http://127.0.0.1:1/a.fits", "/tmp/a.fits")
>>> m.enqueue([item, item])
1
>>> m.counts()
{'pending': 1}
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable

from latentsky.download.items import DownloadItem
from latentsky.exceptions import StoreError

try:
    import fcntl
except ImportError:  # Windows: no flock; one run at a time is then the user's business
    fcntl = None

MANIFEST_NAME = ".latentsky-manifest.sqlite"
"""File name of the manifest kept in a destination folder."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    key        TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    dest       TEXT NOT NULL,
    size       INTEGER,            -- expected size, bytes (NULL: unknown)
    expected_sha256 TEXT,          -- expected digest (NULL: unknown)
    kind       TEXT NOT NULL DEFAULT 'any',
    auth       TEXT,               -- NAME of the credential, never its value
    state      TEXT NOT NULL DEFAULT 'pending',
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    sha256     TEXT,               -- digest of the verified file
    bytes      INTEGER,            -- size of the verified file, bytes
    etag       TEXT,               -- ETag of the partial file's source, for If-Range
    updated    REAL                -- Unix time of the last change, s
);
CREATE INDEX IF NOT EXISTS items_state ON items(state);
"""


class ManifestWriteError(StoreError):
    """The manifest could not record a change (disk full, I/O error); the message names it.

    The change is lost, not half-made: the item keeps its previous state, and
    the next run finds the file on disk (or its ``.part``) and goes on.
    """


class Manifest:
    """A SQLite manifest of download items.

    Parameters
    ----------
    path : path-like
        The database file, when it ends in ``.sqlite``, ``.sqlite3`` or ``.db``
        (created with its folder when missing); anything else is a folder (the
        destination folder, usually), meaning ``folder / MANIFEST_NAME``.

    Notes
    -----
    One connection, shared by the manager's threads behind a lock: the
    writes are tiny and serialising them is cheaper than SQLite's busy waits.
    """

    def __init__(self, path: str | Path):
        path = Path(path)
        if path.is_dir() or path.suffix.lower() not in (".sqlite", ".sqlite3", ".db"):
            path = path / MANIFEST_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across process crashes in WAL mode (only a power cut can lose
            # the last commits), and an order of magnitude faster than FULL.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{path}: not a usable download manifest ({err})") from err

    @classmethod
    def for_folder(cls, folder: str | Path) -> "Manifest":
        """The manifest kept in destination folder ``folder``."""
        return cls(Path(folder) / MANIFEST_NAME)

    @staticmethod
    def exists_in(folder: str | Path) -> bool:
        """Whether ``folder`` holds a manifest."""
        return (Path(folder) / MANIFEST_NAME).is_file()

    @contextlib.contextmanager
    def exclusive(self):
        """Hold the manifest's run lock: one download at a time per manifest.

        Two runs over one manifest (two kernels, a cell run twice) would write
        the same ``.part`` files.  The lock is an OS file lock (``flock``) on
        ``<manifest>.lock``, released by the OS when the process dies, even by
        ``kill -9``: no stale lock to clean up.

        Raises
        ------
        StoreError
            When another run holds it; the message names the manifest and that
            run's process id.
        """
        lock_path = self.path.with_name(self.path.name + ".lock")
        fh = open(lock_path, "a+")
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    fh.seek(0)
                    holder = fh.read().strip() or "?"
                    raise StoreError(
                        f"{self.path}: another download is running with this manifest "
                        f"(process {holder}); wait for it or stop it"
                    ) from None
            try:  # who holds it, for the message of a second run; on a full disk it stays unsaid
                os.ftruncate(fh.fileno(), 0)
                os.pwrite(fh.fileno(), str(os.getpid()).encode(), 0)
            except OSError:
                pass
            yield self
        finally:
            fh.close()  # closing releases the flock

    def close(self) -> None:
        """Close the database (further calls fail)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> "Manifest":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Manifest({str(self.path)!r})"

    def _exec(self, sql: str, args=()) -> sqlite3.Cursor:
        """Run one writing statement; a failure is a :class:`ManifestWriteError`."""
        with self._lock, self._writing():
            return self._db.execute(sql, args)

    @contextlib.contextmanager
    def _writing(self):
        try:
            yield
        except sqlite3.Error as err:
            # SQLite says "database or disk is full"; the disk's own words name what the user must fix
            reason = "No space left on device" if getattr(err, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL else err
            raise ManifestWriteError(f"{self.path}: cannot update the download manifest ({reason})") from None

    # ----------------------------------------------------------------- writes
    def enqueue(self, items: Iterable[DownloadItem]) -> int:
        """Add items; returns how many keys were new.

        An item already present keeps its state, unless its URL, destination,
        expected size or checksum changed: then it is updated and, if it was
        done, fetched again.
        """
        now = time.time()
        rows = [(i.key, i.url, str(i.dest), i.size, i.sha256, i.kind, i.auth, now) for i in items]
        with self._lock, self._writing():
            before = self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    """INSERT INTO items (key, url, dest, size, expected_sha256, kind, auth, updated)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                       ON CONFLICT(key) DO UPDATE SET
                         state = CASE WHEN items.dest IS NOT excluded.dest
                                        OR items.size IS NOT excluded.size
                                        OR items.expected_sha256 IS NOT excluded.expected_sha256
                                      THEN 'pending' ELSE items.state END,
                         url = excluded.url, dest = excluded.dest, size = excluded.size,
                         expected_sha256 = excluded.expected_sha256, kind = excluded.kind,
                         auth = excluded.auth,
                         updated = CASE WHEN items.url IS excluded.url AND items.dest IS excluded.dest
                                         AND items.size IS excluded.size
                                         AND items.expected_sha256 IS excluded.expected_sha256
                                         AND items.kind IS excluded.kind AND items.auth IS excluded.auth
                                        THEN items.updated ELSE excluded.updated END""",
                    rows,
                )
                self._db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
            after = self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        return after - before

    def start_attempt(self, key: str, etag: str | None = None, *, attempts: int = 1) -> None:
        """Count ``attempts`` more attempts at ``key`` and remember the source's ETag (for ``If-Range``)."""
        self._exec(
            "UPDATE items SET attempts = attempts + ?, etag = COALESCE(?, etag), updated = ? WHERE key = ?",
            (int(attempts), etag, time.time(), key),
        )

    def mark_done(self, key: str, sha256: str, nbytes: int, *, attempts: int = 0) -> None:
        """Record that ``key`` is verified and in place (and ``attempts`` more attempts)."""
        self._exec(
            "UPDATE items SET state = 'done', sha256 = ?, bytes = ?, last_error = NULL, etag = NULL, "
            "attempts = attempts + ?, updated = ? WHERE key = ?",
            (sha256, int(nbytes), int(attempts), time.time(), key),
        )

    def mark_error(self, key: str, error: str, *, failed: bool, attempts: int = 0) -> None:
        """Record an error (and ``attempts`` more attempts); ``failed=True`` gives up on ``key`` for this run."""
        self._exec(
            "UPDATE items SET state = CASE WHEN ? THEN 'failed' ELSE state END, last_error = ?, "
            "attempts = attempts + ?, updated = ? WHERE key = ?",
            (bool(failed), error, int(attempts), time.time(), key),
        )

    def mark_pending(self, keys: Iterable[str]) -> None:
        """Put ``keys`` back to ``pending`` (e.g. a done file that disappeared)."""
        with self._lock, self._writing():
            self._db.executemany(
                "UPDATE items SET state = 'pending', updated = ? WHERE key = ?", [(time.time(), k) for k in keys]
            )

    # ------------------------------------------------------------------ reads
    def get(self, key: str) -> dict | None:
        """The row of ``key`` as a dict, or None."""
        with self._lock:
            cur = self._db.execute("SELECT * FROM items WHERE key = ?", (key,))
            row = cur.fetchone()
            return None if row is None else dict(zip([c[0] for c in cur.description], row))

    def rows(self, state: str | None = None) -> list[dict]:
        """All rows (or those in ``state``), as dicts, in insertion order."""
        sql = "SELECT * FROM items" + (" WHERE state = ?" if state else "") + " ORDER BY rowid"
        with self._lock:
            cur = self._db.execute(sql, (state,) if state else ())
            names = [c[0] for c in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]

    def items(self, state: str | None = None) -> list[DownloadItem]:
        """The rows as :class:`DownloadItem` objects."""
        return [_item(r) for r in self.rows(state)]

    def counts(self) -> dict[str, int]:
        """Number of items in each state present."""
        with self._lock:
            return dict(self._db.execute("SELECT state, COUNT(*) FROM items GROUP BY state ORDER BY state"))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0]


def _item(row: dict) -> DownloadItem:
    return DownloadItem(
        row["key"], row["url"], Path(row["dest"]), row["size"], row["expected_sha256"], row["kind"], row["auth"]
    )
