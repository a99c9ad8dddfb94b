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


def sample_store(cache_dir: Path | None = None):
    """The bundled sample ingested once into ``conf.cache_dir / "sample-store"`` and reused.

    The store is rebuilt when the sample folder changes (its file list and sizes).
    """
    import hashlib
    import logging

    from latentsky.config import conf
    from latentsky.ingest import ingest
    from latentsky.store import SpectrumStore

    files = sorted(p for p in sample_path().rglob("*") if p.is_file())
    key = hashlib.sha256("".join(f"{p.name}:{p.stat().st_size}" for p in files).encode()).hexdigest()[:12]
    dest = Path(cache_dir or conf.cache_dir) / f"sample-store-{key}"
    if not (dest / "catalog.parquet").exists():
        logging.getLogger(__name__).info("ingesting the bundled sample into %s", dest)
        ingest(sample_spectra(), dest)  # the spectra only: the sample's images are no spectra to report
    return SpectrumStore(dest)
