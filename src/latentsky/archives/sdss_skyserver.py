"""SkyServer transport for the SDSS client: one SQL statement sent by astroquery.sdss, its answer judged and parsed.

astroquery.sdss builds and sends the request (``SDSS.query_sql`` with
``data_release=conf.sdss_data_release``) to the SkyServer named by
``conf.sdss_skyserver_url`` (given to astroquery's ``conf.skyserver_baseurl``
for the call; astroquery appends ``/dr<N>/en/tools/search/x_results.aspx``).
The request goes through latentsky's session (a 5xx or a 429 is asked again
by its retry policy, with backoff), the answer is judged by the same policy
(an HTML page where a table belongs is asked again too) and parsed with
64-bit identifiers kept exact; astroquery's cache is off (a failed answer is
never replayed, astroquery #1904).
"""

from __future__ import annotations

import contextlib
import io
import re
import threading

from astropy.table import Table

from latentsky.archives.base import _Retryable, check_offline, session, with_retries
from latentsky.config import conf
from latentsky.exceptions import ArchiveError

_ASTROQUERY_LOCK = threading.Lock()  # astroquery.sdss reads its server from a process-wide conf

_ID_COLUMNS = ("specobjid", "objid", "bestobjid")


def skyserver_base() -> str:
    """astroquery.sdss's ``skyserver_baseurl`` for ``conf.sdss_skyserver_url``.

    astroquery appends ``/dr<N>/en/tools/search/x_results.aspx`` itself, so a
    SkyServer web-service URL (``https://skyserver.sdss.org/dr17/SkyServerWS/``)
    gives its host, and any other URL (a mirror, the local archive's
    ``.../sdss/``) is used as the base.
    """
    url = conf.sdss_skyserver_url.strip()
    return re.sub(r"/dr\d+/SkyServerWS/?$", "", url, flags=re.IGNORECASE).rstrip("/")


def sql_url(data_release: int | None = None) -> str:
    """The SkyServer SQL search URL astroquery.sdss asks (from ``conf.sdss_skyserver_url``)."""
    from astroquery.sdss import SDSSClass

    dr = conf.sdss_data_release if data_release is None else int(data_release)
    return skyserver_base() + SDSSClass.QUERY_URL_SUFFIX_DR_NEW.format(dr=dr)


def sql_payload(sql: str, *, data_release: int | None = None) -> dict:
    """The request parameters astroquery.sdss sends for ``sql`` (no network)."""
    from astroquery.sdss import SDSSClass

    dr = conf.sdss_data_release if data_release is None else int(data_release)
    return SDSSClass().query_sql_async(sql, data_release=dr, get_query_payload=True)


def run_sql(sql: str, *, data_release: int | None = None) -> Table:
    """Run one SQL statement on SkyServer (through astroquery.sdss); the CSV answer as a Table.

    Raises
    ------
    ArchiveError
        HTTP failure, timeout (``conf.timeout``) or an SQL error text;
        5xx, 429 and HTML answers are asked again first (``conf.max_retries``).
    """
    dr = conf.sdss_data_release if data_release is None else int(data_release)
    url = sql_url(dr)

    def once():
        import requests

        check_offline(url)
        try:
            with astroquery_sdss() as client:
                response = client.query_sql_async(sql, data_release=dr, timeout=conf.timeout, cache=False)
        except requests.Timeout as err:
            raise ArchiveError(f"sdss: no answer from {url} within {conf.timeout} s") from err
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as err:
            raise _Retryable(f"sdss: the answer from {url} was cut short: {type(err).__name__}: {err}") from err
        except requests.RequestException as err:  # the session has asked again already
            raise ArchiveError(f"sdss: cannot reach {url}: {type(err).__name__}: {err}") from err
        _judge(response, url)
        return parse_skyserver_csv(response.text, url=url)

    return with_retries(once, what=f"sdss {url}")


@contextlib.contextmanager
def astroquery_sdss():
    """An astroquery ``SDSSClass`` whose requests go to :func:`skyserver_base` (one caller at a time).

    astroquery reads the server from its process-wide ``conf`` at call time;
    ``conf.set_temp`` points it for the duration of the block.  The client
    sends through latentsky's session (:func:`~latentsky.archives.base.session`:
    the retry policy, the user agent, offline mode).
    """
    from astroquery.sdss import SDSSClass
    from astroquery.sdss import conf as astroquery_conf

    with _ASTROQUERY_LOCK, astroquery_conf.set_temp("skyserver_baseurl", skyserver_base()):
        client = SDSSClass()
        client._session = session()
        yield client


def _judge(response, url: str) -> None:
    """Raise what a SkyServer answer deserves under the download policy.

    An error status is final (the session has asked again already); an HTML
    page where a table was expected is worth another try (:class:`_Retryable`).
    """
    from latentsky.download.policy import HTML_SNIFF, attempts_of, check_answer
    from latentsky.exceptions import DownloadError

    try:
        check_answer(
            "sdss",
            url,
            response.status_code,
            response.reason or "",
            response.headers,
            response.content[:HTML_SNIFF],
            kind="csv",
        )
    except DownloadError as err:
        snippet = response.text[:200].strip().replace("\n", " ")
        message = f"sdss: {url} answered {err.problem}: {snippet!r}"
        if response.status_code >= 300:
            attempts = attempts_of(response)
            raise ArchiveError(message + (f" (after {attempts} attempts)" if attempts > 1 else "")) from None
        raise _Retryable(message, err.retry_after) from None


def parse_skyserver_csv(text: str, *, url: str = "SkyServer") -> Table:
    """Parse SkyServer's CSV answer (``#Table1`` line, header, rows) into a Table.

    Identifier columns (``objid``, ``specobjid``) stay strings: they are 64-bit
    integers that must not pass through floating point.

    Raises
    ------
    ArchiveError
        When the text is an error message or HTML page rather than a table.
    """
    lines = text.lstrip("\ufeff").splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    if lines and lines[0].startswith("#Table"):
        lines.pop(0)
    if not lines or lines[0].lstrip().startswith(("<", "Error", "ERROR")) or "," not in lines[0] and len(lines) > 1:
        snippet = " ".join(lines[:3])[:300]
        raise ArchiveError(f"sdss: {url} answered with no table: {snippet!r}")
    import pandas as pd

    header = [h.strip().lower() for h in lines[0].split(",")]
    dtypes = {h: str for h in header if h in _ID_COLUMNS}
    frame = pd.read_csv(io.StringIO("\n".join(lines)), dtype=dtypes)
    frame.columns = header
    for name in ("class", "subclass", "run2d", "instrument"):
        if name in frame.columns:
            frame[name] = [("" if pd.isna(v) else str(v)) for v in frame[name]]
    return Table.from_pandas(frame)
