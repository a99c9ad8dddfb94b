"""What every step of the app before the map shares: its parameter form, its progress widget, running in the
background, cancelling, and errors shown as a message naming the parameter."""

from __future__ import annotations

import logging
import threading

import panel as pn
import param

from latentsky.exceptions import LatentskyError
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
        self.param.update(
            task=event.task,
            done=float(event.done),
            total=event.total,
            unit=event.unit,
            message=event.message,
            finished=event.finished,
            rate=rate,
            history=hist[-2000:],
        )

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
        self._thread = threading.Thread(
            target=self._guarded,
            args=(func, *args),
            kwargs=kwargs,
            daemon=True,
            name=f"latentsky-{type(self).__name__}",
        )
        self._thread.start()
        return self._thread

    def cancel(self) -> None:
        """Ask the running work to stop at its next progress event."""
        self._cancel.set()

    def run_buttons(self, label: str, css_class: str) -> pn.Row:
        """A primary button running :meth:`run` in the background (CSS class ``css_class``) and Cancel."""
        return pn.Row(
            pn.widgets.Button(
                label=label, color="primary", css_classes=[css_class], on_click=lambda e: self.in_background(self.run)
            ),
            pn.widgets.Button(label="Cancel", on_click=lambda e: self.cancel()),
        )

    def wait(self, timeout: float | None = None) -> None:
        """Wait for background work to end (tests, scripts)."""
        if self._thread is not None:
            self._thread.join(timeout)

    @param.depends("error", "info")
    def _messages(self):
        if self.error:
            return pn.pane.Alert(self.error, alert_type="danger", css_classes=["step-error"])
        return pn.pane.Markdown(self.info, css_classes=["step-info"])
