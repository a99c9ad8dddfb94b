"""SAMP: a selection reaches a table-loading client through a real (in-process) hub."""

from __future__ import annotations

import threading

import pandas as pd
import pytest

from latentsky.ui.samp import send_table


@pytest.fixture
def hub(tmp_path, monkeypatch):
    from pyvo.samp import SAMPHubServer

    monkeypatch.setenv("HOME", str(tmp_path))  # the hub's lock file goes to $HOME/.samp
    monkeypatch.delenv("SAMP_HUB", raising=False)
    server = SAMPHubServer(web_profile=False, mode="multiple", lockfile=str(tmp_path / "samp.lock"))
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("late_registration", [False, True], ids=["hub as is", "hub slow to register the call"])
def test_selection_reaches_a_votable_client(hub, tmp_path, monkeypatch, late_registration):
    """``late_registration``: the hub returns from delivering the call only after the receiver has answered,
    as a busy machine can schedule astropy's hub (it registers a synchronous call after delivering it, and
    a reply that comes first is dropped): the table must still count as delivered, at once."""
    from astropy.io import votable
    from pyvo.samp import SAMPIntegratedClient

    got = threading.Event()
    received = {}
    receiver = SAMPIntegratedClient(name="fake-topcat")
    receiver.connect(hub=hub)

    def on_table(private_key, sender_id, msg_id, mtype, params, extra):
        received.update(params)
        got.set()
        receiver.reply(msg_id, {"samp.status": "samp.ok", "samp.result": {}})  # as TOPCAT answers

    receiver.bind_receive_call("table.load.votable", on_table)
    # the subscription reaches the hub over XML-RPC: wait until the hub knows it (a busy machine is slow)
    import time

    probe = SAMPIntegratedClient(name="probe")
    probe.connect(hub=hub)
    deadline = time.monotonic() + 20
    while not probe.get_subscribed_clients("table.load.votable") and time.monotonic() < deadline:
        time.sleep(0.1)
    probe.disconnect()
    if late_registration:
        deliver = hub._call

        def deliver_then_wait(*args):
            msg_id = deliver(*args)
            got.wait(10)  # the receiver has the table (and is answering) before the call is registered
            time.sleep(0.3)
            return msg_id

        monkeypatch.setattr(hub, "_call", deliver_then_wait)
        monkeypatch.setattr("latentsky.ui.samp.CALL_TIMEOUT_S", 5)
    try:
        table = pd.DataFrame({"id": ["a", "b"], "ra": [10.0, 11.0], "dec": [-5.0, -6.0]})
        t0 = time.monotonic()
        msg = send_table(table, hub=hub, folder=tmp_path)
        assert time.monotonic() - t0 < 4.0
        assert msg == "sent 2 rows to 1 SAMP client(s)", msg  # the call was answered before send_table returned
        assert got.is_set()
        assert received["name"] == "latentsky selection"
        from urllib.parse import urlparse

        sent = votable.parse_single_table(urlparse(received["url"]).path).to_table()
        assert list(sent["id"]) == ["a", "b"]
    finally:
        receiver.disconnect()


def test_no_hub_is_a_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SAMP_HUB", raising=False)
    msg = send_table(pd.DataFrame({"id": ["a"], "ra": [1.0], "dec": [2.0]}))
    assert msg.startswith("no SAMP hub")
    assert send_table(pd.DataFrame()) == "nothing selected to send"


def test_explore_sends_its_selection(hub, tmp_path):
    pytest.importorskip("panel")
    from latentsky.ui.data import LatentData
    from latentsky.ui.explore import Explore

    ex = Explore(LatentData(pd.DataFrame({"id": ["a", "b", "c"], "x": [0.0, 1.0, 2.0], "y": [0.0, 1.0, 2.0]})))
    ex.select_box((0.5, 0.5, 2.5, 2.5))
    assert ex.send_samp(hub=hub, folder=tmp_path) == "sent 2 rows to 0 SAMP client(s)"
    assert ex.status.startswith("sent 2 rows")
    assert (tmp_path / "selection.vot").exists()
