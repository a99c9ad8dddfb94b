"""Outputs written chunk by chunk that survive an interruption and resume at the chunk.

A long step (embedding 10^6 spectra, encoding them) writes its output
directory ``DEST`` under the fixed temporary name ``.DEST.partial`` beside it.
After each chunk's arrays are written, an empty marker file
``.chunks/<k>`` records that chunk ``k`` is complete; a run interrupted
anywhere (an exception, Ctrl-C, a killed process) leaves the partial directory
behind, and the next run with the same settings (the same ``key``) computes
only the chunks without a marker.  A chunk interrupted half-way has no marker
and is computed again from scratch.  When every chunk is there the directory
is moved into place in one rename, as :func:`~latentsky.store.spectra.atomic_directory`
does, so ``DEST`` is only ever absent, the previous complete output, or the
new complete one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path

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

    Attributes
    ----------
    path : Path
        The temporary directory to write into.
    resumed : bool
        Whether an earlier run's chunks are being reused.
    state : dict
    """

    def __init__(self, dest, key: str, *, state: dict | None = None, resume: bool = True):
        self.dest = Path(dest)
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self.path = self.dest.with_name(f".{self.dest.name}.partial")
        self.key = key
        previous = self._read_state() if resume else None
        if previous is not None and previous.get("key") == key:
            self.resumed = True
            self.state = previous.get("state", {})
            log.info("resuming %s: %d chunks already done", self.dest, len(self.done()))
        else:
            if self.path.exists():
                shutil.rmtree(self.path)
            (self.path / MARKERS).mkdir(parents=True)
            self.resumed = False
            self.state = dict(state or {})
            self._write_state()

    @classmethod
    def stored_state(cls, dest, key: str) -> dict | None:
        """The state a partial run of ``dest`` with ``key`` left, or None (nothing to resume)."""
        path = Path(dest).with_name(f".{Path(dest).name}.partial") / STATE_FILE
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return record.get("state", {}) if record.get("key") == key else None

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
        """Move the complete directory into place (replacing ``dest``) and return ``dest``."""
        shutil.rmtree(self.path / MARKERS)
        (self.path / STATE_FILE).unlink()
        old = None
        if self.dest.exists():
            old = self.dest.with_name(f".{self.dest.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(self.dest, old)
        os.replace(self.path, self.dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.dest

    def discard(self) -> None:
        """Remove the partial directory (nothing to resume from)."""
        shutil.rmtree(self.path, ignore_errors=True)
