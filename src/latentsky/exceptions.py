"""Errors and warnings raised by latentsky.

Every error a user can provoke with bad input is a :class:`LatentskyError`
whose message names the file, row or parameter at fault.
"""

from __future__ import annotations

from pathlib import Path


class LatentskyError(Exception):
    """Base class of all errors raised by latentsky."""


class LatentskyWarning(UserWarning):
    """Base class of all warnings issued by latentsky."""


class SpectrumError(LatentskyError):
    """A file could not be read as a spectrum.

    Parameters
    ----------
    path : path-like
        The offending file; it is always part of the message.
    problem : str
        What is wrong with it, in words a user can act on.
    """

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # keeps the two-argument constructor picklable (Dask workers)
        return (type(self), (self.path, self.problem))


class StoreError(LatentskyError):
    """A store on disk is missing, incomplete or inconsistent."""
