"""What a download run returns: the files done and skipped, and each failure with its reason."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from latentsky.download.items import DownloadItem


@dataclasses.dataclass(frozen=True)
class DownloadFailure:
    """An item that could not be fetched in a run.

    Attributes
    ----------
    item : DownloadItem
        The item (pass failures back to :meth:`DownloadManager.run` to retry them).
    error : str
        The last error, naming the URL and what went wrong.
    attempts : int
        Attempts made in the run.
    """

    item: DownloadItem
    error: str
    attempts: int

    def __str__(self) -> str:
        return f"{self.item.key}: {self.error} (after {self.attempts} attempt(s))"


@dataclasses.dataclass
class Results:
    """What a :meth:`DownloadManager.run` did.

    Attributes
    ----------
    done : list of Path
        Files fetched and verified in this run.
    skipped : list of Path
        Files already present and verified (nothing fetched).
    errors : list of DownloadFailure
        Items that failed; ``manager.run(results.errors)`` retries them alone.
    requests : int
        HTTP requests made.
    retries : int
        Attempts beyond the first.
    bytes : int
        Bytes received, bytes.
    elapsed : float
        Wall-clock duration of the run, s.
    stopped : bool
        True when :meth:`DownloadManager.stop` or :attr:`halted` ended the
        run early (the files not reached are still pending in the manifest).
    halted : str
        Why the run stopped by itself, when the destination or its manifest
        could not be written (disk full...); empty otherwise.  The next run
        goes on where this one stopped.
    """

    done: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)
    errors: list = dataclasses.field(default_factory=list)
    requests: int = 0
    retries: int = 0
    bytes: int = 0
    elapsed: float = 0.0
    stopped: bool = False
    halted: str = ""

    @property
    def ok(self) -> bool:
        """True when no item failed and the run was not halted."""
        return not self.errors and not self.halted

    @property
    def files(self) -> list[Path]:
        """Every file in place after the run (done + skipped)."""
        return self.done + self.skipped

    def summary(self) -> str:
        """One line: counts, volume and rate."""
        rate = len(self.done) / self.elapsed if self.elapsed else 0.0
        return (
            f"{len(self.done)} downloaded, {len(self.skipped)} already present, {len(self.errors)} failed; "
            f"{self.bytes / 1e6:.1f} MB in {self.elapsed:.1f} s ({rate:.1f} files/s, "
            f"{self.requests} requests, {self.retries} retries)"
            + (f"; stopped: {self.halted}" if self.halted else "; stopped early" if self.stopped else "")
        )

    def __repr__(self) -> str:
        return f"<Results: {self.summary()}>"
