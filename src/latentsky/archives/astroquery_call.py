"""One astroquery call under latentsky's rules: retried when worth it, every failure explained.

astroquery's query classes send their requests through latentsky's session
(:func:`latentsky.archives.base.session`), which asks again after a
retryable status or a dropped connection
(:class:`~latentsky.download.policy.RetryPolicy`).  :func:`call` maps what
is left onto latentsky's exceptions: an answer cut short is asked again
(:func:`latentsky.archives.base.with_retries`); a status that stayed bad, a
timeout, an unreachable host or the service's error page ends in an
:class:`~latentsky.exceptions.ArchiveError` naming the archive and the URL,
and astroquery's own argument checks (``ValueError``) in a
:class:`~latentsky.exceptions.CoordinateError`.
"""

from __future__ import annotations

from typing import Callable

from latentsky.archives.base import _Retryable, with_retries
from latentsky.config import conf
from latentsky.exceptions import ArchiveError, CoordinateError


def call(fn: Callable[[], object], *, archive: str, url: str, what: str = "query"):
    """Run ``fn()`` (an astroquery call) with retries; see the module docstring for the mapping."""
    import requests
    from astroquery.exceptions import InvalidQueryError

    from latentsky.download.policy import attempts_of

    def once():
        try:
            return fn()
        except requests.HTTPError as err:
            status = err.response.status_code if err.response is not None else 0
            attempts = attempts_of(err.response)
            after = f" (after {attempts} attempts)" if attempts > 1 else ""
            raise ArchiveError(f"{archive}: {what}: {url} answered HTTP {status}{after}") from err
        except requests.Timeout as err:
            raise ArchiveError(f"{archive}: {what}: no answer from {url} within {conf.timeout} s") from err
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as err:
            raise _Retryable(f"{archive}: {what}: the answer from {url} was cut short: {err}") from err
        except requests.RequestException as err:  # the session has asked again already
            raise ArchiveError(f"{archive}: {what}: cannot reach {url}: {type(err).__name__}: {err}") from err
        except InvalidQueryError as err:  # the service answered with an error page
            raise ArchiveError(f"{archive}: {what}: {url} answered an error page ({err})") from err
        except ValueError as err:  # astroquery's checks: an unknown survey, programme, waveband...
            raise CoordinateError(f"{archive}: {what}: {err}") from err

    return with_retries(once, what=f"{archive} {what}")
