"""Progress of a fit: :class:`TrainingEvent` and the Keras callback that sends them.

Both optimisers of :class:`~latentsky.autoencoder.estimator.LatentAutoencoder`
report through :class:`Tracker`: the Keras callback of minibatch Adam (one
event per epoch) and the full-batch L-BFGS loop (one event per iteration);
the events carry the losses for live loss curves (the app's Train step).
"""

from __future__ import annotations

import dataclasses
import os
import time

from latentsky.progress import ProgressEvent


@dataclasses.dataclass(frozen=True)
class TrainingEvent(ProgressEvent):
    """A :class:`~latentsky.progress.ProgressEvent` of task ``"train"`` that carries the epoch's losses.

    Attributes
    ----------
    logs : dict
        The Keras logs of the epoch (``loss``, ``data_error``, ``readout_mse``,
        ``val_loss``...), for loss curves.
    """

    logs: dict = dataclasses.field(default_factory=dict)


def _keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    return keras


class Tracker:
    """Counts the steps (epochs or iterations) of every phase and restart of one fit, keeps their
    losses, and sends a :class:`TrainingEvent` per step to ``progress``.

    Parameters
    ----------
    progress : callable or None
    total : int
        Steps expected in the whole fit (the progress bar's length; a fit that stops early says so).
    unit : str
        ``"epochs"`` or ``"iterations"``.
    """

    def __init__(self, progress, total: int, unit: str = "epochs"):
        self.progress, self.total, self.unit = progress, int(total), unit
        self.history: dict[str, list[float]] = {}
        self.done = 0
        self._start = time.monotonic()

    def emit(self, message: str = "", finished: bool = False, logs: dict | None = None) -> None:
        if self.progress is not None:
            self.progress(
                TrainingEvent(
                    "train",
                    self.done,
                    self.total,
                    self.unit,
                    message,
                    finished,
                    time.monotonic() - self._start,
                    dict(logs or {}),
                )
            )

    def step(self, logs: dict) -> None:
        """One epoch or iteration done, with its losses."""
        logs = {k: float(v) for k, v in logs.items()}
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)
        self.done += 1
        msg = " ".join(f"{k} {logs[k]:.4g}" for k in ("loss", "val_loss") if k in logs)
        self.emit(msg, logs=logs)

    def finish(self) -> None:
        stopped = self.done < self.total
        self.emit(f"stopped early at {self.unit[:-1]} {self.done}" if stopped else "", finished=True)

    def keras_callback(self):
        """A Keras callback that reports every epoch of ``model.fit`` to this tracker."""
        keras = _keras()
        tracker = self

        class TrainingProgress(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                tracker.step(logs or {})

        return TrainingProgress()
