"""Output folders: which folders latentsky may replace, one writer each, temporary names tied to the run.

Every folder latentsky writes (a spectrum store, embeddings, a synthetic
table, a pipeline folder) carries a marker file, :data:`MARKER`, saying which
kind of output it is.  The rules, applied by every writer:

* A folder is replaced (or written into) only when it is absent, empty, or
  recognisably a latentsky output of the same kind: its marker says so, or,
  for folders written before markers existed, its ``lineage.json`` does.
  Anything else is refused with :class:`OutputRefused`, naming the folder;
  nothing is moved or deleted.
* An input of the run is never its output, and no input lies inside the
  output folder (replacing the folder would delete it).
* One writer per output: a run holds an OS file lock (``flock``) on
  ``.NAME.lock`` beside the output ``NAME`` for as long as it writes; a
  second run is refused with :class:`OutputBusy`, naming the process that
  holds it.  The OS releases the lock when its process dies, even by
  ``kill -9``, so there is no stale lock to clean up.
* Temporary folders are named after the run (``.NAME.tmp-<pid>-<random>``,
  ``.NAME.old-...``, ``.NAME.partial-...``).  Whoever takes the lock next
  removes those a killed run left (their names say they are latentsky's),
  and a resumable run adopts a matching ``.NAME.partial-*`` folder (see
  :mod:`latentsky.store.partial`).
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import json
import logging
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Iterable, Iterator

from latentsky.exceptions import StoreError

try:
    import fcntl
except ImportError:  # Windows: no flock; one run at a time is then the user's business
    fcntl = None

log = logging.getLogger(__name__)

MARKER = ".latentsky-output.json"
"""The file in every output folder that says which kind of latentsky output it is."""

KIND_OF_STEP = {"ingest": "spectra", "embed": "embeddings", "sample": "embeddings", "synth": "spectra"}
"""The output kind of a folder written before markers existed, from its ``lineage.json`` ``step``."""

TEMPORARY_ROLES = ("tmp", "old", "partial")
"""Temporary folders beside an output ``NAME`` are ``.NAME.<role>-<run>``."""


class OutputRefused(StoreError):
    """A folder cannot be (re)written as an output; the message names it and says why."""


class OutputBusy(OutputRefused):
    """Another run is writing the same output; the message names the folder and that run's process."""


def run_tag() -> str:
    """``<pid>-<8 hex digits>``: names the temporary folders of this run."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def temporary_path(dest: Path, role: str) -> Path:
    """A new temporary folder name beside ``dest`` for ``role`` (one of :data:`TEMPORARY_ROLES`)."""
    dest = Path(dest)
    return dest.with_name(f".{dest.name}.{role}-{run_tag()}")


def lock_path(dest: Path) -> Path:
    """The lock file of output ``dest``: ``.NAME.lock`` beside it."""
    dest = Path(dest)
    return dest.with_name(f".{dest.name}.lock")


# ------------------------------------------------------------------ markers
def write_marker(folder: Path, kind: str | None) -> None:
    """Record in ``folder`` that it is a latentsky output of ``kind``."""
    from latentsky.store.lineage import code_version

    record = {
        "kind": kind,
        "latentsky": code_version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    path = Path(folder) / MARKER
    tmp = path.with_name(f"{MARKER}.{run_tag()}")
    tmp.write_text(json.dumps(record, sort_keys=True))
    os.replace(tmp, path)  # a new file: a marker hard-linked from another folder is never changed


def _marker_kind(folder: Path) -> tuple[bool, str | None]:
    """(has a readable marker, its kind)."""
    try:
        record = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False, None
    return isinstance(record, dict), record.get("kind") if isinstance(record, dict) else None


def _lineage_kind(folder: Path) -> str | None:
    from latentsky.store.lineage import read_lineage

    try:
        record = read_lineage(folder)
    except StoreError:
        return None
    return KIND_OF_STEP.get(record.get("step")) if isinstance(record, dict) else None


def output_kind(folder: Path) -> str | None:
    """The kind of latentsky output ``folder`` is, or None when it is not recognisably one.

    Its marker decides; a folder without one (written before markers
    existed) is recognised by its ``lineage.json`` (:data:`KIND_OF_STEP`) or,
    for a pipeline folder, by its ``pipeline.json`` of finished stages.
    """
    folder = Path(folder)
    marked, kind = _marker_kind(folder)
    if marked and kind:
        return kind
    return _lineage_kind(folder) or _legacy_folder_kind(folder)


def _legacy_folder_kind(folder: Path) -> str | None:
    """``"pipeline"`` for a pipeline folder (its ``pipeline.json`` of finished stages), ``"synth"`` for
    one of ``latentsky synth`` (``synth.json`` beside ``latent.parquet``), written before markers existed."""
    try:
        state = json.loads((folder / "pipeline.json").read_text())
    except (OSError, ValueError):
        state = None
    if isinstance(state, dict) and state and set(state) <= {"embed", "train", "encode"}:
        return "pipeline"
    if (folder / "synth.json").is_file() and (folder / "latent.parquet").is_file():
        return "synth"
    return None


def _is_empty(folder: Path) -> bool:
    try:
        with os.scandir(folder) as entries:
            return next(entries, None) is None
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output(dest, kind: str | None = None, *, inputs: Iterable = (), in_place: bool = False) -> Path:
    """Refuse ``dest`` as an output unless it may be (re)written; returns ``dest`` as a Path.

    Parameters
    ----------
    dest : path-like
        The output folder.
    kind : str, optional
        The kind of output to write (``"spectra"``, ``"embeddings"``,
        ``"synth"``, ``"pipeline"``...).  None: any latentsky output (the kind
        is checked when the new folder is moved into place).
    inputs : iterable of path-like
        What the run reads: none may be ``dest`` or lie inside it.
    in_place : bool
        The run writes into ``dest`` instead of replacing it (a pipeline
        folder): an input may then lie inside it (an earlier run's store).

    Raises
    ------
    OutputRefused
        Naming ``dest`` and the reason.
    """
    dest = Path(dest)
    real = dest.resolve()
    for source in inputs:
        source = Path(source).resolve()
        if source == real:
            raise OutputRefused(
                f"{dest}: is an input of this run; an input folder is never an output folder "
                "(choose another output folder)"
            )
        if not in_place and _inside(source, real):
            raise OutputRefused(
                f"{dest}: holds {source}, an input of this run; writing the output there would "
                "delete it (choose another output folder)"
            )
    if dest.is_symlink():
        raise OutputRefused(f"{dest}: is a symbolic link; give the folder itself (latentsky does not replace links)")
    if not dest.exists():
        return dest
    if not dest.is_dir():
        raise OutputRefused(f"{dest}: is a file, not an output folder; choose another name")
    if _is_empty(dest):
        return dest
    found = output_kind(dest)
    if found is None:
        raise OutputRefused(
            f"{dest}: not a folder latentsky wrote (no {MARKER} or lineage.json); latentsky "
            "replaces only its own outputs: choose a new or empty folder, or remove this one yourself"
        )
    if kind is not None and found != kind:
        raise OutputRefused(f"{dest}: holds latentsky {found}, not {kind}; choose another output folder")
    return dest


# -------------------------------------------------------------------- locks
class OutputLock:
    """The one-writer lock of output ``dest``: an OS file lock on ``.NAME.lock`` beside it.

    Use as a context manager, or :meth:`acquire` / :meth:`release`.  The lock
    file is removed on release; the OS releases the lock of a process that
    dies.  Locks are per open file, so two writers in one process (two app
    sessions, two threads) exclude each other too.

    Raises
    ------
    OutputBusy
        From :meth:`acquire`, when another run holds the lock.
    """

    def __init__(self, dest):
        self.dest = Path(dest)
        self.path = lock_path(self.dest)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "OutputLock":
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return self
        for attempt in range(3):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                if holder == os.getpid() and attempt == 0:
                    # held by this process: perhaps by an abandoned writer (an exception's traceback
                    # kept it alive in a reference cycle); collecting it closes its lock file
                    gc.collect()
                    continue
                raise OutputBusy(
                    f"{self.dest}: another latentsky run (process {holder or '?'}) is writing this "
                    "output; wait for it to finish or stop it"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # released and removed by its holder between our open and our lock: again
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            self._fd = fd
            return self
        raise OutputBusy(f"{self.dest}: could not take the lock {self.path}")

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # while still held: a waiting run then takes a new file (see acquire)
        os.close(fd)

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        if self._fd is not None:
            with contextlib.suppress(Exception):
                self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


# ------------------------------------------------------ temporary folders
def temporaries(dest: Path, roles: Iterable[str] = TEMPORARY_ROLES) -> list[Path]:
    """Temporary folders beside ``dest`` of ``roles`` (``.NAME.<role>`` or ``.NAME.<role>-<run>``)."""
    dest = Path(dest)
    prefixes = tuple(f".{dest.name}.{role}" for role in roles)
    try:
        with os.scandir(dest.parent) as entries:
            found = [
                Path(e.path)
                for e in entries
                if e.name.startswith(prefixes) and e.is_dir(follow_symlinks=False) and _role_suffix_ok(e.name, prefixes)
            ]
    except OSError:
        return []
    return sorted(found)


def _role_suffix_ok(name: str, prefixes: tuple[str, ...]) -> bool:
    for prefix in prefixes:
        if name.startswith(prefix):
            rest = name[len(prefix) :]
            return rest == "" or rest.startswith("-")
    return False


_RUN_NAME = re.compile(r"\.(tmp|old|partial)-\d+-[0-9a-f]{8}$")


def is_ours(folder: Path) -> bool:
    """Whether a temporary folder is recognisably latentsky's: named after a run (``-<pid>-<8 hex>``), or
    holding its marker, lineage or partial state (older versions' fixed names), or empty."""
    folder = Path(folder)
    return (
        bool(_RUN_NAME.search(folder.name))
        or _marker_kind(folder)[0]
        or (folder / "lineage.json").is_file()
        or (folder / ".partial.json").is_file()
        or _is_empty(folder)
    )


def remove_stale(dest: Path, roles: Iterable[str] = ("tmp", "old")) -> list[Path]:
    """Remove the temporary folders of ``roles`` a dead run left beside ``dest``; call with the lock held.

    Only folders that are recognisably latentsky's are removed; returns them.
    """
    removed = []
    for folder in temporaries(dest, roles):
        if is_ours(folder):
            log.info("removing %s, left by an interrupted run", folder)
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        else:
            log.warning("%s looks like a temporary folder of latentsky but is not recognisably one: left alone", folder)
    return removed


def new_temporary(dest: Path, kind: str | None, role: str = "tmp") -> Path:
    """Make a temporary folder for output ``dest``, marked when ``kind`` is known (else at :func:`put_in_place`)."""
    tmp = temporary_path(dest, role)
    tmp.mkdir()
    if kind is not None:
        write_marker(tmp, kind)
    return tmp


def put_in_place(tmp: Path, dest: Path, kind: str | None = None) -> Path:
    """Move the complete folder ``tmp`` to ``dest``, replacing what :func:`check_output` allows; lock held.

    The kind is ``kind``, else the one the folder's lineage names.  An
    existing ``dest`` is checked again (something may have been put there
    since the run started), moved aside, and removed once ``tmp`` is in place,
    so ``dest`` is only ever the old complete folder, absent for an instant, or
    the new one.

    Raises
    ------
    OutputRefused
        When ``dest`` may not be replaced (``tmp`` is left for the caller).
    """
    tmp, dest = Path(tmp), Path(dest)
    kind = kind or _lineage_kind(tmp) or "output"
    if _marker_kind(tmp)[1] != kind:
        write_marker(tmp, kind)
    check_output(dest, kind)
    old = None
    if dest.exists():
        old = temporary_path(dest, "old")
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dest


@contextlib.contextmanager
def output_directory(dest, kind: str | None = None, *, inputs: Iterable = ()) -> Iterator[Path]:
    """Build output folder ``dest`` under a temporary name and move it into place when complete.

    Checks ``dest`` (:func:`check_output`), takes its lock (:class:`OutputLock`),
    removes what a killed run left, and yields a new marked temporary folder
    ``.NAME.tmp-<pid>-<random>``.  On success the folder replaces ``dest``
    (:func:`put_in_place`); on any error (Ctrl-C included) it is removed and
    ``dest`` is left as it was.

    Raises
    ------
    OutputRefused, OutputBusy
        Before anything is written.
    """
    dest = Path(dest)
    inputs = list(inputs)
    check_output(dest, kind, inputs=inputs)
    with OutputLock(dest):
        check_output(dest, kind, inputs=inputs)  # again, now that no other run can change it
        remove_stale(dest)
        tmp = new_temporary(dest, kind)
        try:
            yield tmp
            put_in_place(tmp, dest, kind)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def claim_folder(dest, kind: str, *, inputs: Iterable = ()) -> Path:
    """Check output folder ``dest`` for a run that writes into it in place, create it and mark it ``kind``.

    For a command that fills a folder with several steps' outputs (the demo);
    the writer of each step takes its own lock.

    Raises
    ------
    OutputRefused
        See :func:`check_output` (with ``in_place=True``).
    """
    dest = Path(dest)
    check_output(dest, kind, inputs=inputs, in_place=True)
    dest.mkdir(parents=True, exist_ok=True)
    if _marker_kind(dest)[1] != kind:
        write_marker(dest, kind)
    return dest


@contextlib.contextmanager
def output_folder(dest, kind: str, *, inputs: Iterable = ()) -> Iterator[Path]:
    """Hold output folder ``dest`` for a run that writes into it in place (the pipeline's folder).

    Checks ``dest`` (:func:`check_output`), takes its lock, creates it with its
    marker when new (:func:`claim_folder`), and yields it; the lock is
    released at the end.
    """
    dest = Path(dest)
    inputs = list(inputs)
    check_output(dest, kind, inputs=inputs, in_place=True)
    with OutputLock(dest):
        yield claim_folder(dest, kind, inputs=inputs)
