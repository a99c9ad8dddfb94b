"""The app's data store: one latent table and where its spectra come from.

:class:`LatentData` is the single object the views share (the Panel
"data store" pattern): the Explore map draws its table, the spectrum panel asks
it for the spectrum of a row, exports read its rows.  It opens

- the results of ``latentsky pipeline`` (``DIR/latent.parquet`` joined to the
  spectrum store by ``id``),
- a ``latentsky synth`` folder (spectra regenerated on demand; synthetic positions have no images),
- the bundled sample, projected with a PCA of its spectra when no pipeline
  results exist yet (so a first-time user sees a map at once).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import param

from latentsky.exceptions import LatentskyError

log = logging.getLogger(__name__)


PCA_COMPARE_MAX = 20_000
"""Stores up to this many spectra get a PCA map beside the pipeline's (the PCA reads all flux into memory)."""


class SpectrumSource:
    """Where the spectrum of a latent-table row comes from (subclasses implement :meth:`get`)."""

    def get(self, row: pd.Series) -> dict | None:
        """``{"wave", "flux", "weight", "model"}`` for one table row, or None when unknown."""
        raise NotImplementedError


class StoreSpectra(SpectrumSource):
    """Spectra read from a :class:`~latentsky.store.SpectrumStore`.

    Parameters
    ----------
    store : SpectrumStore
    reconstruct : callable, optional
        ``reconstruct(row, flux, weight) -> (model flux, legend label)`` on the store's grid: the
        reconstruction from the row's latent point (:class:`~latentsky.ui.reconstruct.ReadoutReconstruction`
        for the autoencoder's map), drawn over the spectrum.
    """

    def __init__(self, store, reconstruct=None):
        self.store = store
        self.reconstruct = reconstruct
        self._wave = None
        self._rows = None

    @property
    def wave(self) -> np.ndarray:
        if self._wave is None:
            self._wave = self.store.wave
        return self._wave

    def store_row(self, row: pd.Series) -> int | None:
        """The store row of a table row: its ``row`` column, else looked up by ``id``."""
        if self._rows is None:
            cat = self.store.catalog
            self._rows = pd.Series(cat["row"].to_numpy(), index=cat["id"].astype(str).to_numpy())
        key = str(row.get("id", ""))
        if key in self._rows.index:
            return int(self._rows[key])
        if "row" in row and pd.notna(row["row"]) and 0 <= int(row["row"]) < len(self.store):
            return int(row["row"])
        return None

    def get(self, row: pd.Series) -> dict | None:
        r = self.store_row(row)
        if r is None:
            return None
        out = {
            "wave": self.wave,
            "flux": np.asarray(self.store.flux[r]),
            "weight": np.asarray(self.store.weight[r]),
            "model": None,
        }
        if self.reconstruct is not None:
            try:
                out["model"], out["model_label"] = self.reconstruct(row, out["flux"], out["weight"])
            except Exception as err:  # a failed reconstruction must not hide the spectrum itself
                log.warning("reconstruction of %s failed: %s", row.get("id"), err)
                out["model_error"] = f"no reconstruction: {err}"
        return out


class SynthSpectra(SpectrumSource):
    """Spectra of a ``latentsky synth`` table, regenerated from its templates on demand."""

    def __init__(self, templates):
        self.templates = templates

    def get(self, row: pd.Series) -> dict | None:
        from latentsky.synth import spectrum_for_row

        flux, model, weight = spectrum_for_row(self.templates, row)
        return {
            "wave": self.templates.wave,
            "flux": flux,
            "weight": weight,
            "model": model,
            "model_label": "noise-free model of the row",
        }


class PCAProjection:
    """A 2-D PCA of a store's spectra, with its inverse (the "reconstruction from the latent point").

    Masked pixels are filled with the weighted mean spectrum before the fit, so
    that a partial spectrum is placed by the pixels it has.
    """

    def __init__(self, store, n_components: int = 2):
        flux = np.asarray(store.flux[:], dtype="f8")
        weight = np.asarray(store.weight[:], dtype="f8")
        good = weight > 0
        wsum = good.sum(axis=0)
        mean = np.where(wsum > 0, np.where(good, flux, 0).sum(axis=0) / np.maximum(wsum, 1), 1.0)
        filled = np.where(good, np.clip(flux, -2, 5), mean)
        self.mean_ = mean
        _, s, vt = np.linalg.svd(filled - mean, full_matrices=False)
        self.components_ = vt[:n_components]
        self.coords_ = (filled - mean) @ self.components_.T

    def inverse(self, xy) -> np.ndarray:
        """Spectrum on the store's grid of a latent point ``(x, y)``."""
        return self.mean_ + np.asarray(xy, dtype="f8") @ self.components_

    def reconstruct(self, row: pd.Series, flux, weight=None) -> tuple[np.ndarray, str]:
        """The spectrum of the row's latent point, and a legend label with its mean squared error
        over the spectrum's valid pixels (a :class:`StoreSpectra` ``reconstruct``)."""
        model = self.inverse((row["x"], row["y"]))
        good = np.isfinite(flux) & (np.ones(len(model), bool) if weight is None else np.asarray(weight) > 0)
        err = float(np.mean((np.asarray(flux, "f8")[good] - model[good]) ** 2)) if good.any() else float("nan")
        return model, f"PCA reconstruction from the latent point (MSE {err:.3g})"


class LatentData(param.Parameterized):
    """One latent table and its spectra, shared by every view of the app."""

    table = param.Parameter(
        default=None,
        allow_None=True,
        doc="The latent table: x, y and metadata columns (pandas, or Dask for 10^7-10^8 rows)",
    )
    label = param.String(default="", doc="Where the table came from (shown in the app's title)")
    map_name = param.String(
        default="",
        doc="What made the map, in words (the pipeline's metrics.json "
        "``map_name``; shown in the legend and the map's title)",
    )
    source = param.Parameter(default=None, doc="A SpectrumSource giving each row's spectrum, or None")
    cutouts = param.Parameter(default=None, doc="A latentsky.ui.cutouts.Cutouts giving each row's images, or None")

    def __init__(self, table: pd.DataFrame | None = None, **params):
        from latentsky.viz.latent import is_dask, prepare_table

        if table is not None and is_dask(table):
            table = prepare_table(table)  # indexed by row position, so rows are found without a full pass
        elif table is not None and not isinstance(table, pd.DataFrame):
            raise TypeError(f"table: expected a pandas or Dask DataFrame, got {type(table).__name__}")
        super().__init__(table=table, **params)

    # ------------------------------------------------------------------ rows
    def __len__(self) -> int:
        from latentsky.viz.latent import n_rows

        return 0 if self.table is None else n_rows(self.table)

    def row(self, i: int) -> pd.Series | None:
        """Row position ``i`` of the table (None when out of range)."""
        if self.table is None or i is None or not 0 <= int(i) < len(self):
            return None
        if isinstance(self.table, pd.DataFrame):
            return self.table.iloc[int(i)]
        from latentsky.viz.latent import take_rows

        return take_rows(self.table, [int(i)]).iloc[0]

    def rows(self, positions) -> pd.DataFrame:
        """The rows at ``positions`` (row positions), as a pandas DataFrame in ascending order."""
        from latentsky.viz.latent import take_rows

        return take_rows(self.table, np.sort(np.asarray(positions, dtype=np.int64)))

    # ------------------------------------------------------------------ spectra
    def preload(self) -> None:
        """Start loading what the first tap needs (the autoencoder, TensorFlow) in a background thread."""
        reconstruct = getattr(self.source, "reconstruct", None)
        if hasattr(reconstruct, "load_in_background"):
            reconstruct.load_in_background()

    def spectrum(self, i: int) -> dict | None:
        """The spectrum of row position ``i``: ``wave, flux, weight, model`` (None when there is no
        reconstruction), ``model_label`` and ``title``; None when the row has no spectrum."""
        row = self.row(i)
        if row is None:
            return None
        out = self.source.get(row) if self.source is not None else None
        if out is not None:
            out["title"] = " | ".join(str(row[c]) for c in ("id", "object", "spec_class") if c in row.index)
        return out

    def images(self, i: int) -> list:
        """The image cutouts at row ``i``'s position (:class:`~latentsky.ui.cutouts.Cutout`; may use the network)."""
        row = self.row(i) if self.cutouts is not None else None
        return [] if row is None else self.cutouts.get(row)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_pipeline(cls, folder, *, store=None) -> "LatentData":
        """The results of ``latentsky pipeline SOURCE --out DIR``.

        Parameters
        ----------
        folder : path-like
            ``DIR``; must hold ``latent.parquet``.
        store : SpectrumStore or path, optional
            The spectra; default ``DIR/store`` when present.

        The tapped spectrum's reconstruction comes from ``DIR/model.keras`` and ``DIR/embeddings``
        (:class:`~latentsky.ui.reconstruct.ReadoutReconstruction`), its images from ``DIR/cutouts``
        (written by :func:`~latentsky.archives.cutouts.fetch_cutouts`) or else from hips2fits on demand.
        """
        from latentsky.store import SpectrumStore

        folder = Path(folder)
        path = folder / "latent.parquet"
        if not path.exists():
            raise LatentskyError(f"{path}: not found (run `latentsky pipeline SOURCE --out {folder}` first)")
        table = pd.read_parquet(path)
        if store is None and (folder / "store" / "catalog.parquet").exists():
            store = folder / "store"
        if isinstance(store, (str, Path)):
            store = SpectrumStore(store)
        source = None
        if store is not None:
            table = _join_catalog(table, store.catalog)
            source = StoreSpectra(store, reconstruct=_readout_reconstruction(folder))
            if len(store) <= PCA_COMPARE_MAX and "row" in table.columns and "pca_x" not in table.columns:
                # the PCA map of the same spectra, linked beside the autoencoder's (Explore.compare)
                pca = PCAProjection(store)
                rows = table["row"].to_numpy()
                ok = np.isfinite(rows.astype(float))
                for k, col in enumerate(("pca_x", "pca_y")):
                    values = np.full(len(table), np.nan)
                    values[ok] = pca.coords_[rows[ok].astype(int), k]
                    table[col] = values
        from latentsky.ui.cutouts import Cutouts

        cutouts = Cutouts(folder / "cutouts") if (folder / "cutouts" / "index.parquet").exists() else Cutouts()
        return cls(table, label=str(folder), source=source, cutouts=cutouts, map_name=_map_name(folder))

    @classmethod
    def from_synth(cls, folder, *, columns=None, dask: bool = False) -> "LatentData":
        """A folder written by ``latentsky synth`` (spectra regenerated from its templates).

        ``dask=True`` reads the table with :func:`dask.dataframe.read_parquet` (see :func:`read_table`).
        """
        from latentsky.synth import LATENT_FILE, Templates

        folder = Path(folder)
        path = folder / LATENT_FILE
        if not path.exists():
            raise LatentskyError(f"{path}: not found (run `latentsky synth --out {folder}` first)")
        table = read_table(path, columns=columns, dask=dask)
        return cls(table, label=f"{folder} (synthetic)", source=SynthSpectra(Templates.load(folder)))

    @classmethod
    def from_store(cls, store) -> "LatentData":
        """A store's catalog placed on the map by a 2-D PCA of its spectra (a stand-in for the
        autoencoder's map until pipeline results exist); the reconstruction is the PCA's inverse."""
        from latentsky.store import SpectrumStore

        if isinstance(store, (str, Path)):
            store = SpectrumStore(store)
        pca = PCAProjection(store)
        cat = store.catalog.reset_index(drop=True)
        table = cat.drop(columns=[c for c in ("sha256", "format", "wave_min", "wave_max") if c in cat.columns])
        table = table.assign(x=pca.coords_[:, 0], y=pca.coords_[:, 1])
        recon_err = np.sqrt(
            np.mean(
                (np.asarray(store.flux[:], "f8") - (pca.mean_ + pca.coords_ @ pca.components_)) ** 2
                * (np.asarray(store.weight[:]) > 0),
                axis=1,
            )
        )
        table["anomaly"] = recon_err / np.median(recon_err)
        from latentsky.ui.cutouts import Cutouts

        return cls(
            table,
            label=f"{store.path} (PCA map)",
            source=StoreSpectra(store, reconstruct=pca.reconstruct),
            cutouts=Cutouts(),
        )

    @classmethod
    def sample(cls) -> "LatentData":
        """The bundled sample's results: the pipeline's when ``conf.cache_dir/sample-results`` holds
        them, else the PCA map of the sample store."""
        from latentsky.config import conf
        from latentsky.data import sample_store

        results = Path(conf.cache_dir) / "sample-results"
        store = sample_store()
        if (results / "latent.parquet").exists():
            try:
                return cls.from_pipeline(results, store=store)
            except Exception as err:
                log.warning("cannot open %s (%s); showing the PCA map of the sample", results, err)
        data = cls.from_store(store)
        data.label = "bundled sample (PCA map)"
        return data

    @classmethod
    def open(cls, path, *, dask: bool = False) -> "LatentData":
        """A pipeline folder, a synth folder, a store, or a latent Parquet file (or folder of Parquet parts
        when ``dask``), told apart by their files.  ``dask=True`` keeps a latent table as a Dask DataFrame
        (:func:`read_table`)."""
        path = Path(path)
        if path.suffix == ".parquet" and (path.is_file() or (dask and path.is_dir())):
            return cls(read_table(path, dask=dask), label=str(path))
        if (path / "templates.npz").exists():
            return cls.from_synth(path, dask=dask)
        if (path / "latent.parquet").exists():
            return cls.from_pipeline(path)
        if (path / "catalog.parquet").exists():
            return cls.from_store(path)
        raise LatentskyError(f"{path}: not a latent table, pipeline/synth folder or spectrum store")


DASK_PERSIST_MAX_BYTES = 2 * 2**30
"""A Dask latent table up to this size in memory is persisted (kept in memory after the first read):
every zoom then costs an aggregation, not a Parquet read.  Larger ones are read at each zoom."""


def read_table(path, *, columns=None, dask: bool = False):
    """A latent table from Parquet: pandas, or with ``dask`` a Dask DataFrame (one partition per row group).

    With Dask, Datashader aggregates the partitions in parallel (on a ``distributed`` client when one is
    running, else Dask's threads), so maps of 10^7-10^8 rows stay interactive on the server; the table
    is prepared for the map (:func:`~latentsky.viz.latent.prepare_table`) and persisted when it fits in
    :data:`DASK_PERSIST_MAX_BYTES`.
    """
    if not dask:
        return pd.read_parquet(path, columns=columns)
    import dask.dataframe as dd

    from latentsky.viz.latent import n_rows, prepare_table

    table = prepare_table(dd.read_parquet(path, columns=columns, split_row_groups=True))
    row_bytes = sum(getattr(dtype, "itemsize", 16) for dtype in table.dtypes)  # text/categories: ~16 B
    if row_bytes * n_rows(table) <= DASK_PERSIST_MAX_BYTES:
        table = table.persist()
    return table


def _readout_reconstruction(folder: Path):
    """The autoencoder's reconstruction for a pipeline folder holding ``model.keras`` and ``embeddings/``,
    else None (e.g. a table mapped by PCA in the app's Train step)."""
    from latentsky.ui.reconstruct import DECODED_FILE, ReadoutReconstruction

    if not (folder / "model.keras").is_file() or not (folder / "embeddings").is_dir():
        return None
    try:  # prepared results carry every row's decoded readout: no TensorFlow in the app
        return ReadoutReconstruction(folder / "model.keras", folder / "embeddings", decoded=folder / DECODED_FILE)
    except LatentskyError as err:
        log.warning("no reconstruction for %s: %s", folder, err)
        return None


def _join_catalog(table: pd.DataFrame, catalog: pd.DataFrame) -> pd.DataFrame:
    """Add the store's catalog columns the latent table lacks (snr, spec_class, row...), by ``id``."""
    extra = [c for c in catalog.columns if c not in table.columns and c not in ("sha256", "format")]
    if "id" not in table.columns or not extra:
        return table
    cat = catalog[["id"] + extra].copy()
    cat["id"] = cat["id"].astype(str)
    out = table.copy()
    out["id"] = out["id"].astype(str)
    return out.merge(cat, on="id", how="left")


def _map_name(folder: Path) -> str:
    """The map's kind in words, from a pipeline folder's ``metrics.json`` ("" when it does not say)."""
    import json

    try:
        return str(json.loads((Path(folder) / "metrics.json").read_text()).get("map_name", ""))
    except (OSError, ValueError):
        return ""
