"""The app's modelling steps: Embed (ingest + ESN readouts) and Train (the latent map)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd
import panel as pn
import param

from latentsky.autoencoder.maps import KINDS as MAP_KINDS
from latentsky.autoencoder.maps import NAMES as MAP_NAMES
from latentsky.exceptions import LatentskyError
from latentsky.pipeline_defaults import (
    EMBED_DEFAULTS,
    MIN_EPOCHS,
    TRAIN_VISITS,
    train_defaults,
)
from latentsky.progress import ProgressEvent
from latentsky.ui.step_base import Cancelled, _Step, form

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- Embed


class Embed(_Step):
    """Ingest downloaded FITS files into a spectrum store and embed it with the echo-state network."""

    source = param.String(default="", doc="Folder of FITS spectra (the downloads)")
    out = param.String(default="", doc="Spectrum store to write")
    embeddings = param.String(default="", doc="Embeddings folder to write (default: OUT.embeddings)")
    # the defaults are the estimator's (EMBED_DEFAULTS), so the Train step can reuse what this wrote
    n_units = param.Integer(default=EMBED_DEFAULTS["n_units"], bounds=(4, 2000), doc="Reservoir units")
    cycle_weight = param.Number(
        default=EMBED_DEFAULTS["cycle_weight"], bounds=(0.01, 0.99), doc="Reservoir cycle weight (spectral radius)"
    )
    leak_rate = param.Number(default=EMBED_DEFAULTS["leak_rate"], bounds=(0.01, 1.0), doc="Leak rate")
    input_scaling = param.Number(default=EMBED_DEFAULTS["input_scaling"], bounds=(0.01, 10.0), doc="Input scaling")
    ridge = param.Number(
        default=EMBED_DEFAULTS["ridge"], bounds=(1e-10, 1e3), doc="Ridge regularisation of the readouts"
    )
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
            embed_store(
                res.store,
                emb,
                progress=self._callback,
                reservoir=EMBED_DEFAULTS["reservoir"],
                n_units=self.n_units,
                cycle_weight=self.cycle_weight,
                leak_rate=self.leak_rate,
                input_scaling=self.input_scaling,
                ridge=self.ridge,
            )
            self.info = f"store {self.store}, embeddings {emb}"

        return self._guarded(work)

    def embeddings_path(self) -> str:
        """Where the embeddings are written: :attr:`embeddings`, else ``OUT.embeddings``."""
        return self.embeddings or f"{self.out}.embeddings"

    def __panel__(self):
        fields = form(
            self, ["source", "out", "n_units", "cycle_weight", "leak_rate", "input_scaling", "ridge"], "embed"
        )
        buttons = self.run_buttons("Ingest + embed", "embed-run")
        return pn.Row(
            pn.Column(fields, buttons),
            pn.Column(self.progress, self._messages, sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )


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
    map = param.Selector(
        default=_TRAIN["map"],
        objects=list(MAP_KINDS),
        doc="Kind of map: " + "; ".join(f"{k}: {MAP_NAMES[k]}" for k in MAP_KINDS),
    )
    optimizer = param.Selector(
        default=_TRAIN["optimizer"],
        objects=["auto", "lbfgs", "adam"],
        doc="Full-batch L-BFGS or minibatch Adam (auto: L-BFGS when the data fit in memory)",
    )
    max_iter = param.Integer(
        default=_TRAIN["max_iter"],
        bounds=(1, 100000),
        doc="L-BFGS: most iterations per restart (stops earlier when the loss stalls)",
    )
    restarts = param.Integer(
        default=_TRAIN["restarts"],
        bounds=(1, 100),
        doc="Random starts of an end-to-end map; the lowest training loss is kept",
    )
    epochs = param.Integer(
        default=_TRAIN["epochs"],
        bounds=(1, 10000),
        doc="Adam: most training epochs (stops early when the loss stalls; on a big store it "
        f"trains fewer, at most {TRAIN_VISITS:,} spectra x epochs per phase and at least "
        f"{MIN_EPOCHS} epochs)",
    )
    learning_rate = param.Number(default=_TRAIN["learning_rate"], bounds=(1e-5, 1.0), doc="Adam learning rate")
    hidden = param.Integer(
        default=_TRAIN["hidden"][0], bounds=(2, 2048), doc="Units of the encoder's and decoder's hidden layer"
    )
    patience = param.Integer(
        default=_TRAIN["patience"], bounds=(1, 10000), doc="Adam: epochs without improvement before stopping"
    )
    batch_size = param.Integer(default=_TRAIN["batch_size"], bounds=(1, 65536), doc="Adam: spectra per training batch")
    embed = param.Dict(default={}, doc="Stage-1 settings (the Embed step's; empty: the pipeline's defaults)")
    embeddings = param.String(
        default="",
        doc="Embeddings written by the Embed step, reused when they exist and "
        "were made from this store with these settings (empty: none)",
    )
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
        return {
            "map": self.map,
            "optimizer": self.optimizer,
            "max_iter": self.max_iter,
            "restarts": self.restarts,
            "epochs": self.epochs,
            "learning_rate": self.learning_rate,
            "hidden": [self.hidden],
            "patience": self.patience,
            "batch_size": self.batch_size,
        }

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

        from latentsky.store.lineage import LINEAGE_FILE
        from latentsky.ui.train_worker import decode_event

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
        fields = form(
            self,
            [
                "store",
                "out",
                "method",
                "map",
                "optimizer",
                "max_iter",
                "restarts",
                "epochs",
                "learning_rate",
                "hidden",
                "patience",
                "batch_size",
            ],
            "train",
        )
        buttons = self.run_buttons("Train", "train-run")
        log_pane = pn.pane.Str(param.bind(lambda lines: "\n".join(lines[-12:]), self.param.log_lines))
        losses = pn.pane.HoloViews(self.loss_plot(), css_classes=["train-losses"])
        return pn.Row(
            pn.Column(fields, buttons),
            pn.Column(self.progress, self._messages, losses, log_pane, sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )
