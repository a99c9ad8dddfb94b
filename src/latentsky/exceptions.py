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


class ArchiveError(LatentskyError):
    """An archive refused a query, answered something unreadable or could not be reached.

    The message names the archive, the URL (never with credentials) and, for a
    bad argument, the parameter at fault.
    """


class QueryTruncatedError(ArchiveError):
    """An archive capped a result (TAP ``OVERFLOW``) and the query could not be split further.

    Raised instead of returning a silently short table (astroquery #638).
    """


class CoordinateError(LatentskyError, ValueError):
    """A position, radius or target name cannot be used; the message names the parameter."""


class DownloadError(LatentskyError):
    """A file could not be downloaded or did not verify.

    Parameters
    ----------
    key : str
        The item's key in the manifest.
    url : str
        The URL tried (URLs never carry credentials in latentsky).
    problem : str
        What went wrong, in words a user can act on.
    retryable : bool
        Whether trying again later may succeed (a 503, a dropped connection)
        rather than not (a 404, a checksum that will never match).
    retry_after : float or None
        Seconds the server asked us to wait (``Retry-After``), if it did.
    """

    def __init__(self, key: str, url: str, problem: str, *, retryable: bool = True, retry_after: float | None = None):
        self.key, self.url, self.problem = key, url, problem
        self.retryable, self.retry_after = retryable, retry_after
        super().__init__(f"{key} ({url}): {problem}")

    def __reduce__(self):
        return (
            _rebuild_download_error,
            (type(self), self.key, self.url, self.problem, self.retryable, self.retry_after),
        )


def _rebuild_download_error(cls, key, url, problem, retryable, retry_after):
    return cls(key, url, problem, retryable=retryable, retry_after=retry_after)


class CredentialError(LatentskyError):
    """A credential is needed but missing or rejected (the secret is never in the message)."""


class EmbeddingError(LatentskyError, ValueError):
    """Echo-state-network embedding failed: a bad parameter, or a spectrum that
    cannot be embedded (no valid pixels, too short for the washout); the
    message names the parameter or the spectrum id."""


class AutoencoderError(LatentskyError, ValueError):
    """Stage 2 (the readout autoencoder, its baselines and the pipeline) cannot
    proceed: a bad parameter, missing stage-1 statistics, an unreadable model
    file; the message names the parameter or the file."""
