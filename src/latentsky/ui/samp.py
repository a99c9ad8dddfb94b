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


def _call_all(client, receivers, message: dict, timeout: float = CALL_TIMEOUT_S) -> int:
    """Send ``message`` to every receiver as an asynchronous call and wait (at most ``timeout`` seconds in all)
    for their responses; the number that loaded it (``samp.ok`` or ``samp.warning``).

    A call answered by each receiver, not a notification: the hub delivers notifications from its own
    threads and drops them once the sender has disconnected, which the caller does next.  Asynchronous
    calls with our own response handler, not the hub's ``callAndWait``: astropy's hub registers a
    synchronous call only after it has started delivering it, so a receiver that answers at once (as a
    script's does) can have its reply dropped, and the sender then waits out the whole timeout.
    """
    import threading

    answers: dict[str, dict] = {}
    lock = threading.Lock()
    all_in = threading.Event()
    tags = {f"latentsky-table-{i}": receiver for i, receiver in enumerate(receivers)}

    def on_response(private_key, responder_id, msg_tag, response):
        with lock:
            answers[msg_tag] = response
            if len(answers) == len(tags):
                all_in.set()

    for tag, receiver in tags.items():
        client.bind_receive_response(tag, on_response)
        try:
            client.call(receiver, tag, message)
        except Exception as err:  # a client the hub cannot reach must not stop the others
            log.warning("SAMP client %s did not get the table: %s", receiver, err)
            on_response(None, receiver, tag, {"samp.status": "samp.error", "samp.error": {"samp.errortxt": str(err)}})
    if tags:
        all_in.wait(timeout)
    delivered = 0
    with lock:
        for tag, receiver in tags.items():
            response = answers.get(tag)
            if response is None:
                log.warning("SAMP client %s did not answer within %s s", receiver, timeout)
            elif response.get("samp.status") in ("samp.ok", "samp.warning"):
                delivered += 1
            else:
                log.warning("SAMP client %s did not load the table: %s", receiver, response.get("samp.error"))
    return delivered


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
        receivers = list(client.get_subscribed_clients("table.load.votable"))
        message = {"samp.mtype": "table.load.votable", "samp.params": {"url": url, "name": name}}
        delivered = _call_all(client, receivers, message)
        return f"sent {len(table):,} rows to {delivered} SAMP client(s)"
    finally:
        client.disconnect()
