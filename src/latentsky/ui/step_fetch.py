"""The app's first steps: Query an archive (or an uploaded coordinate table) and Download the answer."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import panel as pn
import param

from latentsky.exceptions import LatentskyError
from latentsky.progress import ProgressEvent
from latentsky.ui.step_base import _Step, form

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- Query


def read_coordinate_table(content: bytes, filename: str):
    """An uploaded coordinate table (CSV, VOTable, FITS, ECSV) as an astropy Table with ``ra``/``dec``.

    Raises
    ------
    LatentskyError
        When the file cannot be read or has no ``ra``/``dec`` columns (the message names the file).
    """
    import io

    from astropy.table import Table

    name = filename.lower()
    fmt = (
        "votable"
        if name.endswith((".xml", ".vot", ".votable"))
        else "fits"
        if name.endswith((".fits", ".fit"))
        else "ascii.ecsv"
        if name.endswith(".ecsv")
        else "ascii.csv"
    )
    try:
        table = Table.read(io.BytesIO(content), format=fmt)
    except Exception as err:
        raise LatentskyError(f"upload: cannot read {filename!r} as {fmt}: {err}") from err
    cols = {c.lower(): c for c in table.colnames}
    for want in ("ra", "dec"):
        if want not in cols:
            raise LatentskyError(f"upload: {filename!r} has no {want!r} column (columns: {', '.join(table.colnames)})")
        if cols[want] != want:
            table.rename_column(cols[want], want)
    return table


class Query(_Step):
    """Find spectra in an archive by target name, coordinates or an uploaded table of positions."""

    archive = param.Selector(default="eso", objects=["eso", "sdss"], doc="Archive to ask")
    target = param.String(default="", doc="Object name (resolved by the name table, then Sesame)")
    coordinates = param.String(default="", doc="Position, e.g. '219.9 -60.83' (deg) or '14h39m -60d50m'")
    radius = param.Number(default=60.0, bounds=(0.1, 36000.0), doc="Search radius, arcsec")
    collection = param.String(default="HARPS", doc="ESO collection (empty: any)")
    instrument = param.String(default="", doc="Instrument (empty: any)")
    start = param.String(default="", doc="Observed from (ISO date or MJD; empty: no limit)")
    end = param.String(default="", doc="Observed before (ISO date or MJD; empty: no limit)")
    upload = param.Parameter(default=None, doc="An uploaded table of positions (astropy Table with ra, dec)")
    products = param.Parameter(default=None, doc="The result: an astropy Table, one row per product")
    workdir = param.String(default="", doc="Where query results are saved")

    def kwargs(self) -> dict:
        """The archive client's ``query`` arguments for the current parameters (no network)."""
        from astropy import units as u

        from latentsky.archives.base import parse_coordinates, resolve_name

        if self.upload is not None:
            where = self.upload
        elif self.coordinates.strip():
            where = parse_coordinates(self.coordinates.strip(), parameter="coordinates")
        elif self.target.strip():
            where = resolve_name(self.target.strip(), parameter="target")
        else:
            raise LatentskyError("target: give a target name, coordinates or an uploaded table")
        kw = {"coordinates": where, "radius": self.radius * u.arcsec}
        if self.archive == "eso":
            kw.update(
                collection=self.collection or None,
                instrument=self.instrument or None,
                start=self.start or None,
                end=self.end or None,
            )
        return kw

    def run(self):
        """Query the archive; sets :attr:`products` (and :attr:`error` on failure)."""

        def work():
            from latentsky.archives import get_archive

            t0 = time.monotonic()
            table = get_archive(self.archive).query(**self.kwargs())
            self.products = table
            self.info = f"{len(table)} products · {estimated_size(table)} · {time.monotonic() - t0:.1f} s"
            return table

        return self._guarded(work)

    @property
    def results(self) -> pd.DataFrame:
        """The products as a DataFrame (what the results table shows)."""
        if self.products is None:
            return pd.DataFrame()
        t = self.products
        cols = [c for c in t.colnames if t[c].ndim == 1]
        return t[cols].to_pandas()

    def _on_upload(self, event) -> None:
        if event.new:
            try:
                self.upload = read_coordinate_table(event.new, event.obj.filename or "upload.csv")
                self.info = f"{len(self.upload)} positions uploaded"
            except LatentskyError as err:
                self.error = str(err)

    def __panel__(self):
        upload = pn.widgets.FileInput(accept=".csv,.ecsv,.xml,.vot,.fits", label="positions table")
        upload.param.watch(self._on_upload, "value")
        table = pn.widgets.Tabulator(
            pd.DataFrame(),
            pagination="remote",
            page_size=15,
            disabled=True,
            sizing_mode="stretch_width",
            header_filters=False,
        )
        self.param.watch(lambda e: setattr(table, "value", self.results), "products")
        button = pn.widgets.Button(label="Query", color="primary", css_classes=["query-run"])
        button.on_click(lambda e: self.in_background(self.run))
        fields = form(
            self, ["archive", "target", "coordinates", "radius", "collection", "instrument", "start", "end"], "query"
        )
        return pn.Row(
            pn.Column(fields, pn.pane.Markdown("or upload positions (CSV, VOTable, FITS):"), upload, button),
            pn.Column(self._messages, table, sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )


def estimated_size(table) -> str:
    """Human-readable download size of a product table (ObsCore ``access_estsize`` in kB), or 'size unknown'."""
    if table is None or "access_estsize" not in getattr(table, "colnames", []):
        return "size unknown"
    kb = np.nansum(np.asarray(table["access_estsize"], dtype=float))
    for unit, scale in (("GB", 1e6), ("MB", 1e3), ("kB", 1)):
        if kb >= scale:
            return f"~{kb / scale:.1f} {unit}"
    return f"~{kb:.0f} kB"


# ----------------------------------------------------------------------------- Download


class Download(_Step):
    """Fetch a product table's files with the download manager; state lives in its manifest.

    Pause stops the running job at once (:meth:`DownloadManager.stop`): transfers
    in flight end, nothing new starts, and the manifest holds ``done`` only for
    verified files (an interrupted transfer keeps its ``.part`` file, resumed
    with a Range request).  Resume, or a new app after a kernel restart,
    continues every unfinished file of the manifest.
    """

    dest = param.String(default="", doc="Destination folder (holds the manifest)")
    products = param.Parameter(default=None, doc="Product table from Query (astropy Table with archive, access_url)")
    paused = param.Boolean(default=False, doc="The last run was paused before it finished")
    states = param.DataFrame(default=pd.DataFrame(), doc="Per-file states read from the manifest")
    counts = param.Dict(default={}, doc="Files per state")

    def __init__(self, **params):
        super().__init__(**params)
        self._manager = None
        self._manager_lock = threading.Lock()

    def plan(self) -> list:
        """Download items for :attr:`products` (no network)."""
        from latentsky.archives import get_archive

        if self.products is None or len(self.products) == 0:
            raise LatentskyError("products: nothing to download (run a query first)")
        if not self.dest:
            raise LatentskyError("dest: choose a destination folder")
        items = []
        names = (
            sorted(set(str(a) for a in self.products["archive"])) if "archive" in self.products.colnames else ["eso"]
        )
        for name in names:
            sub = (
                self.products[self.products["archive"] == name]
                if "archive" in self.products.colnames
                else self.products
            )
            items += get_archive(name).plan(sub, Path(self.dest) / name)
        return items

    def refresh(self, manifest=None) -> None:
        """Read the per-file states from the manifest (what survives a kernel restart).

        ``manifest``: an open :class:`~latentsky.download.Manifest` to read (the running job's), else the
        one in :attr:`dest` is opened for the read.
        """
        from latentsky.download import Manifest

        if manifest is None and (not self.dest or not Manifest.exists_in(self.dest)):
            self.param.update(states=pd.DataFrame(), counts={})
            return
        m = manifest or Manifest.for_folder(self.dest)
        try:
            self.param.update(states=pd.DataFrame(m.rows()), counts=dict(m.counts()))
        finally:
            if manifest is None:
                m.close()

    REFRESH_S = 0.5
    """Shortest interval, seconds, between two reads of the manifest during a run (a read lists every file)."""

    def _on_progress(self, event: ProgressEvent, manifest) -> None:
        self.progress(event)
        now = time.monotonic()
        if event.done and now - self._last_refresh >= self.REFRESH_S:
            self._last_refresh = now
            self.refresh(manifest)  # states as they change: a file is marked done before its event

    def _run(self, items) -> None:
        from latentsky.download import DownloadManager

        Path(self.dest).mkdir(parents=True, exist_ok=True)
        manager = DownloadManager(self.dest)
        manager.progress = lambda event: self._on_progress(event, manager.manifest)
        self._last_refresh = 0.0
        with self._manager_lock:
            self._manager = manager
            stop_now = self.paused  # pause() came before the manager existed
        try:
            if stop_now:
                manager.stop()
            res = manager.run(items)
            self.paused = res.stopped
            self.info = ("paused: " if res.stopped else "") + res.summary()
        finally:
            with self._manager_lock:
                self._manager = None
            self.refresh(manager.manifest)
            manager.manifest.close()

    @staticmethod
    def _counts_text(counts: dict) -> str:
        return " · ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no download job here yet"

    def start(self) -> None:
        """Plan the products and download them (in the calling thread)."""
        self.paused = False
        self._guarded(lambda: self._run(self.plan()))

    def resume(self) -> None:
        """Continue every unfinished file of the manifest (also after a kernel restart)."""
        self.paused = False
        self._guarded(lambda: self._run(None))

    def retry_failed(self) -> None:
        """Run the failed files again (with every other unfinished one)."""
        self.resume()

    def pause(self) -> None:
        """Stop the running download now; :meth:`resume` continues it."""
        with self._manager_lock:
            self.paused = True
            if self._manager is not None:
                self._manager.stop()

    def __panel__(self):
        self.refresh()
        table = pn.widgets.Tabulator(
            self.param.states, pagination="remote", page_size=15, disabled=True, sizing_mode="stretch_width"
        )
        buttons = pn.Row(
            pn.widgets.Button(
                label="Start",
                color="primary",
                css_classes=["download-start"],
                on_click=lambda e: self.in_background(self.start),
            ),
            pn.widgets.Button(label="Pause", css_classes=["download-pause"], on_click=lambda e: self.pause()),
            pn.widgets.Button(
                label="Resume", css_classes=["download-resume"], on_click=lambda e: self.in_background(self.resume)
            ),
            pn.widgets.Button(
                label="Retry failed", color="warning", on_click=lambda e: self.in_background(self.retry_failed)
            ),
            pn.widgets.Button(label="Refresh", on_click=lambda e: self.refresh()),
        )
        return pn.Column(
            pn.widgets.TextInput.from_param(self.param.dest, label="Destination folder"),
            buttons,
            self.progress,
            self._messages,
            pn.pane.Markdown(param.bind(self._counts_text, self.param.counts), css_classes=["download-counts"]),
            table,
            sizing_mode="stretch_width",
        )
