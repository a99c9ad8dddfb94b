"""On-disk stores: Parquet catalogs, Zarr arrays and their lineage."""

from latentsky.store.lineage import code_version, read_lineage, write_lineage
from latentsky.store.partial import PartialDirectory
from latentsky.store.spectra import SpectrumStore, SpectrumStoreWriter, atomic_directory

__all__ = ["PartialDirectory", "SpectrumStore", "SpectrumStoreWriter", "atomic_directory", "code_version",
           "read_lineage", "write_lineage"]
