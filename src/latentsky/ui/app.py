"""The whole app in one page: Query -> Download -> Ingest/Embed -> Train -> Explore.

:func:`load_data` picks what the map opens on (a path given by the user, else
the bundled sample's results) and caches it for every session of a server.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import panel as pn
import param

from latentsky.ui.data import LatentData
from latentsky.ui.explore import Explore

log = logging.getLogger(__name__)

DATA_ENV = "LATENTSKY_APP_DATA"
"""Environment variable naming what the app opens (a pipeline/synth folder, a store or a Parquet file)."""


DASK_ENV = "LATENTSKY_APP_DASK"
"""Set to 1 to open the latent table as a Dask DataFrame (maps of 10^7-10^8 rows, aggregated in parallel)."""


def load_data(path=None, *, dask: bool | None = None) -> LatentData:
    """The app's data: ``path`` (or ``$LATENTSKY_APP_DATA``), else the bundled sample's results.

    Cached per process, so every browser session of one server shares one copy
    of a 10^7-row table.  ``dask`` (default ``$LATENTSKY_APP_DASK``) keeps the
    table as a Dask DataFrame.  What the first tap needs (the autoencoder) starts
    loading in the background.
    """
    path = path or os.environ.get(DATA_ENV) or None
    if dask is None:
        dask = os.environ.get(DASK_ENV, "").lower() in ("1", "true", "yes", "on")
    key = f"latentsky-data:{Path(path).resolve() if path else 'sample'}:{'dask' if dask else 'pandas'}"

    def load() -> LatentData:
        data = LatentData.open(path, dask=dask) if path else LatentData.sample()
        data.preload()
        return data

    return pn.state.as_cached(key, load)


class App(pn.viewable.Viewer):
    """Every step of latentsky as tabs of one page, opening on the map.

    Parameters
    ----------
    data : LatentData, optional
        What the Explore tab shows first (default: :func:`load_data`).
    workdir : path-like, optional
        Where queries, downloads, stores and results are written (default ``conf.cache_dir / "app"``).
    """

    data = param.ClassSelector(class_=LatentData, doc="What the Explore tab shows")
    workdir = param.Path(
        default=None, allow_None=True, check_exists=False, doc="Folder for downloads, stores and results of this app"
    )
    active = param.Integer(default=0, bounds=(0, None), doc="Index of the open tab (kept in the URL)")

    def __init__(self, data: LatentData | None = None, **params):
        from latentsky.config import conf

        if data is None:
            data = load_data()
        params.setdefault("workdir", str(Path(conf.cache_dir) / "app"))
        super().__init__(data=data, **params)
        self.explore = Explore(data)
        self._steps = None

    def steps(self) -> dict:
        """The step components (built lazily: the map opens first)."""
        if self._steps is None:
            from latentsky.ui.steps import Download, Embed, Query, Train

            work = Path(self.workdir)
            self.query = Query(workdir=str(work / "query"))
            self.download = Download(dest=str(work / "downloads"))
            self.embed = Embed(source=str(work / "downloads"), out=str(work / "store"))
            self.train = Train(store=str(work / "store"), out=str(work / "results"))
            self.query.param.watch(lambda e: setattr(self.download, "products", e.new), "products")
            # the map is trained on readouts made with the Embed step's settings
            settings = ["n_units", "cycle_weight", "leak_rate", "input_scaling", "ridge"]
            self.train.embed = {k: getattr(self.embed, k) for k in settings}
            self.embed.param.watch(
                lambda e: setattr(self.train, "embed", {**self.train.embed, e.name: e.new}), settings
            )
            # ... and reuses them when the store and settings are the same (not embedding twice)
            self.train.embeddings = self.embed.embeddings_path()
            self.embed.param.watch(
                lambda e: setattr(self.train, "embeddings", self.embed.embeddings_path()), ["out", "embeddings"]
            )
            self.train.param.watch(self._on_results, "results")
            self._steps = {"Query": self.query, "Download": self.download, "Embed": self.embed, "Train": self.train}
        return self._steps

    def _on_results(self, event) -> None:
        if event.new is not None:
            self.explore.data = event.new
            self.active = 0

    def __panel__(self):
        tabs = pn.Tabs(("Explore", self.explore), *self.steps().items(), dynamic=True, sizing_mode="stretch_width")
        tabs.link(self, active="active", bidirectional=True)
        header = pn.pane.Markdown("## latentsky: a latent map of spectra", margin=(0, 10))
        return pn.Column(header, tabs, sizing_mode="stretch_width")

    def sync_url(self) -> None:
        """Keep the open tab and the map's view in the URL (inside a served page)."""
        self.explore.sync_url()
        if pn.state.location is not None:
            pn.state.location.sync(self, {"active": "tab"})
