"""Data shipped with latentsky: the bundled sample of real spectra and images (see ``sample/PROVENANCE.md``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def sample_path() -> Path:
    """Folder of the bundled sample: ``harps/`` and ``sdss/`` spectra (``sdss/labels.csv``), ``images/`` cutouts."""
    return Path(str(resources.files("latentsky.data") / "sample"))


def sample_spectra() -> list[Path]:
    """The sample's spectrum folders (HARPS and SDSS), without its images: what ``ingest`` should read."""
    return [sample_path() / "harps", sample_path() / "sdss"]
