"""Where the tests find real data too large for the package: the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The repository (or worktree) root."""


def shared_data_dir() -> Path | None:
    """The full real data set, ``../shared/data`` beside the repository or ``$LATENTSKY_SHARED_DATA``; None if
    absent."""
    candidate = Path(os.environ.get("LATENTSKY_SHARED_DATA", REPO.parent / "shared" / "data"))
    return candidate if candidate.is_dir() else None
