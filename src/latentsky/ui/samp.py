"""Send a selection to VO tools (TOPCAT, Aladin) over SAMP (pyvo.samp), when a hub is running.

The table is written as a VOTable to a temporary file and announced with the
``table.load.votable`` message to every client that subscribes to it.  No hub
(the usual case in a headless notebook) is an ordinary outcome: the functions
return a message, never raise on it.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)


CALL_TIMEOUT_S = 20  # seconds a SAMP client may take to load the table


def send_table(table: pd.DataFrame, *, name: str = "latentsky selection", hub=None, folder=None) -> str:
    """Broadcast ``table`` as a VOTable to the SAMP clients that load tables.

    Parameters
    ----------
    table : DataFrame
        The rows to send (e.g. :attr:`latentsky.ui.explore.Explore.selected`).
    name : str
        Table name shown in TOPCAT/Aladin.
    hub : SAMPHubProxy-like, optional
        Connect through this hub (tests); default: the running hub found by its lock file.
    folder : path-like, optional
        Where the VOTable file is written (default: a temporary folder that outlives the call,
        since the receiving tool reads it later).

    Returns
    -------
    str
        What happened, for the app's status line ("sent 12 rows to 2 SAMP clients", "no SAMP hub...").
    """
    from pyvo.samp import SAMPHubError, SAMPIntegratedClient

    from latentsky.ui.export import to_votable

    if len(table) == 0:
        return "nothing selected to send"
    client = SAMPIntegratedClient(name="latentsky", description="latentsky latent map")
    try:
        client.connect(hub=hub)
    except (SAMPHubError, OSError, ConnectionError) as err:
        log.info("no SAMP hub: %s", err)
        return "no SAMP hub running: start TOPCAT or Aladin (they run one) and try again"
    try:
        folder = Path(folder or tempfile.mkdtemp(prefix="latentsky-samp-"))
        path = folder / "selection.vot"
        path.write_bytes(to_votable(table))
        url = path.resolve().as_uri()
        receivers = client.get_subscribed_clients("table.load.votable")
        message = {"samp.mtype": "table.load.votable", "samp.params": {"url": url, "name": name}}
        # a call answered by each receiver, not a notification: the hub delivers notifications
        # from its own threads and drops them once the sender has disconnected, which we do next
        delivered = 0
        for receiver in receivers:
            try:
                client.call_and_wait(receiver, message, timeout=str(CALL_TIMEOUT_S))
                delivered += 1
            except Exception as err:  # a client that fails or is too slow must not stop the others
                log.warning("SAMP client %s did not load the table: %s", receiver, err)
        return f"sent {len(table):,} rows to {delivered} SAMP client(s)"
    finally:
        client.disconnect()
