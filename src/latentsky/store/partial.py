"""Outputs written chunk by chunk that survive an interruption and resume at the chunk.

A long step (embedding 10^6 spectra, encoding them) writes its output
directory ``DEST`` under a temporary name tied to the run,
``.DEST.partial-<pid>-<random>``, beside it, holding ``DEST``'s output lock
(:class:`~latentsky.store.output.OutputLock`) so no other run writes ``DEST``
meanwhile.  After each chunk's arrays are written, an empty marker file
``.chunks/<k>`` records that chunk ``k`` is complete; a run interrupted
anywhere (an exception, Ctrl-C, a killed process) leaves the partial directory
behind, and the next run with the same settings (the same ``key``) adopts it
(renames it after itself) and computes only the chunks without a marker;
partial directories of other settings are removed.  A chunk interrupted
half-way has no marker and is computed again from scratch.  When every chunk
is there the directory is moved into place as
:func:`~latentsky.store.output.put_in_place` does (only over an output of the
same kind), so ``DEST`` is only ever absent, the previous complete output, or
the new complete one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Iterable

from latentsky.store.output import (
    OutputLock,
    check_output,
    is_ours,
    put_in_place,
    remove_stale,
    temporaries,
    temporary_path,
    write_marker,
)

log = logging.getLogger(__name__)

STATE_FILE = ".partial.json"
MARKERS = ".chunks"


class PartialDirectory:
    """A resumable output directory (see the module docstring).

    Parameters
    ----------
    dest : path-like
        The final directory.
    key : str
        Identifies the settings and inputs of the run; a partial directory
        left by a run with another key is discarded.
    state : dict, optional
        JSON-serialisable facts a resumed run must reuse (e.g. the fitted
        embedder), written with the key; a resumed run gets the stored ones
        back in :attr:`state`.
    resume : bool
        False: always start afresh.
    kind : str, optional
        The kind of output (see :func:`~latentsky.store.output.check_output`);
        None: the kind its lineage names when it is committed.
    inputs : iterable of path-like
        What the run reads (never ``dest`` nor inside it).

    Attributes
    ----------
    path : Path
        The temporary directory to write into.
    resumed : bool
        Whether an earlier run's chunks are being reused.
    state : dict

    Raises
    ------
    OutputRefused
        ``dest`` is not an output latentsky may replace.
    OutputBusy
        Another run is writing ``dest``.

    Notes
    -----
    The output lock is held from construction to :meth:`commit`,
    :meth:`discard` or :meth:`close` (or the end of a ``with`` block).
    """

    def __init__(
        self,
        dest,
        key: str,
        *,
        state: dict | None = None,
        resume: bool = True,
        kind: str | None = None,
        inputs: Iterable = (),
    ):
        self.dest = Path(dest)
        self.key, self.kind = key, kind
        inputs = list(inputs)
        check_output(self.dest, kind, inputs=inputs)
        self._lock = OutputLock(self.dest).acquire()
        try:
            check_output(self.dest, kind, inputs=inputs)
            remove_stale(self.dest)
            self.path = temporary_path(self.dest, "partial")
            earlier = _find(self.dest, key) if resume else None
            for folder in temporaries(self.dest, ("partial",)):
                if folder != earlier and is_ours(folder):
                    shutil.rmtree(folder, ignore_errors=True)  # other settings: nothing to resume from
            if earlier is not None:
                os.replace(earlier, self.path)
                self.resumed = True
                self.state = (self._read_state() or {}).get("state", {})
                log.info("resuming %s: %d chunks already done", self.dest, len(self.done()))
            else:
                (self.path / MARKERS).mkdir(parents=True)
                if kind is not None:
                    write_marker(self.path, kind)
                self.resumed = False
                self.state = dict(state or {})
                self._write_state()
        except BaseException:
            self._lock.release()
            raise

    @classmethod
    def stored_state(cls, dest, key: str) -> dict | None:
        """The state a partial run of ``dest`` with ``key`` left, or None (nothing to resume)."""
        folder = _find(Path(dest), key)
        if folder is None:
            return None
        return _read(folder).get("state", {})

    def _read_state(self) -> dict | None:
        try:
            return json.loads((self.path / STATE_FILE).read_text())
        except (OSError, ValueError):
            return None

    def _write_state(self) -> None:
        tmp = self.path / f"{STATE_FILE}.tmp"
        tmp.write_text(json.dumps({"key": self.key, "state": self.state}, sort_keys=True, default=str))
        os.replace(tmp, self.path / STATE_FILE)

    def done(self) -> set[int]:
        """Chunks already complete."""
        return {int(p.name) for p in (self.path / MARKERS).iterdir() if p.name.isdigit()}

    def mark(self, chunk: int) -> None:
        """Record that ``chunk`` is complete (call after its data are written)."""
        (self.path / MARKERS / str(int(chunk))).touch()

    def commit(self) -> Path:
        """Move the complete directory into place (replacing ``dest``), release the lock, return ``dest``."""
        try:
            shutil.rmtree(self.path / MARKERS)
            (self.path / STATE_FILE).unlink()
            put_in_place(self.path, self.dest, self.kind)
        finally:
            self.close()
        return self.dest

    def discard(self) -> None:
        """Remove the partial directory (nothing to resume from) and release the lock."""
        shutil.rmtree(self.path, ignore_errors=True)
        self.close()

    def close(self) -> None:
        """Release the lock, keeping the partial directory for a later run to resume."""
        self._lock.release()

    def __enter__(self) -> "PartialDirectory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read(folder: Path) -> dict:
    try:
        record = json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _find(dest: Path, key: str) -> Path | None:
    """The newest partial directory of ``dest`` left by a run with ``key``, or None."""
    found = [f for f in temporaries(dest, ("partial",)) if _read(f).get("key") == key]
    return max(found, key=lambda f: f.stat().st_mtime_ns, default=None)
