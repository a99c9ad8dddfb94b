"""Data shipped with latentsky: the bundled sample of real spectra (see ``sample/PROVENANCE.md``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def sample_path() -> Path:
    """Folder of the bundled sample: ``harps/`` (HARPS s1d) and ``sdss/`` (SDSS spectra, ``labels.csv``)."""
    return Path(str(resources.files("latentsky.data") / "sample"))
