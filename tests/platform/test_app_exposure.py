"""The app answers only its user: its own origin, its own signed sessions and, behind JupyterLab, its own account.

The launcher's app (``python -m latentsky.jupyter_proxy``) listens on a Unix socket in a private folder, as
jupyter-server-proxy starts it; ``latentsky app`` listens on a TCP port.  Each is a real server process,
reached with a real websocket client (tornado) carrying the ``Origin`` a browser would send.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Unix sockets")

PREFIX = "/user/ada/latentsky"
HUB_HOST = "hub.example:8000"  # the public host a proxy forwards in the Host header


def _env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LATENTSKY_", "XDG_"))}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), TF_CPP_MIN_LOG_LEVEL="3", LATENTSKY_OFFLINE="1")
    return env


def _wait_for(proc, probe, what: str, log: Path, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if probe():
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{what} did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _fetch_page(url: str, host: str, unix_socket: Path | None) -> str:
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest
    from tornado.netutil import Resolver

    client = AsyncHTTPClient(force_instance=True, resolver=_unix_resolver(unix_socket) if unix_socket else Resolver())
    try:
        r = await client.fetch(HTTPRequest(url, headers={"Host": host}, request_timeout=60))
        return r.body.decode()
    finally:
        client.close()


def _unix_resolver(path: Path):
    from tornado.netutil import Resolver

    class UnixResolver(Resolver):
        async def resolve(self, host, port=0, family=socket.AF_UNSPEC):
            return [(socket.AF_UNIX, str(path))]

    return UnixResolver()


def _open_websocket(url: str, host: str, origin: str | None, token: str, unix_socket: Path | None = None):
    """Open the app's websocket as a browser would; returns the first message's type, or the refusal."""
    from tornado import httpclient, websocket

    async def talk():
        headers = {"Host": host}
        if origin:
            headers["Origin"] = origin
        request = httpclient.HTTPRequest(url, headers=headers, request_timeout=60)
        try:
            conn = await websocket.websocket_connect(
                request, subprotocols=["bokeh", token], resolver=_unix_resolver(unix_socket) if unix_socket else None
            )
        except httpclient.HTTPClientError as err:
            return f"refused {err.code}"
        try:
            message = await conn.read_message()
            return "closed" if message is None else json.loads(message)["msgtype"]
        finally:
            conn.close()

    return asyncio.run(asyncio.wait_for(talk(), 90))


def _token(page: str) -> str:
    m = re.search(r'"token":\s*"([^"]+)"', page)
    assert m, "no Bokeh session token in the page"
    return m.group(1)


@pytest.fixture(scope="module")
def proxied_app(tmp_path_factory):
    """The launcher's app process, on a Unix socket in a 0700 folder (what jupyter-server-proxy makes),
    over a small latent table (what it shows is not the point here)."""
    import numpy as np
    import pandas as pd

    tmp = tmp_path_factory.mktemp("proxied")
    rng = np.random.default_rng(0)
    table = tmp / "latent.parquet"
    pd.DataFrame(
        {
            "id": [f"s{i}" for i in range(200)],
            "x": rng.normal(size=200),
            "y": rng.normal(size=200),
            "spec_class": rng.choice(["STAR", "QSO"], 200),
        }
    ).to_parquet(table)
    folder = tmp / "jupyter-server-proxy-x"
    folder.mkdir(mode=0o700)
    sock = folder / "socket"
    log = tmp / "app.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "latentsky.jupyter_proxy",
                "--unix-socket",
                str(sock),
                "--prefix",
                PREFIX,
                "--data",
                str(table),
            ],
            env=_env(tmp),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for(proc, sock.exists, "the proxied app", log)
        yield {"socket": sock, "log": log, "proc": proc}
    finally:
        _stop(proc)


def test_proxy_entry_asks_for_a_unix_socket():
    from latentsky.jupyter_proxy import setup_latentsky

    config = setup_latentsky()
    assert config["unix_socket"] is True
    assert "{unix_socket}" in config["command"] and "{port}" not in config["command"]


def test_launcher_app_opens_no_tcp_port_and_its_socket_is_private(proxied_app):
    import psutil

    sock = proxied_app["socket"]
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) & 0o077 == 0, oct(sock.stat().st_mode)
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    listening = [
        c
        for c in psutil.Process(proxied_app["proc"].pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert listening == [], f"the launcher's app listens on TCP: {listening}"


def test_launcher_app_accepts_its_own_origin_and_refuses_others(proxied_app):
    sock = proxied_app["socket"]
    page = asyncio.run(_fetch_page(f"http://{HUB_HOST}{PREFIX}/", HUB_HOST, sock))
    assert "<title>latentsky explorer</title>" in page
    token = _token(page)
    ws = f"ws://{HUB_HOST}{PREFIX}/ws"
    assert _open_websocket(ws, HUB_HOST, f"http://{HUB_HOST}", token, sock) == "ACK"
    assert _open_websocket(ws, HUB_HOST, "http://evil.example", token, sock) == "refused 403"
    # A session id the server did not sign (what any page could make up) opens nothing.
    forged = token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")
    assert _open_websocket(ws, HUB_HOST, f"http://{HUB_HOST}", forged, sock) != "ACK"
    assert "refused a websocket from origin 'http://evil.example'" in proxied_app["log"].read_text()


def _connect_as(uid: int, path: Path) -> str:
    """Connect to ``path`` from a forked child running as ``uid``; returns "connected" or the errno name."""
    import errno

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to the other account, try, report, exit without cleanup
        os.close(r)
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(path))
            answer = "connected"
        except OSError as err:
            answer = errno.errorcode.get(err.errno, str(err.errno))
        os.write(w, answer.encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r) as f:
        return f.read()


def test_another_local_account_cannot_connect(proxied_app):
    if os.geteuid() != 0:
        pytest.skip("switching to another account needs root (the modes are checked above)")
    sock = proxied_app["socket"]
    assert _connect_as(65534, sock) == "EACCES"  # nobody
    assert _connect_as(0, sock) == "connected"  # the owner (root here) still can


def test_a_socket_in_a_folder_others_can_enter_is_refused(tmp_path):
    from latentsky.ui.serve import check_socket_folder

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(PermissionError, match="0755"):
        check_socket_folder(shared / "socket")


@pytest.fixture
def tcp_app():
    """:func:`latentsky.ui.serve.serve_app` on a free TCP port of 127.0.0.1 (as ``latentsky app`` calls it),
    serving a one-line page from a thread of this process."""
    import threading

    import panel as pn

    from latentsky.ui.serve import serve_app

    started, box = threading.Event(), {}

    def run():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        box["server"] = serve_app({"app": lambda: pn.pane.Markdown("the app")}, port=0, start=False)
        box["loop"] = loop
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(60)
    yield box["server"]
    box["loop"].call_soon_threadsafe(box["server"].stop)
    box["loop"].call_soon_threadsafe(box["loop"].stop)
    thread.join(10)


def test_app_on_a_tcp_port_accepts_only_its_own_origin(tcp_app):
    port = tcp_app.port
    own = f"127.0.0.1:{port}"
    page = asyncio.run(_fetch_page(f"http://{own}/app", own, None))
    token = _token(page)
    ws = f"ws://{own}/app/ws"
    assert _open_websocket(ws, own, f"http://{own}", token) == "ACK"
    assert _open_websocket(ws, f"localhost:{port}", f"http://localhost:{port}", token) == "ACK"
    assert _open_websocket(ws, own, "http://evil.example", token) == "refused 403"
    assert _open_websocket(ws, own, f"http://evil.example:{port}", token) == "refused 403"
    # DNS rebinding: a foreign name resolving to 127.0.0.1 sends its own Host and Origin (same-origin for the
    # browser, and for Tornado); the page and the websocket are refused all the same.
    evil = f"evil.example:{port}"
    assert _open_websocket(ws, evil, f"http://{evil}", token) == "refused 403"
    with pytest.raises(Exception, match="403"):
        asyncio.run(_fetch_page(f"http://{own}/app", evil, None))


def test_latentsky_app_refuses_a_shared_socket_folder_and_wildcards(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    env = _env(tmp_path)
    cli = [sys.executable, "-m", "latentsky.cli", "app"]
    run = subprocess.run(
        [*cli, "--unix-socket", str(shared / "app.sock")], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 2 and "must be private (mode 0700)" in run.stderr, run.stderr
    run = subprocess.run([*cli, "--allow-origin", "*"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "wildcards are refused" in run.stderr, run.stderr


def test_app_origins_never_include_a_wildcard():
    from latentsky.ui.serve import own_origins, same_origin

    assert own_origins("127.0.0.1", 5006) == ["127.0.0.1:5006", "localhost:5006"]
    assert own_origins("0.0.0.0", 80, ["lab.example"]) == ["127.0.0.1:80", "lab.example:80", "localhost:80"]
    with pytest.raises(ValueError, match="wildcard"):
        own_origins("127.0.0.1", 5006, ["*"])
    assert same_origin("https://hub.example", "hub.example")
    assert same_origin("http://hub.example:8000", "hub.example:8000")
    assert not same_origin("http://evil.example", "hub.example")
    assert not same_origin("null", "hub.example") and not same_origin(None, "hub.example")
    assert not same_origin("http://hub.example:8001", "hub.example:8000")
    # no "*" anywhere in what serves the app
    src = Path(__file__).resolve().parents[2] / "src" / "latentsky"
    for path in (src / "jupyter_proxy.py", src / "commands" / "app.py", src / "ui" / "serve.py"):
        assert 'websocket_origin="*"' not in path.read_text() and "allow_websocket_origin" not in path.read_text()
