"""The interface shared by every archive client, and the helpers they share.

Each archive is one module with one class and one module-level instance
(the astroquery layout).  A client has two halves:

- :meth:`Archive.query` talks to the archive and returns an astropy
  :class:`~astropy.table.Table` with one row per product and at least the
  columns of :data:`PRODUCT_COLUMNS`;
- :meth:`Archive.plan` turns such a table into
  :class:`~latentsky.download.items.DownloadItem` records with no network
  call, so a plan can be checked offline and handed to the download manager.

All HTTP goes through :func:`session` (directly, or by pyvo and astroquery),
so the timeout (``conf.timeout``), the user agent, offline mode and the retry
policy (:mod:`latentsky.download.policy`) live in one place.  Nothing is
cached: a failed answer can never be replayed from a cache (astroquery #1904).
"""

from __future__ import annotations

import abc
import csv
import math
import re
from pathlib import Path
from typing import Iterable

import numpy as np
from astropy import units as u
from astropy.coordinates import Angle, SkyCoord
from astropy.table import Table
from astropy.time import Time

from latentsky.config import conf
from latentsky.download.names import safe_name  # the one file-name sanitiser, also used by the clients
from latentsky.exceptions import ArchiveError, CoordinateError

PRODUCT_COLUMNS = ("archive", "product_id", "object", "ra", "dec", "date", "instrument", "access_url")
"""Columns every :meth:`Archive.query` result has: ``ra``/``dec`` in degrees (ICRS),
``date`` an ISO-8601 UTC string (empty when unknown), ``access_url`` the file's URL."""

_session = None


def session():
    """The process-wide :class:`requests.Session` of the archive clients (connection reuse, one policy).

    Its adapter (:class:`~latentsky.download.policy.PolicyAdapter`) asks again
    after a retryable status or a dropped connection, as
    :class:`~latentsky.download.policy.RetryPolicy` decides; it sends
    :data:`~latentsky.download.policy.USER_AGENT`; every request it sends
    without an explicit timeout gets ``conf.timeout`` (read at call time),
    including those pyvo and astroquery send for us: they set none, and a hung
    archive must end in an error, not a hung notebook.
    """
    global _session
    if _session is None:
        import requests

        from latentsky.download.policy import USER_AGENT, PolicyAdapter

        class _TimeoutSession(requests.Session):
            def request(self, method, url, **kwargs):
                check_offline(url)
                if kwargs.get("timeout") is None:
                    kwargs["timeout"] = conf.timeout
                return super().request(method, url, **kwargs)

        made = _TimeoutSession()
        adapter = PolicyAdapter()
        made.mount("http://", adapter)
        made.mount("https://", adapter)
        made.headers["User-Agent"] = USER_AGENT
        _session = made
    return _session


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def check_offline(url: str) -> None:
    """In offline mode (``conf.offline``) refuse any URL that is not on this machine.

    Raises
    ------
    ArchiveError
        Naming the host and the setting, before anything is sent.
    """
    if not conf.offline:
        return
    from urllib.parse import urlsplit

    host = urlsplit(str(url)).hostname or ""
    if host not in LOOPBACK_HOSTS:
        raise ArchiveError(
            f"offline mode (conf.offline): refusing to contact {host or url!r}; point the "
            "archive URLs at a local archive (latentsky archive serve) or set conf.offline = False"
        )


def request(method: str, url: str, *, archive: str, timeout: float | None = None, **kwargs):
    """Send one HTTP request through :func:`session`; raise :class:`ArchiveError` on failure.

    Parameters
    ----------
    method : str
        ``"GET"`` or ``"POST"``.
    url : str
        Full URL.
    archive : str
        Archive name, used in error messages.
    timeout : float, optional
        Seconds; defaults to ``conf.timeout`` read at call time.  Every request
        has one: SkyView-style hangs (astroquery #3347) end in an error.
    **kwargs
        Passed to :meth:`requests.Session.request` (``params``, ``data``...).

    Returns
    -------
    requests.Response
        A response with a 2xx status.

    Notes
    -----
    A retryable status (429, 5xx...) or a dropped connection is asked again
    by the session, a body cut short by :func:`with_retries`, both under
    :class:`~latentsky.download.policy.RetryPolicy` (``conf.max_retries``
    attempts, ``Retry-After`` honoured).  Timeouts and refusals (other 4xx)
    are final.
    """
    timeout = conf.timeout if timeout is None else timeout
    return with_retries(lambda: _request_once(method, url, archive, timeout, kwargs), what=f"{archive} {url}")


class _Retryable(ArchiveError):
    """An answer that arrived broken (an HTML page, a cut body, an unreadable table): worth another try."""

    retryable = True

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def _request_once(method, url, archive, timeout, kwargs):
    import requests

    try:
        response = session().request(method, url, timeout=timeout, **kwargs)
    except requests.Timeout as err:
        # a hung service is not retried: the caller already waited `timeout` seconds
        raise ArchiveError(f"{archive}: no answer from {url} within {timeout} s") from err
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as err:
        raise _Retryable(f"{archive}: the answer from {url} was cut short: {err.__class__.__name__}: {err}") from err
    except requests.ConnectionError as err:  # the session has asked again already
        raise ArchiveError(f"{archive}: cannot reach {url}: {err.__class__.__name__}: {err}") from err
    except requests.RequestException as err:
        raise ArchiveError(f"{archive}: request to {url} failed: {err.__class__.__name__}: {err}") from err
    check_status(response, archive=archive)
    return response


def check_status(response, *, archive: str) -> None:
    """Raise :class:`ArchiveError` for an error status of a :func:`session` answer (final: the session retried).

    The message names the archive, the URL, the status, the start of the body
    and, after retries, how many attempts were made.
    """
    from latentsky.download.policy import attempts_of

    if response.status_code < 400:
        return
    snippet = response.text[:200].strip().replace("\n", " ")
    attempts = attempts_of(response)
    after = f" (after {attempts} attempts)" if attempts > 1 else ""
    raise ArchiveError(f"{archive}: HTTP {response.status_code} from {response.url}: {snippet}{after}")


def with_retries(call, *, what: str = "request"):
    """Run ``call()`` under :meth:`RetryPolicy.call <latentsky.download.policy.RetryPolicy.call>`.

    ``call`` raises :class:`_Retryable` for an answer that arrived broken; it
    is run again (``conf.max_retries`` attempts in all, backoff with jitter,
    ``Retry-After`` honoured), and when the attempts are spent the last
    failure is raised as an :class:`ArchiveError` saying how many were made.
    """
    from latentsky.download.policy import RetryPolicy

    policy = RetryPolicy()
    try:
        return policy.call(call, what=what)
    except _Retryable as err:
        n = policy.max_attempts
        raise ArchiveError(f"{err} (after {n} attempt{'s' if n > 1 else ''})") from err


class Archive(abc.ABC):
    """One archive behind the common interface.

    Subclasses set :attr:`name` and implement :meth:`query` and :meth:`plan`;
    base URLs are read from :data:`latentsky.config.conf` at call time, so
    changing ``conf`` (or ``LATENTSKY_*`` variables) redirects a client to a
    mirror or to the local archive without a new instance.
    """

    name: str = "archive"

    @abc.abstractmethod
    def query(self, *args, **kwargs) -> Table:
        """Ask the archive for products; one row per product (see :data:`PRODUCT_COLUMNS`)."""

    @abc.abstractmethod
    def plan(self, products: Table, dest: str | Path) -> list:
        """Download items for the rows of ``products``, written under ``dest``; no network."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} archive={self.name!r}>"


# --------------------------------------------------------------------------- positions


def parse_coordinates(coordinates, *, parameter: str = "coordinates") -> SkyCoord:
    """Turn user input into ICRS :class:`~astropy.coordinates.SkyCoord` (scalar or array).

    Parameters
    ----------
    coordinates : SkyCoord, (ra, dec) pair, str, or Table with ``ra``/``dec`` columns
        A SkyCoord in any frame (Galactic, FK5...) is transformed to ICRS.
        Numbers are degrees.  Strings are anything SkyCoord parses, e.g.
        ``"10h42m +30d40m"`` or ``"162.75 30.76"`` (degrees).
    parameter : str
        Name used in error messages.

    Raises
    ------
    CoordinateError
        For impossible positions (|dec| > 90 deg, NaN, unparsable text).
    """
    try:
        if isinstance(coordinates, SkyCoord):
            coord = coordinates
        elif isinstance(coordinates, Table):
            names = {n.lower(): n for n in coordinates.colnames}
            if "ra" not in names or "dec" not in names:
                raise CoordinateError(
                    f"{parameter}: the table needs 'ra' and 'dec' columns (degrees); it has {coordinates.colnames}"
                )
            ra = _degrees(coordinates[names["ra"]])
            dec = _degrees(coordinates[names["dec"]])
            coord = SkyCoord(ra, dec, unit="deg", frame="icrs")
        elif isinstance(coordinates, str):
            unit = ("hourangle", "deg") if re.search(r"[hms:]", coordinates) else ("deg", "deg")
            coord = SkyCoord(coordinates, unit=unit, frame="icrs")
        elif isinstance(coordinates, (tuple, list)) and len(coordinates) == 2:
            coord = SkyCoord(*coordinates, unit="deg", frame="icrs")
        else:
            raise CoordinateError(
                f"{parameter}: expected a SkyCoord, an (ra, dec) pair in degrees, a string "
                f"or a table with ra/dec columns, got {type(coordinates).__name__}"
            )
        icrs = coord.icrs
    except CoordinateError:
        raise
    except (ValueError, TypeError, u.UnitsError) as err:
        raise CoordinateError(f"{parameter}: not a valid sky position ({err})") from err
    ra, dec = np.atleast_1d(icrs.ra.deg), np.atleast_1d(icrs.dec.deg)
    bad = ~(np.isfinite(ra) & np.isfinite(dec))
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise CoordinateError(f"{parameter}: position(s) at row(s) {rows} are not finite numbers")
    return icrs


def _degrees(column) -> np.ndarray:
    if getattr(column, "unit", None) is not None:
        return u.Quantity(column).to_value(u.deg)
    return np.asarray(column, dtype=float)


def parse_radius(radius, *, parameter: str = "radius") -> Angle:
    """A search radius as an :class:`~astropy.coordinates.Angle`.

    Parameters
    ----------
    radius : Quantity, Angle, str or float
        An angle; a bare number is in degrees (the ADQL convention).

    Raises
    ------
    CoordinateError
        When it is not an angle, not positive or larger than 180 deg.
    """
    try:
        if isinstance(radius, str):
            angle = Angle(radius)
        elif isinstance(radius, u.Quantity):
            angle = Angle(radius.to(u.deg))
        else:
            angle = Angle(float(radius), u.deg)
    except (ValueError, TypeError, u.UnitsError) as err:
        raise CoordinateError(f"{parameter}: {radius!r} is not an angle ({err})") from err
    if not angle.isscalar:
        raise CoordinateError(f"{parameter}: expected one angle, got {len(angle)}")
    if not (math.isfinite(angle.deg) and 0 < angle.deg <= 180):
        raise CoordinateError(f"{parameter}: must be > 0 and <= 180 deg, got {angle.deg} deg")
    return angle


def load_name_table(path: str | Path | None = None) -> dict[str, tuple[float, float]]:
    """Read a local name table: CSV with ``name,ra,dec`` (degrees, ICRS).

    Names are matched case-insensitively with spaces removed (``"alf Cen B"``
    == ``"ALFCENB"``).  The default path is ``conf.name_table``.
    """
    path = conf.name_table if path is None else path
    if not path:
        return {}
    path = Path(path)
    if not path.exists():
        raise CoordinateError(f"name table {path} (conf.name_table) does not exist")
    table: dict[str, tuple[float, float]] = {}
    with open(path, newline="") as fh:
        for i, row in enumerate(csv.DictReader(fh), start=2):
            try:
                table[_name_key(row["name"])] = (float(row["ra"]), float(row["dec"]))
            except (KeyError, TypeError, ValueError) as err:
                raise CoordinateError(f"{path}, line {i}: expected name,ra,dec columns ({err})") from err
    return table


def _name_key(name: str) -> str:
    return re.sub(r"\s+", "", str(name)).upper()


def resolve_name(name: str, *, parameter: str = "target", names: dict | None = None) -> SkyCoord:
    """Position of a named object: the local name table first, then Sesame unless offline.

    Parameters
    ----------
    name : str
        Object name, e.g. ``"HD128621"``.
    parameter : str
        Name used in error messages.
    names : dict, optional
        ``{normalised name: (ra, dec)}``; default :func:`load_name_table`.

    Raises
    ------
    CoordinateError
        Unknown name (offline: not in the local table; online: Sesame does not know it).
    """
    if not isinstance(name, str) or not name.strip():
        raise CoordinateError(f"{parameter}: expected a non-empty object name, got {name!r}")
    names = load_name_table() if names is None else names
    hit = names.get(_name_key(name))
    if hit is not None:
        return SkyCoord(*hit, unit="deg", frame="icrs")
    if conf.offline:
        raise CoordinateError(
            f"{parameter}: unknown object name {name!r}; offline mode (conf.offline) only "
            f"knows the names in conf.name_table ({conf.name_table or 'not set'}); "
            "give coordinates instead"
        )
    from astropy.coordinates.name_resolve import NameResolveError

    try:
        return SkyCoord.from_name(name, frame="icrs")
    except NameResolveError as err:
        raise CoordinateError(f"{parameter}: unknown object name {name!r} ({err})") from err


def parse_time(value, *, parameter: str) -> Time | None:
    """A date as :class:`~astropy.time.Time` (ISO string, MJD float or Time); None stays None."""
    if value is None:
        return None
    try:
        if isinstance(value, Time):
            return value
        if isinstance(value, (int, float, np.number)):
            return Time(float(value), format="mjd", scale="utc")
        return Time(value, scale="utc")
    except (ValueError, TypeError) as err:
        raise CoordinateError(f"{parameter}: {value!r} is not a date (ISO-8601 or MJD) ({err})") from err


def require_columns(table: Table, columns: Iterable[str], *, parameter: str = "products") -> None:
    """Raise :class:`ArchiveError` naming the missing columns of ``table``."""
    missing = [c for c in columns if c not in table.colnames]
    if missing:
        raise ArchiveError(f"{parameter}: table lacks column(s) {missing}; it has {table.colnames}")


def fits_items(products: Table, dest: str | Path, *, archive: str, file_prefix: str = "") -> list:
    """Download items for a table of products with ``product_id`` and ``access_url`` columns (no network).

    Each row becomes key ``<archive>/<product_id>``, file
    ``dest/<file_prefix><product_id>.fits`` (made file-name safe), checked as
    FITS on arrival; a product listed twice (two nearby positions matched it)
    is fetched once.
    """
    from latentsky.download.items import DownloadItem

    require_columns(products, ("product_id", "access_url"))
    dest = Path(dest)
    items = {}
    for row in products:
        key = f"{archive}/{row['product_id']}"
        if key not in items:
            items[key] = DownloadItem(
                key=key,
                url=str(row["access_url"]),
                dest=dest / safe_name(f"{file_prefix}{row['product_id']}.fits"),
                kind="fits",
            )
    return list(items.values())


def cutout_table(archive: str, ra: float, dec: float, ids, urls, instrument, **extra) -> Table:
    """The products table of images cut out around one position (degrees): one row per URL.

    Columns: the common ones of every archive's products (``archive``,
    ``product_id``, ``object`` -- the position as text --, ``ra``, ``dec`` in
    deg, ``date`` empty, ``instrument`` -- one name or one per row --,
    ``access_url``), then ``extra`` (a value per row, or one for all).
    """
    n = len(urls)

    def per_row(value):
        return list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value] * n

    return Table(
        {
            "archive": [archive] * n,
            "product_id": list(ids),
            "object": [f"{ra:.5f} {dec:+.5f}"] * n,
            "ra": np.full(n, ra) * u.deg,
            "dec": np.full(n, dec) * u.deg,
            "date": [""] * n,
            "instrument": per_row(instrument),
            "access_url": [str(x) for x in urls],
            **{k: per_row(v) for k, v in extra.items()},
        }
    )
