"""The loopback server against idle, slow, greedy and malformed clients: bounded, and a clear answer to each."""

from __future__ import annotations

import os
import socket
import time

import pytest
import requests

from latentsky.archives.local.server import Limits, LocalServer, Response


def _raw(server: LocalServer, data: bytes, *, read_timeout: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it (or ``read_timeout``)."""
    host, port = server.base_url[7:].split(":")
    with socket.create_connection((host, int(port)), timeout=read_timeout) as sock:
        sock.sendall(data)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
                if b"\r\n\r\n" in out and b"Connection: close" not in out and len(out) > 200:
                    break
        except (socket.timeout, ConnectionResetError):
            pass
    return out


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "a.fits").write_bytes(b"SIMPLE  = T" + b" " * 2869)
    return tmp_path / "served"


def test_idle_and_slowloris_connections_are_closed(folder):
    with LocalServer(folder, limits=Limits(header_timeout=0.5)) as server:
        host, port = server.base_url[7:].split(":")
        idle = socket.create_connection((host, int(port)), timeout=5)
        slow = socket.create_connection((host, int(port)), timeout=5)
        t0 = time.monotonic()
        for piece in (b"GET /files/a.fits HTTP/1.1\r\n", b"Host: x\r\n", b"X-a: 1\r\n", b"X-b: 2\r\n"):
            try:
                slow.sendall(piece)  # one header line every 0.3 s: never a complete request
            except OSError:
                break
            time.sleep(0.3)
        assert idle.recv(10) == b"" and slow.recv(10) == b""  # both closed by the server
        assert time.monotonic() - t0 < 3.0
        idle.close()
        slow.close()
        assert requests.get(server.url_for(folder / "a.fits"), timeout=5).status_code == 200


def test_connections_are_bounded(folder):
    with LocalServer(folder, limits=Limits(max_connections=5)) as server:
        host, port = server.base_url[7:].split(":")
        held = [socket.create_connection((host, int(port)), timeout=5) for _ in range(5)]
        time.sleep(0.2)
        answer = _raw(server, b"GET /files/a.fits HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503") and b"connections open" in answer
        for sock in held:
            sock.close()
        time.sleep(0.2)
        assert requests.get(server.url_for(folder / "a.fits"), timeout=5).status_code == 200


def test_bodies_are_refused_from_their_length_before_being_read(folder):
    with LocalServer(folder) as server:
        server.add_route("POST", "/echo", lambda req: Response(req.body))
        t0 = time.monotonic()
        huge = _raw(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1125899906842624\r\n\r\nabc")
        assert huge.startswith(b"HTTP/1.1 413") and b"limit of 16777216 bytes" in huge
        bad = _raw(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
        assert bad.startswith(b"HTTP/1.1 400") and b"'abc' is not a number of bytes" in bad
        digits = _raw(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n")
        assert digits.startswith(b"HTTP/1.1 413")
        assert time.monotonic() - t0 < 5.0
        assert requests.post(server.base_url + "/echo", data=b"hello", timeout=5).content == b"hello"
        assert [r.status for r in server.log[:3]] == [413, 400, 413]


def test_ranges_of_any_length_get_an_answer(folder):
    with LocalServer(folder) as server:
        url = server.url_for(folder / "a.fits")
        r = requests.get(url, headers={"Range": "bytes=" + "9" * 5000 + "-"}, timeout=5)
        assert r.status_code == 416 and r.headers["Content-Range"] == "bytes */2880"
        r = requests.get(url, headers={"Range": "bytes=0-" + "9" * 5000}, timeout=5)
        assert r.status_code == 206 and len(r.content) == 2880
        r = requests.get(url, headers={"Range": "bytes=-" + "0" * 4999 + "7"}, timeout=5)
        assert r.status_code == 206 and len(r.content) == 7


def test_a_malformed_form_body_is_a_400(folder):
    with LocalServer(folder) as server:
        server.add_route("POST", "/form", lambda req: Response(b"ok"))
        r = requests.post(
            server.base_url + "/form",
            data=b"no parts here",
            headers={"Content-Type": "multipart/form-data; boundary=xyz"},
            timeout=5,
        )
        assert r.status_code == 400 and "no parts" in r.text


def test_a_link_out_of_the_folder_is_neither_listed_nor_served(folder, tmp_path):
    secret = tmp_path / "secret.fits"
    secret.write_bytes(b"private")
    os.symlink(secret, folder / "link.fits")
    os.symlink(folder / "a.fits", folder / "inside.fits")  # a link that stays inside is fine
    with LocalServer(folder) as server:
        assert sorted(p.name for _, p in server.files()) == ["a.fits", "inside.fits"]
        assert requests.get(server.base_url + "/files/link.fits", timeout=5).status_code == 404
        assert requests.get(server.base_url + "/files/inside.fits", timeout=5).status_code == 200


def test_slow_handlers_do_not_hold_up_quick_ones(folder):
    import threading

    release = threading.Event()

    def slow(req):
        release.wait(10)
        return Response(b"slow")

    with LocalServer(folder, limits=Limits(workers=2)) as server:
        server.add_route("GET", "/slow", slow)
        server.add_route("GET", "/quick", lambda req: Response(b"quick"), inline=True)
        threads = [
            threading.Thread(target=requests.get, args=(server.base_url + "/slow",), kwargs={"timeout": 10})
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        assert requests.get(server.base_url + "/quick", timeout=5).content == b"quick"
        assert requests.get(server.url_for(folder / "a.fits"), timeout=5).status_code == 200
        assert time.monotonic() - t0 < 1.0  # both pool workers are busy, yet these answer at once
        release.set()
        for t in threads:
            t.join()
        assert server.wait_idle()
        assert server.max_in_flight >= 4
