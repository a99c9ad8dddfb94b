"""``latentsky download``: tables in several formats, status, hostile names, and a kill -9 mid-transfer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from astropy.table import Table

from latentsky.archives.local.server import LocalServer
from latentsky.cli import main
from latentsky.download import Manifest


def _table(server, names=None) -> Table:
    files = server.files()
    t = Table({"obs_id": [p.stem for _, p in files], "access_url": [u for u, _ in files]})
    if names is not None:
        t["filename"] = names
    return t


@pytest.mark.parametrize(
    "fmt, suffix",
    [("ascii.ecsv", ".ecsv"), ("votable", ".xml"), ("parquet", ".parquet"), ("fits", ".fits"), ("ascii.csv", ".csv")],
)
def test_download_table_then_status_then_rerun(archive, fits_dir, tmp_path, capsys, fmt, suffix):
    table = tmp_path / f"products{suffix}"
    _table(archive).write(table, format=fmt)
    dest = tmp_path / "dest"
    assert main(["download", str(table), "--dest", str(dest), "--no-progress", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["done"] == 6 and out["failed"] == 0
    for _, path in archive.files():
        assert (dest / path.name).read_bytes() == path.read_bytes()
    assert main(["download", "--status", str(dest), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["done"] == st["items"] == 6 and st["failed"] == 0
    assert st["bytes_done"] == sum(p.stat().st_size for _, p in archive.files())
    archive.clear()
    assert main(["download", str(table), "--dest", str(dest), "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == 6 and archive.log == []
    # the folder alone resumes the job too
    assert main(["download", str(dest), "--no-progress"]) == 0
    assert "0 downloaded, 6 already present, 0 failed" in capsys.readouterr().out
    assert main(["download", "--status", str(dest)]) == 0
    assert "6/6 done, 0 pending" in capsys.readouterr().out
    # a file damaged in place (same size) is only noticed with --verify, then fetched again
    victim = dest / archive.files()[0][1].name
    damaged = bytearray(victim.read_bytes())
    damaged[:6] = b"BROKEN"
    victim.write_bytes(bytes(damaged))
    archive.clear()
    assert main(["download", str(table), "--dest", str(dest), "--no-progress", "--verify"]) == 0
    assert "1 downloaded, 5 already present" in capsys.readouterr().out
    assert victim.read_bytes() == archive.files()[0][1].read_bytes() and len(archive.log) == 1


def test_table_names_cannot_escape_dest(archive, tmp_path, capsys):
    hostile = ["../../evil1.fits", "/tmp/evil2.fits", "..\\..\\evil3.fits", "ok\x00/../../evil4.fits", "..", ""]
    table = tmp_path / "t.ecsv"
    _table(archive, hostile).write(table)
    dest = tmp_path / "deep" / "dest"
    assert main(["download", str(table), "--dest", str(dest), "--no-progress"]) == 0
    inside = {p.name for p in dest.iterdir() if not p.name.startswith(".latentsky")}
    # "..": a neutral name; "": the name in the URL
    last = Path(archive.files()[-1][1]).name
    assert inside == {"evil1.fits", "evil2.fits", "evil3.fits", "evil4.fits", "download", last}
    everything = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(p.parent == dest or p == table for p in everything), everything


def test_bad_inputs_name_the_problem(tmp_path, capsys):
    t = tmp_path / "t.ecsv"
    Table({"x": [1]}).write(t)
    assert main(["download", str(t), "--dest", str(tmp_path / "d")]) == 2
    assert "no URL column" in capsys.readouterr().err
    assert main(["download", "--status", str(tmp_path)]) == 2
    assert "no download manifest" in capsys.readouterr().err
    assert main(["download", str(tmp_path / "missing.ecsv"), "--dest", str(tmp_path)]) == 2


def _snapshot(dest: Path, names):
    done = {n for n in names if (dest / n).exists()}
    parts = {n: (dest / (n + ".part")).stat().st_size for n in names if (dest / (n + ".part")).exists()}
    return done, parts


def test_sigkill_mid_transfer_loses_nothing(fits_dir, tmp_path):
    # small files first, then the two 1.4 MB HARPS spectra, slow enough to be caught mid-body
    with LocalServer(fits_dir, bandwidth=300_000) as server:
        files = sorted(server.files(), key=lambda f: f[1].stat().st_size)
        names = [p.name for _, p in files]
        table = tmp_path / "t.ecsv"
        Table({"access_url": [u for u, _ in files]}).write(table)
        dest = tmp_path / "dest"
        cmd = [
            sys.executable,
            "-m",
            "latentsky.cli",
            "download",
            str(table),
            "--dest",
            str(dest),
            "--no-progress",
            "--max-connections",
            "2",
            "--max-connections-per-host",
            "2",
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            done, parts = _snapshot(dest, names) if dest.exists() else (set(), {})
            if len(done) >= 3 and any(size > 100_000 for size in parts.values()):
                break
            assert proc.poll() is None, proc.stdout.read().decode()
            time.sleep(0.02)
        else:
            proc.kill()
            pytest.fail("the download never reached the middle of a large file")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
        t_kill = time.monotonic()
        done, parts = _snapshot(dest, names)  # stable now: nobody writes any more
        assert done and parts
        server.wait_idle()

        rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        after = [r for r in server.log if r.time > t_kill]
        requested = {Path(r.path).name for r in after}
        assert not requested & done, f"complete files fetched again: {requested & done}"
        for name, size in parts.items():
            first = next(r for r in after if r.path.endswith("/" + name))
            if size:
                assert first.headers.get("range") == f"bytes={size}-"
                # 416: the .part was whole (killed between its last byte and the rename)
                assert first.status == 206 or (first.status == 416 and size == (fits_dir / name).stat().st_size)
        for _, path in files:
            assert (dest / path.name).read_bytes() == path.read_bytes()
        assert not list(dest.glob("*.part"))
        m = Manifest(dest)
        assert m.counts() == {"done": len(files)}
        assert all(r["attempts"] >= 1 for r in m.rows())


def test_two_products_with_one_name_are_both_kept(archive, tmp_path, capsys):
    files = archive.files()[:3]
    table = tmp_path / "t.ecsv"
    Table({"access_url": [u for u, _ in files], "filename": ["same.fits"] * 3}).write(table)
    assert main(["download", str(table), "--dest", str(tmp_path / "d"), "--no-progress"]) == 0
    names = sorted(p.name for p in (tmp_path / "d").iterdir() if not p.name.startswith("."))
    assert names == ["same-1.fits", "same-2.fits", "same.fits"]
