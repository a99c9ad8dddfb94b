"""Credentials for archives that need them (proprietary ESO data).

A token comes from the environment (``LATENTSKY_ESO_TOKEN``) or, failing
that, from the system keyring (service ``"latentsky"``, user ``"eso"``).  It
is held in a :class:`Secret`, whose ``repr`` and ``str`` never show it, and is
only ever placed in an ``Authorization`` header: never in a URL, a log line,
the manifest or an exception message.

A :class:`DownloadItem` names the credential it needs (``auth="eso"``); the
download manager looks the token up again before every attempt, so a token
renewed while a long download runs (ESO tokens expire) is picked up.

Examples
--------
>>> s = Secret("abc123")
>>> s, str(s)
(Secret('***'), '***')
>>> s.reveal()
'abc123'
"""

from __future__ import annotations

import logging
import os
from urllib.parse import urlsplit

from latentsky.exceptions import CredentialError

log = logging.getLogger(__name__)

KEYRING_SERVICE = "latentsky"
"""Keyring service name under which tokens are stored (user = credential name)."""


class Secret:
    """A string that does not print itself.

    Parameters
    ----------
    value : str
        The secret.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = str(value)

    def reveal(self) -> str:
        """The secret itself; use it only to build a request header."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = lambda self: "***"  # noqa: E731 - same text as repr, minus the class

    def __eq__(self, other) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self):
        # Pickling a secret (to a process pool, to disk) is a leak waiting to happen.
        raise TypeError("Secret objects cannot be pickled")


def env_var(name: str) -> str:
    """Environment variable holding credential ``name``: ``LATENTSKY_<NAME>_TOKEN``."""
    return f"LATENTSKY_{name.upper()}_TOKEN"


def get_token(name: str) -> Secret | None:
    """The token for credential ``name`` (e.g. ``"eso"``), or None when none is configured.

    Looks at ``LATENTSKY_<NAME>_TOKEN`` first, then at the keyring.
    """
    value = os.environ.get(env_var(name))
    if value:
        return Secret(value.strip())
    try:
        import keyring

        value = keyring.get_password(KEYRING_SERVICE, name)
    except Exception as err:  # no backend, locked keyring...: not an error, just no token
        log.debug("keyring lookup for %r failed: %s", name, type(err).__name__)
        value = None
    return Secret(value) if value else None


def allowed_hosts(name: str) -> set[str] | None:
    """Origins (``scheme://host:port``) credential ``name`` may be sent to (None: no restriction known).

    The ESO token goes only to ``*.eso.org`` and to the hosts of
    ``conf.eso_data_url`` and ``conf.eso_tap_url`` (a mirror or the local
    archive), so a table with hostile URLs cannot collect it.
    """
    if name == "eso":
        from latentsky.config import conf

        return {_origin(conf.eso_data_url), _origin(conf.eso_tap_url)}
    return None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def _host_allowed(name: str, url: str) -> bool:
    hosts = allowed_hosts(name)
    if hosts is None:
        return True
    parts = urlsplit(url)
    hostname = (parts.hostname or "").lower()
    if name == "eso" and parts.scheme == "https" and (hostname == "eso.org" or hostname.endswith(".eso.org")):
        return True
    return _origin(url) in hosts


def auth_headers(name: str | None, url: str | None = None) -> dict[str, str]:
    """Request headers carrying credential ``name`` (empty for None) for a request to ``url``.

    Raises
    ------
    CredentialError
        When ``name`` is set but no token is configured (the message says where
        to put one, never a value), or when ``url``'s host is not one the
        credential may be sent to (see :func:`allowed_hosts`).
    """
    if name is None:
        return {}
    if url is not None and not _host_allowed(name, url):
        raise CredentialError(
            f"refusing to send the {name!r} credential to {urlsplit(url).netloc} "
            f"(allowed: {sorted(allowed_hosts(name) or [])} and https://*.eso.org); "
            "point conf.eso_data_url at the mirror you trust"
        )
    token = get_token(name)
    if token is None:
        raise CredentialError(
            f"credential {name!r} is needed but not configured: set {env_var(name)} or store it with "
            f"`keyring set {KEYRING_SERVICE} {name}`"
        )
    return {"Authorization": f"Bearer {token.reveal()}"}


def redact(text: str, names: tuple[str, ...] = ("eso",)) -> str:
    """``text`` with the value of every configured token replaced by ``***``.

    A last line of defence applied to anything written to the manifest or
    raised to the user (a server could echo a header back in an error page).
    """
    for name in names:
        token = get_token(name)
        if token is not None and token.reveal() and token.reveal() in text:
            text = text.replace(token.reveal(), "***")
    return text
