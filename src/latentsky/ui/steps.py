"""The steps before the map: Query, Download, Embed (ingest + ESN readouts) and Train.

Each step is a ``param``-based :class:`panel.viewable.Viewer` whose work is a
plain method (``Query.run()``, ``Download.start()``...), so tests drive them by
setting parameters and calling methods; the buttons call the same methods in a
background thread so the page stays responsive.  Long work reports
:class:`~latentsky.progress.ProgressEvent` objects to a :class:`ProgressView`,
the one progress widget of the app.  Errors end in :attr:`error` (a message
naming the parameter), never a traceback on the page.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import panel as pn
import param

from latentsky.autoencoder.maps import KINDS as MAP_KINDS
from latentsky.autoencoder.maps import NAMES as MAP_NAMES
from latentsky.exceptions import LatentskyError
from latentsky.pipeline_defaults import EMBED_DEFAULTS, MIN_EPOCHS, TRAIN_VISITS, train_defaults
from latentsky.progress import ProgressEvent

log = logging.getLogger(__name__)


def form(obj, names, prefix: str, width: int = 330):
    """Widgets for some parameters of ``obj``, each with the CSS class ``PREFIX-NAME`` (for browser tests).

    Numbers get typed inputs bounded by the parameter's bounds (a slider over 1..10,000 epochs is no way
    to type 150).
    """
    widgets = {}
    for n in names:
        spec = {"css_classes": [f"{prefix}-{n}"]}
        par = obj.param[n]
        if isinstance(par, (param.Integer, param.Number)) and not isinstance(par, param.Boolean):
            spec["type"] = pn.widgets.IntInput if isinstance(par, param.Integer) else pn.widgets.FloatInput
            lo, hi = par.bounds or (None, None)
            spec.update({k: v for k, v in (("start", lo), ("end", hi)) if v is not None})
        widgets[n] = spec
    return pn.Param(obj.param, parameters=list(names), show_name=False, width=width, widgets=widgets)


class Cancelled(LatentskyError):
    """Raised inside a step's progress callback to stop its work at the next event."""


class ProgressView(pn.viewable.Viewer):
    """Shows :class:`ProgressEvent` objects: a bar, counts, throughput and the last message.

    An instance is a progress callback: pass it as ``progress=`` to any latentsky function.
    """

    task = param.String(default="", doc="Task of the last event")
    done = param.Number(default=0, doc="Work done, in unit")
    total = param.Number(default=None, allow_None=True, doc="Work in all, None when unknown")
    unit = param.String(default="it")
    message = param.String(default="")
    finished = param.Boolean(default=False)
    rate = param.Number(default=0.0, doc="Throughput, unit per second")
    history = param.List(default=[], doc="(elapsed s, done) of the events seen, for curves")

    def __call__(self, event: ProgressEvent) -> None:
        rate = event.done / event.elapsed if event.elapsed > 0 else 0.0
        hist = (self.history if event.task == self.task else []) + [(event.elapsed, event.done)]
        self.param.update(task=event.task, done=float(event.done), total=event.total, unit=event.unit,
                          message=event.message, finished=event.finished, rate=rate, history=hist[-2000:])

    def reset(self) -> None:
        self.param.update(task="", done=0, total=None, message="", finished=False, rate=0.0, history=[])

    @param.depends("done", "total", "message", "rate", "finished")
    def _text(self):
        if not self.task:
            return ""
        total = f" / {self.total:,.0f}" if self.total else ""
        state = "finished" if self.finished else f"{self.rate:,.1f} {self.unit}/s"
        return f"**{self.task}**: {self.done:,.0f}{total} {self.unit} · {state} · {self.message}"

    def __panel__(self):
        bar = pn.indicators.Progress(value=-1, max=100, sizing_mode="stretch_width", height=20)

        def update(*_):
            bar.value = int(100 * min(1.0, self.done / self.total)) if self.total else (100 if self.finished else -1)
            bar.active = not self.finished and self.task != ""
        self.param.watch(update, ["done", "total", "finished"])
        update()
        return pn.Column(bar, pn.pane.Markdown(self._text, css_classes=["progress-text"]), sizing_mode="stretch_width")


class _Step(pn.viewable.Viewer):
    """What every step shares: a running flag, an error line, background running and cancelling."""

    running = param.Boolean(default=False, doc="Work in progress")
    error = param.String(default="", doc="The last error, as a message")
    info = param.String(default="", doc="One line about the last result")

    def __init__(self, **params):
        super().__init__(**params)
        self.progress = ProgressView()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None

    def _callback(self, event: ProgressEvent) -> None:
        self.progress(event)
        if self._cancel.is_set():
            raise Cancelled(f"{event.task}: cancelled")

    def _guarded(self, func, *args, **kwargs):
        self.error = ""
        self.running = True
        self._cancel.clear()
        try:
            return func(*args, **kwargs)
        except Cancelled as err:
            self.info = str(err)
        except (LatentskyError, ValueError, OSError, KeyError) as err:
            log.info("%s failed: %s", type(self).__name__, err)
            self.error = str(err)
        finally:
            self.running = False

    def in_background(self, func, *args, **kwargs) -> threading.Thread:
        """Run ``func`` in a thread (one at a time); the page stays responsive."""
        if self._thread is not None and self._thread.is_alive():
            self.error = "busy: the previous run has not finished (cancel it first)"
            return self._thread
        self._thread = threading.Thread(target=self._guarded, args=(func, *args), kwargs=kwargs, daemon=True,
                                        name=f"latentsky-{type(self).__name__}")
        self._thread.start()
        return self._thread

    def cancel(self) -> None:
        """Ask the running work to stop at its next progress event."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for background work to end (tests, scripts)."""
        if self._thread is not None:
            self._thread.join(timeout)

    @param.depends("error", "info")
    def _messages(self):
        if self.error:
            return pn.pane.Alert(self.error, alert_type="danger", css_classes=["step-error"])
        return pn.pane.Markdown(self.info, css_classes=["step-info"])


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
    fmt = ("votable" if name.endswith((".xml", ".vot", ".votable")) else "fits" if name.endswith((".fits", ".fit"))
           else "ascii.ecsv" if name.endswith(".ecsv") else "ascii.csv")
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
            kw.update(collection=self.collection or None, instrument=self.instrument or None,
                      start=self.start or None, end=self.end or None)
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
        table = pn.widgets.Tabulator(pd.DataFrame(), pagination="remote", page_size=15, disabled=True,
                                     sizing_mode="stretch_width", header_filters=False)
        self.param.watch(lambda e: setattr(table, "value", self.results), "products")
        button = pn.widgets.Button(label="Query", color="primary", css_classes=["query-run"])
        button.on_click(lambda e: self.in_background(self.run))
        fields = form(self, ["archive", "target", "coordinates", "radius", "collection", "instrument", "start",
                             "end"], "query")
        return pn.Row(pn.Column(fields, pn.pane.Markdown("or upload positions (CSV, VOTable, FITS):"), upload,
                                button), pn.Column(self._messages, table, sizing_mode="stretch_width"),
                      sizing_mode="stretch_width")


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
        names = sorted(set(str(a) for a in self.products["archive"])) if "archive" in self.products.colnames \
            else ["eso"]
        for name in names:
            sub = self.products[self.products["archive"] == name] if "archive" in self.products.colnames \
                else self.products
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
        table = pn.widgets.Tabulator(self.param.states, pagination="remote", page_size=15, disabled=True,
                                     sizing_mode="stretch_width")
        buttons = pn.Row(
            pn.widgets.Button(label="Start", color="primary", css_classes=["download-start"],
                              on_click=lambda e: self.in_background(self.start)),
            pn.widgets.Button(label="Pause", css_classes=["download-pause"], on_click=lambda e: self.pause()),
            pn.widgets.Button(label="Resume", css_classes=["download-resume"],
                              on_click=lambda e: self.in_background(self.resume)),
            pn.widgets.Button(label="Retry failed", color="warning",
                              on_click=lambda e: self.in_background(self.retry_failed)),
            pn.widgets.Button(label="Refresh", on_click=lambda e: self.refresh()),
        )
        return pn.Column(pn.widgets.TextInput.from_param(self.param.dest, label="Destination folder"), buttons,
                         self.progress, self._messages, pn.pane.Markdown(param.bind(self._counts_text, self.param.counts),
                                          css_classes=["download-counts"]), table,
                         sizing_mode="stretch_width")


# ----------------------------------------------------------------------------- Embed

class Embed(_Step):
    """Ingest downloaded FITS files into a spectrum store and embed it with the echo-state network."""

    source = param.String(default="", doc="Folder of FITS spectra (the downloads)")
    out = param.String(default="", doc="Spectrum store to write")
    embeddings = param.String(default="", doc="Embeddings folder to write (default: OUT.embeddings)")
    # the defaults are the estimator's (EMBED_DEFAULTS), so the Train step can reuse what this wrote
    n_units = param.Integer(default=EMBED_DEFAULTS["n_units"], bounds=(4, 2000), doc="Reservoir units")
    cycle_weight = param.Number(default=EMBED_DEFAULTS["cycle_weight"], bounds=(0.01, 0.99),
                                doc="Reservoir cycle weight (spectral radius)")
    leak_rate = param.Number(default=EMBED_DEFAULTS["leak_rate"], bounds=(0.01, 1.0), doc="Leak rate")
    input_scaling = param.Number(default=EMBED_DEFAULTS["input_scaling"], bounds=(0.01, 10.0), doc="Input scaling")
    ridge = param.Number(default=EMBED_DEFAULTS["ridge"], bounds=(1e-10, 1e3),
                         doc="Ridge regularisation of the readouts")
    store = param.String(default="", doc="The store written by the last run")

    def run(self):
        """Ingest then embed (in the calling thread); cancel stops at the next progress event."""
        def work():
            from latentsky.embed.runner import embed_store
            from latentsky.ingest import ingest
            from latentsky.store.output import check_output

            if not self.source or not Path(self.source).exists():
                raise LatentskyError(f"source: {self.source!r} is not a folder of FITS spectra")
            if not self.out:
                raise LatentskyError("out: choose where to write the spectrum store")
            # both outputs checked before any work: a folder latentsky did not write is refused here
            check_output(self.out, "spectra", inputs=[self.source])
            check_output(self.embeddings_path(), "embeddings", inputs=[self.source, self.out])
            res = ingest([self.source], self.out, progress=self._callback)
            self.store = str(res.store)
            emb = self.embeddings_path()
            embed_store(res.store, emb, progress=self._callback, reservoir=EMBED_DEFAULTS["reservoir"],
                        n_units=self.n_units, cycle_weight=self.cycle_weight, leak_rate=self.leak_rate,
                        input_scaling=self.input_scaling, ridge=self.ridge)
            self.info = f"store {self.store}, embeddings {emb}"
        return self._guarded(work)

    def embeddings_path(self) -> str:
        """Where the embeddings are written: :attr:`embeddings`, else ``OUT.embeddings``."""
        return self.embeddings or f"{self.out}.embeddings"

    def __panel__(self):
        fields = form(self, ["source", "out", "n_units", "cycle_weight", "leak_rate", "input_scaling", "ridge"],
                      "embed")
        buttons = pn.Row(pn.widgets.Button(label="Ingest + embed", color="primary", css_classes=["embed-run"],
                                           on_click=lambda e: self.in_background(self.run)),
                         pn.widgets.Button(label="Cancel", on_click=lambda e: self.cancel()))
        return pn.Row(pn.Column(fields, buttons), pn.Column(self.progress, self._messages,
                                                            sizing_mode="stretch_width"), sizing_mode="stretch_width")


# ----------------------------------------------------------------------------- Train

#: The autoencoder's defaults (the estimator's own): the Train step's widgets start from them.
_TRAIN = train_defaults()


class Train(_Step):
    """Turn a store into a latent map and open it in Explore.

    ``method="autoencoder"`` runs ``latentsky pipeline`` (stage-1 embedding with the
    Embed step's settings, then the map of kind :attr:`map`) in a child process
    (:mod:`latentsky.ui.train_worker`), so cancel stops it at once and the
    server never loads TensorFlow for training; its progress events come back on
    the child's stdout, and the losses of each iteration (L-BFGS) or epoch (Adam)
    draw :attr:`losses` as a live curve.  ``"pca"`` places spectra by a 2-D PCA
    of the flux (quick, no training).  The defaults are the estimator's own
    (:func:`~latentsky.pipeline_defaults.train_defaults`), the pipeline's.
    """

    store = param.String(default="", doc="Spectrum store to map")
    out = param.String(default="", doc="Results folder (latent.parquet...)")
    method = param.Selector(default="autoencoder", objects=["autoencoder", "pca"], doc="How the map is made")
    map = param.Selector(default=_TRAIN["map"], objects=list(MAP_KINDS),
                         doc="Kind of map: " + "; ".join(f"{k}: {MAP_NAMES[k]}" for k in MAP_KINDS))
    optimizer = param.Selector(default=_TRAIN["optimizer"], objects=["auto", "lbfgs", "adam"],
                               doc="Full-batch L-BFGS or minibatch Adam (auto: L-BFGS when the data fit in memory)")
    max_iter = param.Integer(default=_TRAIN["max_iter"], bounds=(1, 100000),
                             doc="L-BFGS: most iterations per restart (stops earlier when the loss stalls)")
    restarts = param.Integer(default=_TRAIN["restarts"], bounds=(1, 100),
                             doc="Random starts of an end-to-end map; the lowest training loss is kept")
    epochs = param.Integer(default=_TRAIN["epochs"], bounds=(1, 10000),
                           doc="Adam: most training epochs (stops early when the loss stalls; on a big store it "
                               f"trains fewer, at most {TRAIN_VISITS:,} spectra x epochs per phase and at least "
                               f"{MIN_EPOCHS} epochs)")
    learning_rate = param.Number(default=_TRAIN["learning_rate"], bounds=(1e-5, 1.0), doc="Adam learning rate")
    hidden = param.Integer(default=_TRAIN["hidden"][0], bounds=(2, 2048),
                           doc="Units of the encoder's and decoder's hidden layer")
    patience = param.Integer(default=_TRAIN["patience"], bounds=(1, 10000),
                             doc="Adam: epochs without improvement before stopping")
    batch_size = param.Integer(default=_TRAIN["batch_size"], bounds=(1, 65536), doc="Adam: spectra per training batch")
    embed = param.Dict(default={}, doc="Stage-1 settings (the Embed step's; empty: the pipeline's defaults)")
    embeddings = param.String(default="", doc="Embeddings written by the Embed step, reused when they exist and "
                                              "were made from this store with these settings (empty: none)")
    losses = param.DataFrame(default=pd.DataFrame(), doc="One row per finished step: epoch, loss, val_loss...")
    results = param.ClassSelector(class_=object, default=None, doc="The LatentData made by the last run")
    log_lines = param.List(default=[], doc="Output of the pipeline command")

    def __init__(self, **params):
        super().__init__(**params)
        self._loss_pipe = None
        self._loss_sent = 0.0

    def run(self):
        """Make the map (in the calling thread); sets :attr:`results`."""
        def work():
            from latentsky.pipeline import PIPELINE_KIND
            from latentsky.store.output import check_output, output_folder
            from latentsky.ui.data import LatentData

            if not self.store or not (Path(self.store) / "catalog.parquet").exists():
                raise LatentskyError(f"store: {self.store!r} is not a spectrum store (run Embed first)")
            out = Path(self.out or f"{self.store}.results")
            check_output(out, PIPELINE_KIND, inputs=[self.store], in_place=True)  # a folder not ours: refused
            self.losses = pd.DataFrame()
            if self.method == "pca":
                data = LatentData.from_store(self.store)
                with output_folder(out, PIPELINE_KIND, inputs=[self.store]):
                    data.table.to_parquet(out / "latent.parquet", index=False)
            else:
                self._run_pipeline(out)
                data = LatentData.from_pipeline(out, store=self.store)
                data.preload()
            self.info = f"{len(data.table)} spectra mapped ({self.method}) into {out}"
            self.results = data
        return self._guarded(work)

    def train_params(self) -> dict:
        """The autoencoder's parameters (overrides of the pipeline's defaults) for the current widgets."""
        return {"map": self.map, "optimizer": self.optimizer, "max_iter": self.max_iter, "restarts": self.restarts,
                "epochs": self.epochs, "learning_rate": self.learning_rate, "hidden": [self.hidden],
                "patience": self.patience, "batch_size": self.batch_size}

    def on_event(self, event: ProgressEvent) -> None:
        """One progress event of the run: to the progress bar, and a training epoch's losses to :attr:`losses`."""
        self._callback(event)
        logs = getattr(event, "logs", None)
        if event.task == "train" and logs:
            row = pd.DataFrame([{"epoch": int(event.done), **{k: float(v) for k, v in logs.items()}}])
            self.losses = row if self.losses.empty else pd.concat([self.losses, row], ignore_index=True)
        if event.task == "train" and event.finished:
            self._send_losses(force=True)  # the last epochs, whatever the throttle held back

    def _run_pipeline(self, out: Path) -> None:
        import json
        import os
        import subprocess
        import sys

        from latentsky.ui.train_worker import decode_event

        from latentsky.store.lineage import LINEAGE_FILE

        # the Embed step's output, once it exists (the pipeline checks that it fits)
        reuse = self.embeddings if self.embeddings and (Path(self.embeddings) / LINEAGE_FILE).is_file() else None
        params = {"train": self.train_params(), "embed": dict(self.embed) or None, "embeddings": reuse}
        cmd = [sys.executable, "-m", "latentsky.ui.train_worker", str(self.store), str(out), json.dumps(params)]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}  # no TF banner
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env)
        self._proc = proc
        lines = []
        try:
            for line in proc.stdout:
                event = decode_event(line)
                if event is None:
                    lines.append(line.rstrip())
                    self.log_lines = lines[-200:]
                else:
                    self.on_event(event)  # raises Cancelled after cancel()
        except Cancelled:
            proc.terminate()
            raise
        finally:
            proc.stdout.close()
            proc.wait()
            self._proc = None
        if self._cancel.is_set():
            raise Cancelled("train: cancelled")
        if proc.returncode != 0:
            raise LatentskyError(f"train: the pipeline on {self.store} failed: {' | '.join(lines[-3:])}")

    def cancel(self) -> None:
        """Stop the run: the child process at once (the pipeline resumes from its finished stages next time)."""
        super().cancel()
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.terminate()

    LOSS_REFRESH_S = 0.25
    """Shortest interval, seconds, between two redraws of the loss curve (a fast run has many epochs a second)."""

    def loss_plot(self):
        """The live loss curve: a DynamicMap fed by a Pipe, so each epoch updates the same Bokeh plot's data
        (no new plot per epoch); redrawn at most every :data:`LOSS_REFRESH_S` and once at the end."""
        import holoviews as hv

        from latentsky.viz.latent import loss_curve

        if self._loss_pipe is None:
            self._loss_pipe = hv.streams.Pipe(data=self.losses)
            self.param.watch(lambda e: self._send_losses(force=e.new.empty), "losses")  # a new run: at once
        return hv.DynamicMap(lambda data: loss_curve(data), streams=[self._loss_pipe])

    def _send_losses(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._loss_pipe is not None and (force or now - self._loss_sent >= self.LOSS_REFRESH_S):
            self._loss_sent = now
            self._loss_pipe.send(self.losses)

    def __panel__(self):
        fields = form(self, ["store", "out", "method", "map", "optimizer", "max_iter", "restarts", "epochs",
                             "learning_rate", "hidden", "patience", "batch_size"], "train")
        buttons = pn.Row(pn.widgets.Button(label="Train", color="primary", css_classes=["train-run"],
                                           on_click=lambda e: self.in_background(self.run)),
                         pn.widgets.Button(label="Cancel", on_click=lambda e: self.cancel()))
        log_pane = pn.pane.Str(param.bind(lambda lines: "\n".join(lines[-12:]), self.param.log_lines))
        losses = pn.pane.HoloViews(self.loss_plot(), css_classes=["train-losses"])
        return pn.Row(pn.Column(fields, buttons), pn.Column(self.progress, self._messages, losses, log_pane,
                                                          sizing_mode="stretch_width"), sizing_mode="stretch_width")
