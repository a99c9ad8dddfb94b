"""``latentsky download`` on a full disk, HTML pages whatever the kind, and Ctrl-C: a clear message, nothing lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _support.signals import popen_interruptible
from astropy.table import Table

from latentsky.archives.local.server import LocalServer, Response
from latentsky.cli import main
from latentsky.download import Manifest


@pytest.fixture
def small_disk(tmp_path):
    """A real file system that fills up: a tmpfs of 8 MiB (needs root, as the test machines run)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _cli(*args, timeout=120):
    cmd = [sys.executable, "-m", "latentsky.cli", "download", *map(str, args), "--no-progress"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_disk_full_is_a_clear_error_and_the_next_run_resumes_byte_for_byte(fits_dir, small_disk, tmp_path):
    with LocalServer(fits_dir) as server:
        files = sorted(server.files(), key=lambda f: f[1].stat().st_size)
        table = tmp_path / "t.ecsv"
        Table({"access_url": [u for u, _ in files]}).write(table)
        total = sum(p.stat().st_size for _, p in files)
        filler = small_disk / "filler"
        # leave room for about half of the files (and the manifest): the disk fills mid-way
        filler.write_bytes(bytes(8 * 2**20 - total // 2 - 128 * 1024))
        dest = small_disk / "dest"
        first = _cli(table, "--dest", dest, "--max-connections", "1")
        assert first.returncode == 1, first.stdout + first.stderr
        assert "Traceback" not in first.stderr and "OperationalError" not in first.stderr
        assert "No space left on device" in first.stderr and "run the same command again" in first.stderr
        kept = {p.name: p.stat().st_size for p in dest.iterdir() if not p.name.startswith(".")}
        assert any(not n.endswith(".part") for n in kept)  # some files were finished
        assert len(kept) < len(files) + 1  # ... not all

        filler.unlink()
        server.clear()
        second = _cli(table, "--dest", dest, "--max-connections", "1")
        assert second.returncode == 0, second.stdout + second.stderr
        for _, path in files:
            assert (dest / path.name).read_bytes() == path.read_bytes()
        assert not list(dest.glob("*.part"))
        requested = {Path(r.path).name: r for r in server.log}
        for name, size in kept.items():
            if name.endswith(".part"):  # resumed where the disk filled up, not fetched again
                assert requested[name[:-5]].headers.get("range") == f"bytes={size}-"
            else:
                assert name not in requested
        assert Manifest(dest).counts() == {"done": len(files)}


def test_an_html_page_is_never_a_finished_file_whatever_the_kind(fits_dir, tmp_path, capsys):
    with LocalServer(fits_dir) as server:
        # product URLs that do not end in .fits, and no file-name column: --kind auto means "any"
        server.add_route(
            "GET", "/product/{name}", lambda r: Response.from_file(fits_dir / (r.path_params["name"] + ".fits"))
        )
        stems = sorted(p.name[:-5] for p in fits_dir.glob("*.fits"))[:3]
        table = tmp_path / "t.ecsv"
        Table({"dp_id": stems, "access_url": [f"{server.base_url}/product/{n}" for n in stems]}).write(table)
        dest = tmp_path / "dest"
        server.fail_first("/product/*", 100, "html")  # an expired session: the archive's login page, every time
        argv = ["download", str(table), "--dest", str(dest), "--no-progress", "--max-retries", "2"]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("an HTML page arrived instead of the data product") == 3
        assert [p.name for p in dest.iterdir() if not p.name.startswith(".")] == []  # no page saved as data
        # the session renewed, the same command fetches them: none was recorded as done
        server.clear()
        assert main(argv) == 0
        assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".")) == stems
        for n in stems:
            assert (dest / n).read_bytes() == (fits_dir / (n + ".fits")).read_bytes()


def test_ctrl_c_says_what_was_kept_and_exits_130(fits_dir, tmp_path):
    with LocalServer(fits_dir, bandwidth=200_000) as server:
        files = sorted(server.files(), key=lambda f: f[1].stat().st_size)
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
            "1",
        ]
        proc = popen_interruptible(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not (dest.is_dir() and any(p.name.endswith(".part") for p in dest.iterdir())):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "Traceback" not in err and "KeyboardInterrupt" not in err
        assert "interrupted" in err and "Run the same command again" in err and str(dest) in err
        server.bandwidth = None  # the rerun at full speed: only the interruption needed a slow server
        rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        for _, path in files:
            assert (dest / path.name).read_bytes() == path.read_bytes()
