"""One ESO TAP query through pyvo, synchronous or as an asynchronous (UWS) job, with latentsky's retries.

A retryable HTTP status or a dropped connection is asked again by the
session (:func:`~latentsky.archives.base.session`); an unreadable answer or
a job that went wrong is asked again here; a time-out (``conf.timeout``) or
a refused query is final and raises :class:`~latentsky.exceptions.ArchiveError`.
"""

from __future__ import annotations

import logging
import warnings

from astropy.table import Table

from latentsky.archives.base import _Retryable, check_offline, session, with_retries
from latentsky.config import conf
from latentsky.exceptions import ArchiveError

log = logging.getLogger(__name__)


def run_tap(adql: str, upload: Table | None, maxrec: int, *, asynchronous: bool = False) -> tuple[Table, bool]:
    """One TAP query, synchronous or as an asynchronous job; returns the table and whether it was capped.

    A retryable status or a dropped connection is asked again by the
    session (:func:`~latentsky.archives.base.session`); an answer that
    cannot be read is asked again here (a new job when asynchronous).
    """
    import pyvo
    from pyvo.dal.exceptions import DALOverflowWarning

    url = conf.eso_tap_url
    check_offline(url)  # before pyvo, which would wrap the refusal in a service error
    service = pyvo.dal.TAPService(url, session=session())
    log.debug("ESO TAP %s (%s): %s", url, "async" if asynchronous else "sync", adql)

    def once():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DALOverflowWarning)
                uploads = {"targets": upload} if upload is not None else None
                if asynchronous:
                    return _run_job(service, adql, maxrec, uploads)
                return service.run_sync(adql, maxrec=maxrec, uploads=uploads)
        except pyvo.dal.DALQueryError as err:
            raise ArchiveError(f"eso: the TAP service at {url} refused the query: {err}") from err
        except (pyvo.dal.DALServiceError, pyvo.dal.DALFormatError) as err:
            if _timed_out(err):  # a hung service is not asked again: we waited conf.timeout already
                raise ArchiveError(
                    f"eso: no answer from the TAP service at {url} within the timeout "
                    f"(conf.timeout = {conf.timeout} s): {err}"
                ) from err
            if isinstance(err, pyvo.dal.DALFormatError):
                raise _Retryable(f"eso: TAP service at {url} sent an unreadable answer: {err}") from err
            if err.code is None:  # no HTTP failure: an answer or a job that went wrong, worth another try
                raise _Retryable(f"eso: TAP service at {url} failed: {err}") from err
            after = _attempts_note(err)  # an HTTP failure the session has asked again already
            raise ArchiveError(f"eso: TAP service at {url} failed: {err}{after}") from err

    result = with_retries(once, what=f"eso TAP {url}")
    table = result.to_table()
    status = str(result.status[0]).upper()
    # a service that caps without saying so still gives exactly maxrec rows: treat that as capped too
    overflow = status == "OVERFLOW" or len(table) >= maxrec
    return table, overflow


def _run_job(service, adql: str, maxrec: int, uploads: dict | None):
    """One asynchronous (UWS) query through pyvo: submit, run, wait, fetch; the job is deleted in every case."""
    from pyvo.dal import DALServiceError

    job = service.submit_job(adql, maxrec=maxrec, uploads=uploads)
    try:
        job.run().wait()
        job.raise_if_error()
        return job.fetch_result()
    finally:
        try:
            job.delete()
        except DALServiceError as err:  # the service destroys it at its destruction time anyway
            log.debug("ESO: could not delete job %s: %s", job.url, err)


def _timed_out(err: BaseException) -> bool:
    """Whether a timeout is behind ``err`` (pyvo wraps one met while reading an answer as a format error)."""
    import requests
    from urllib3.exceptions import TimeoutError as Urllib3Timeout

    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, (requests.Timeout, Urllib3Timeout, TimeoutError)):
            return True
        seen.add(id(err))
        err = getattr(err, "cause", None) or err.__cause__ or err.__context__
    return False


def _attempts_note(err) -> str:
    """`` (after N attempts)`` for a pyvo error whose HTTP answer came after retries by the session."""
    from latentsky.download.policy import attempts_of

    response = getattr(getattr(err, "cause", None), "response", None)
    attempts = attempts_of(response) if response is not None else 1
    return f" (after {attempts} attempts)" if attempts > 1 else ""
