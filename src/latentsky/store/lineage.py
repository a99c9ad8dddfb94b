"""Lineage: which parameters, inputs and code version made a store.

Every store directory carries a ``lineage.json`` so that a result can be traced
back to its inputs and recomputed, and so that re-running a step on the same
inputs can be recognised and skipped.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

from latentsky.exceptions import StoreError

LINEAGE_FILE = "lineage.json"


def code_version() -> str:
    """The latentsky version that is running."""
    from latentsky import __version__

    return __version__


def fingerprint(obj) -> str:
    """A sha256 hex digest of a JSON-serialisable object (key order ignored)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def write_lineage(directory: Path, *, step: str, params: dict, inputs: dict, extra: dict | None = None) -> dict:
    """Write ``lineage.json`` into ``directory`` and return what was written.

    Parameters
    ----------
    directory : Path
        The store directory.
    step : str
        The pipeline step that made the store (``"ingest"``, ``"embed"``...).
    params : dict
        The step's parameters (JSON-serialisable).
    inputs : dict
        What the step read, e.g. ``{"files": {path: sha256}}`` or ``{"store": fingerprint}``.
    extra : dict, optional
        Anything else worth keeping (counts, timings).
    """
    record = {
        "step": step,
        "params": params,
        "inputs": inputs,
        "key": fingerprint({"step": step, "params": params, "inputs": inputs, "code": code_version()}),
        "code_version": code_version(),
        "python": platform.python_version(),
        **(extra or {}),
    }
    (Path(directory) / LINEAGE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    return record


def read_lineage(directory: Path) -> dict | None:
    """The lineage record of a store, or None when it has none.

    Raises
    ------
    StoreError
        When ``lineage.json`` cannot be read or is not a JSON object (the message names it).
    """
    path = Path(directory) / LINEAGE_FILE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise StoreError(f"{path}: unreadable lineage ({type(err).__name__}: {err})") from None
    if not isinstance(record, dict):
        raise StoreError(f"{path}: unreadable lineage (not a JSON object)")
    return record
