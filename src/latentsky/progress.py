"""One progress event stream for every long task.

Long work (ingest, downloads, embedding, training) reports
:class:`ProgressEvent` objects to a callback.  The terminal shows them with a
tqdm bar (:class:`TqdmProgress`); the app's progress widget subscribes to the
same events.  Library code never prints.

Examples
--------
>>> events = []
>>> with Progress("ingest", total=2, unit="spectra", callback=events.append) as p:
...     p.advance(1)
...     p.advance(1)
>>> [e.done for e in events]
[0, 1, 2, 2]
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

ProgressCallback = Callable[["ProgressEvent"], None]


@dataclasses.dataclass(frozen=True)
class ProgressEvent:
    """A snapshot of one task's progress.

    Attributes
    ----------
    task : str
        Name of the task, e.g. ``"ingest"`` or ``"download"``.
    done, total : float
        Work done so far and in all (``total`` is None when unknown), in ``unit``.
    unit : str
        What is counted: ``"spectra"``, ``"B"`` (bytes), ``"epochs"``...
    message : str
        A short status line (the current file, the last error...).
    finished : bool
        True for the last event of the task.
    elapsed : float
        Seconds since the task started.
    """

    task: str
    done: float
    total: float | None
    unit: str = "it"
    message: str = ""
    finished: bool = False
    elapsed: float = 0.0

    @property
    def fraction(self) -> float | None:
        """Fraction done in [0, 1], or None when the total is unknown."""
        if not self.total:
            return None
        return min(1.0, self.done / self.total)


class Progress:
    """Emit :class:`ProgressEvent` objects for one task to a callback.

    Parameters
    ----------
    task : str
        Task name carried by every event.
    total : float or None
        Amount of work expected, in ``unit``.
    unit : str
        What ``advance`` counts.
    callback : callable or None
        Receives every event; None discards them.
    """

    def __init__(
        self, task: str, total: float | None = None, *, unit: str = "it", callback: ProgressCallback | None = None
    ):
        self.task, self.total, self.unit = task, total, unit
        self.callback = callback
        self.done: float = 0
        self._start = time.monotonic()

    def _emit(self, message: str = "", finished: bool = False) -> None:
        if self.callback is not None:
            self.callback(
                ProgressEvent(
                    self.task, self.done, self.total, self.unit, message, finished, time.monotonic() - self._start
                )
            )

    def advance(self, amount: float = 1, message: str = "") -> None:
        """Count ``amount`` more units of work done."""
        self.done += amount
        self._emit(message)

    def set_total(self, total: float | None) -> None:
        """Change the expected amount of work (e.g. once a listing is known)."""
        self.total = total
        self._emit()

    def __enter__(self) -> "Progress":
        self._emit()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._emit("failed" if exc_type else "", finished=True)


class TqdmProgress:
    """A callback that draws events on tqdm bars, one bar per task.

    Parameters
    ----------
    disable : bool or None
        Passed to tqdm; None hides the bars when the output is not a terminal.
    """

    def __init__(self, disable: bool | None = None):
        self.disable = disable
        self._bars: dict = {}

    def __call__(self, event: ProgressEvent) -> None:
        from tqdm.auto import tqdm

        bar = self._bars.get(event.task)
        if bar is None:
            bar = tqdm(
                total=event.total,
                desc=event.task,
                unit=event.unit,
                disable=self.disable,
                unit_scale=event.unit == "B",
                dynamic_ncols=True,
            )
            self._bars[event.task] = bar
        if event.total != bar.total:
            bar.total = event.total
        bar.n = event.done
        if event.message:
            bar.set_postfix_str(event.message[-40:], refresh=False)
        bar.refresh()
        if event.finished:
            bar.close()
            del self._bars[event.task]
