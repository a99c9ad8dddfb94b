"""``latentsky archive serve`` and ``latentsky query``: the user's path from a folder to a table of products."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from astropy.table import Table

from latentsky.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")


@pytest.fixture
def served(sample):
    """``latentsky archive serve`` in its own process, as a user runs it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "latentsky.cli", "archive", "serve", str(sample), "--port", "0", "--latency-ms", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert match, f"no base URL in the first line: {line!r}"
        lines = [proc.stdout.readline() for _ in range(5)]
        yield match.group(), line + "".join(lines)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


def test_serve_prints_its_url_and_settings(served):
    url, text = served
    assert f"LATENTSKY_ESO_TAP_URL={url}/tap" in text
    assert "ESO spectra" in text and "SDSS spectra" in text


def test_query_writes_a_table_download_can_use(served, tmp_path, capsys):
    url, _ = served
    out = tmp_path / "harps.ecsv"
    assert (
        main(["query", "eso", "--base-url", url, "--start", "2012-04-01", "--end", "2012-05-01", "--out", str(out)])
        == 0
    )
    table = Table.read(out)
    assert len(table) > 0 and {"access_url", "key", "filename", "dp_id", "date"} <= set(table.colnames)
    assert all(u.startswith(url) for u in table["access_url"])
    assert all(f.endswith(".fits") for f in table["filename"])
    out2 = tmp_path / "qso.parquet"
    assert main(["query", "sdss", "--base-url", url, "--class", "QSO", "--out", str(out2)]) == 0
    quasars = Table.read(out2)
    assert len(quasars) > 10
    assert "products from sdss written" in capsys.readouterr().out
    # the table is what `latentsky download` needs: the same names, verified FITS files
    assert main(["download", str(out), "--dest", str(tmp_path / "harps"), "--no-progress"]) == 0
    got = sorted(p.name for p in (tmp_path / "harps").glob("*.fits"))
    assert got == sorted(table["filename"])


def test_query_errors_name_the_option(tmp_path, capsys):
    code = main(
        ["query", "eso", "--coords", "10 95", "--base-url", "http://127.0.0.1:9", "--out", str(tmp_path / "x.ecsv")]
    )
    assert code == 2 and "coordinates" in capsys.readouterr().err
    code = main(["archive", "serve", str(tmp_path), "--faults", "500,gremlins"])
    assert code == 2 and "gremlins" in capsys.readouterr().err


def test_cutouts_command_resumes(images, tmp_path, capsys):
    first = images.catalog.images[0]
    c = first.wcs.pixel_to_world(16, 16).icrs
    table = Table({"ra": [c.ra.deg, 10.0], "dec": [c.dec.deg, -45.0]})
    table.write(tmp_path / "targets.ecsv")
    argv = [
        "cutouts",
        str(tmp_path / "targets.ecsv"),
        "--dest",
        str(tmp_path / "cut"),
        "--bands",
        "FIRST",
        "--base-url",
        images.base_url,
        "--no-progress",
    ]
    assert main(argv) == 0
    assert "ok: 1, off_footprint: 1" in capsys.readouterr().out
    images.server.fail_first("/hips2fits", 10, "500")
    assert main(argv) == 0  # nothing left to fetch: no request, so no fault either
