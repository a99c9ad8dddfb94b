"""One astroquery call under latentsky's rules: retried when worth it, every failure explained.

astroquery's query classes send their requests and raise requests' and their
own exceptions; :func:`call` maps them onto latentsky's: a dropped connection
or a retryable status (:data:`latentsky.download.policy.RETRYABLE_STATUS`)
is asked again (:func:`latentsky.archives.base.with_retries`), a timeout, a
refusal or the service's error page ends in an
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

    from latentsky.download.policy import RETRYABLE_STATUS

    def once():
        try:
            return fn()
        except requests.HTTPError as err:
            status = err.response.status_code if err.response is not None else 0
            message = f"{archive}: {what}: {url} answered HTTP {status}"
            if status in RETRYABLE_STATUS:
                raise _Retryable(message) from err
            raise ArchiveError(message) from err
        except requests.Timeout as err:
            raise ArchiveError(f"{archive}: {what}: no answer from {url} within {conf.timeout} s") from err
        except requests.RequestException as err:
            raise _Retryable(f"{archive}: {what}: cannot reach {url}: {type(err).__name__}: {err}") from err
        except InvalidQueryError as err:  # the service answered with an error page
            raise ArchiveError(f"{archive}: {what}: {url} answered an error page ({err})") from err
        except ValueError as err:  # astroquery's checks: an unknown survey, programme, waveband...
            raise CoordinateError(f"{archive}: {what}: {err}") from err

    return with_retries(once, what=f"{archive} {what}")
