"""On-disk stores: Parquet catalogs, Zarr arrays, their lineage, and the rules for output folders."""

from latentsky.store.lineage import code_version, read_lineage, write_lineage
from latentsky.store.output import OutputBusy, OutputLock, OutputRefused, check_output, output_directory, output_folder
from latentsky.store.partial import PartialDirectory
from latentsky.store.spectra import SpectrumStore, SpectrumStoreWriter, atomic_directory

__all__ = [
    "OutputBusy",
    "OutputLock",
    "OutputRefused",
    "PartialDirectory",
    "SpectrumStore",
    "SpectrumStoreWriter",
    "atomic_directory",
    "check_output",
    "code_version",
    "output_directory",
    "output_folder",
    "read_lineage",
    "write_lineage",
]
