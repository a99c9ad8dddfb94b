"""One configuration object, :data:`conf`, for every tunable latentsky setting.

Each field can be overridden by an environment variable ``LATENTSKY_<NAME>``
(upper case), so a notebook, a JupyterHub or a classroom image can point the
clients at a mirror or at the local archive without changing code.
:meth:`Conf.set_temp` changes settings for the duration of a ``with`` block,
as astropy's configuration items do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Iterator


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "latentsky"


@dataclasses.dataclass
class Conf:
    """Settings shared by the whole package.

    Attributes
    ----------
    cache_dir : Path
        Where downloads and intermediate stores go by default.
    timeout : float
        Seconds to wait for an archive to answer one request.
    max_connections : int
        Concurrent downloads in total.
    max_connections_per_host : int
        Concurrent downloads to any one archive host.
    max_retries : int
        Attempts per request or file before its failure is final (see
        :class:`latentsky.download.policy.RetryPolicy`).
    retry_backoff : float
        Base of the exponential backoff between two attempts, s: after the
        n-th failure the wait is a random time up to ``retry_backoff * 2**(n-1)``.
    offline : bool
        Never touch the network; archive clients talk to the local archive only.
    eso_tap_url, eso_data_url, sdss_sas_url, skyview_url, ukidss_url, hips2fits_url : str
        Base URLs of the archives (change them to use a mirror or the local archive).
    sdss_skyserver_url : str
        The SkyServer that astroquery.sdss asks, as astroquery's base address
        (its ``conf.skyserver_baseurl``: astroquery appends
        ``/dr<N>/en/tools/search/x_results.aspx``); a SkyServer web-service
        URL (``.../dr17/SkyServerWS/``) is reduced to its host.
    name_table : str
        CSV file ``name,ra,dec`` (degrees) consulted before Sesame when a target
        is given by name; in offline mode it is the only name resolver.
    sdss_data_release : int
        SDSS data release of the SAS file paths (``dr17/...``).
    tap_maxrec : int
        Rows asked per TAP request; a result capped below this (OVERFLOW) is
        split into smaller queries, never returned short.
    tap_sync_rows : int
        Largest answer, in rows, asked for with a synchronous TAP query; a
        query that returns more runs again as an asynchronous (UWS) job
        (ESO ends synchronous queries after 60 s).
    """

    cache_dir: Path = dataclasses.field(default_factory=_default_cache_dir)
    timeout: float = 60.0
    max_connections: int = 8
    max_connections_per_host: int = 4
    max_retries: int = 5
    retry_backoff: float = 0.5
    offline: bool = False
    eso_tap_url: str = "https://archive.eso.org/tap_obs"
    eso_data_url: str = "https://dataportal.eso.org/dataportal_new/file/"
    sdss_skyserver_url: str = "https://skyserver.sdss.org"
    sdss_sas_url: str = "https://data.sdss.org/sas/"
    skyview_url: str = "https://skyview.gsfc.nasa.gov/"
    ukidss_url: str = "http://wsa.roe.ac.uk:8080/wsa/"
    hips2fits_url: str = "https://alasky.cds.unistra.fr/hips-image-services/hips2fits"
    name_table: str = ""
    sdss_data_release: int = 17
    tap_maxrec: int = 100000
    tap_sync_rows: int = 10000

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            raw = os.environ.get(f"LATENTSKY_{field.name.upper()}")
            if raw is None:
                continue
            setattr(self, field.name, _parse(field.type, raw, field.name))

    def set(self, **changes) -> None:
        """Change several settings at once, refusing unknown names (then nothing is changed)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise AttributeError(f"latentsky.conf has no setting {unknown[0]!r}; known: {sorted(known)}")
        for name, value in changes.items():
            setattr(self, name, value)

    @contextlib.contextmanager
    def set_temp(self, **changes) -> Iterator["Conf"]:
        """Change settings inside a ``with`` block; every setting is as before when it ends.

        With no arguments the block may change any setting (with :meth:`set`)
        and all of them are restored, e.g. around a test.

        Examples
        --------
        >>> from latentsky.config import conf
        >>> with conf.set_temp(offline=True):
        ...     conf.offline
        True
        """
        saved = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not changes or f.name in changes}
        self.set(**changes)
        try:
            yield self
        finally:
            for name, value in saved.items():
                setattr(self, name, value)


def _parse(type_name: str, raw: str, name: str):
    if type_name == "Path":
        return Path(raw).expanduser()
    if type_name == "bool":
        if raw.lower() in {"1", "true", "yes", "on"}:
            return True
        if raw.lower() in {"0", "false", "no", "off", ""}:
            return False
        raise ValueError(f"LATENTSKY_{name.upper()}={raw!r} is not a boolean")
    if type_name in {"int", "float"}:
        return {"int": int, "float": float}[type_name](raw)
    return raw


conf = Conf()
