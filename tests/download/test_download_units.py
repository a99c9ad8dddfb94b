"""DownloadItem, safe names, the manifest and single transfers against the real loopback server."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest
import requests

from latentsky.download import DownloadItem, Manifest
from latentsky.download.names import filename_from_content_disposition, name_from_url, safe_join, safe_name
from latentsky.download.policy import parse_retry_after
from latentsky.download.transfer import fetch
from latentsky.download.verify import fits_extent, verify
from latentsky.exceptions import DownloadError


# ---------------------------------------------------------------- items
def test_item_normalises_and_validates(tmp_path):
    item = DownloadItem(
        "k", "http://127.0.0.1:8080/x.fits", str(tmp_path / "x.fits"), size="10", sha256="AB" * 32, kind="fits"
    )
    assert item.dest == tmp_path / "x.fits" and item.size == 10 and item.sha256 == "ab" * 32
    assert item.host == "127.0.0.1:8080" and item.part == tmp_path / "x.fits.part"
    assert DownloadItem.from_dict(item.to_dict()) == item
    for bad, match in [
        (dict(url="ftp://x/y"), "http"),
        (dict(kind="png"), "kind"),
        (dict(size=-1), "size"),
        (dict(sha256="123"), "sha256"),
        (dict(key=""), "key"),
    ]:
        fields = dict(key="k", url="http://h/x", dest=tmp_path / "x") | bad
        with pytest.raises(ValueError, match=match):
            DownloadItem(**fields)


# ---------------------------------------------------------------- names
@pytest.mark.parametrize(
    "raw, expected",
    [
        ("../../etc/passwd", "passwd"),
        ("/etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\evil.fits", "evil.fits"),
        ("C:\\evil.fits", "evil.fits"),
        ("C:evil.fits", "C_evil.fits"),
        ("ok\x00.fits", "ok.fits"),
        ("..", "download"),
        ("...", "download"),
        ("/", "download"),
        ("", "download"),
        (".bashrc", "bashrc"),
        ("a b\nc.fits", "a_b_c.fits"),
        ("CON", "_CON"),
        ("HARPS.2012-04-14T09:01:09.658_s1d_A.fits", "HARPS.2012-04-14T09_01_09.658_s1d_A.fits"),
        # Windows device names, with or without an extension, in any case; COM0 and LPT0 too
        ("con.fits", "_con.fits"),
        ("NUL", "_NUL"),
        ("aux.tar.gz", "_aux.tar.gz"),
        ("PRN.", "_PRN"),
        ("COM0", "_COM0"),
        ("com9.fits", "_com9.fits"),
        ("LPT0.txt", "_LPT0.txt"),
        ("lpt9", "_lpt9"),
        ("COM10.fits", "COM10.fits"),
        ("CONSOLE.fits", "CONSOLE.fits"),
        ("CON .fits", "CON_.fits"),
        # no trailing dot or space (Windows drops them: two names would become one)
        ("spec.fits.", "spec.fits"),
        ("spec.fits ", "spec.fits"),
        ("spec. . ", "spec"),
        (" spec", "spec"),
    ],
)
def test_safe_name(raw, expected):
    assert safe_name(raw) == expected


def test_safe_name_limits_length_keeps_extension_and_stays_unique():
    names = {safe_name("x" * 400 + tail + ".fits") for tail in ("a", "b", "")} | {safe_name("é" * 300 + ".fits")}
    assert len(names) == 4
    for name in names:
        assert len(name.encode()) <= 200 and name.endswith(".fits") and name.isascii()
    assert safe_name("y" * 200) == "y" * 200 and len(safe_name("y" * 201)) == 200  # at the limit: unchanged
    assert safe_name("z" * 300) != safe_name("z" * 301)


def test_safe_join_and_server_names_stay_inside(tmp_path):
    for raw in ["../../../evil.fits", "/tmp/evil.fits", "a/../../evil.fits", "\x00../evil", "..", "~/.ssh/id"]:
        path = safe_join(tmp_path, raw)
        assert path.parent == tmp_path and path.resolve().parent == tmp_path.resolve()
    assert filename_from_content_disposition('attachment; filename="../../../evil.fits"') == "evil.fits"
    assert filename_from_content_disposition("attachment; filename*=UTF-8''..%2F..%2Fevil%00.fits") == "evil.fits"
    assert filename_from_content_disposition("inline") is None
    assert name_from_url("http://h/file/..%2F..%2Fetc%2Fpasswd?x=1") == "passwd"
    assert name_from_url("http://h/") == "download"


# ------------------------------------------------------------- manifest
def _item(tmp_path, key="a", **kw):
    return DownloadItem(key, f"http://127.0.0.1:1/{key}.fits", tmp_path / f"{key}.fits", **kw)


def test_manifest_enqueue_twice_is_harmless(tmp_path):
    m = Manifest(tmp_path)  # a folder means folder/.latentsky-manifest.sqlite
    items = [_item(tmp_path, k) for k in "abc"]
    assert m.enqueue(items) == 3
    m.mark_done("a", "0" * 64, 10)
    m.start_attempt("b")
    m.mark_error("b", "HTTP 503", failed=False)
    assert m.enqueue(items) == 0 and m.enqueue(items[:1]) == 0
    assert len(m) == 3 and m.counts() == {"done": 1, "pending": 2}
    row = m.get("b")
    assert row["attempts"] == 1 and row["last_error"] == "HTTP 503"
    # a changed item (new size) is fetched again, even if it was done
    m.enqueue([_item(tmp_path, "a", size=99)])
    assert m.get("a")["state"] == "pending" and m.get("a")["size"] == 99
    assert m.items("pending")[0].key == "a"
    m.close()
    with sqlite3.connect(tmp_path / ".latentsky-manifest.sqlite") as db:  # persisted, WAL mode
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 3


def test_manifest_refuses_a_non_database(tmp_path):
    bad = tmp_path / "m.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    from latentsky.exceptions import StoreError

    with pytest.raises(StoreError, match="m.sqlite"):
        Manifest(bad)


# ------------------------------------------------------------- transfer
@pytest.fixture
def harps(fits_files):
    """A real 1.4 MB HARPS spectrum (several transfer chunks)."""
    return fits_files["harps"]


def _fits_item(archive, path, dest, **kw):
    return DownloadItem(path.name, archive.url_for(path), dest / path.name, kind="fits", **kw)


def test_fetch_resumes_a_part_file_with_range(archive, harps, tmp_path):
    data = harps.read_bytes()
    item = _fits_item(archive, harps, tmp_path, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    item.part.write_bytes(data[:500_000])
    with requests.Session() as s:
        res = fetch(item, s, timeout=10)
    assert res.resumed_from == 500_000 and res.received == len(data) - 500_000
    assert item.dest.read_bytes() == data and not item.part.exists()
    assert archive.log[-1].headers["range"] == "bytes=500000-" and archive.log[-1].status == 206


def test_fetch_restarts_when_range_is_ignored(archive, harps, tmp_path):
    data = harps.read_bytes()
    item = _fits_item(archive, harps, tmp_path)
    item.part.write_bytes(b"garbage that must not be kept" * 1000)
    archive.ignore_range = True
    with requests.Session() as s:
        res = fetch(item, s, timeout=10)
    assert res.resumed_from == 0 and res.received == len(data)
    assert item.dest.read_bytes() == data


def test_fetch_restarts_when_the_source_changed(archive, harps, tmp_path):
    data = harps.read_bytes()
    item = _fits_item(archive, harps, tmp_path)
    item.part.write_bytes(b"\x00" * 1000)  # bytes of an older version of the file
    with requests.Session() as s:
        fetch(item, s, timeout=10, etag='"an-older-etag"')
    assert archive.log[-1].status == 200 and item.dest.read_bytes() == data


def test_fetch_rejects_html_and_bad_checksums_without_touching_dest(archive, harps, tmp_path):
    item = _fits_item(archive, harps, tmp_path)
    archive.fail_first(f"/files/{harps.name}", 1, "html")
    with requests.Session() as s, pytest.raises(DownloadError, match="HTML page") as err:
        fetch(item, s, timeout=10)
    assert err.value.retryable and item.url in str(err.value)
    assert not item.dest.exists()
    bad = _fits_item(archive, harps, tmp_path, sha256="0" * 64)
    with requests.Session() as s, pytest.raises(DownloadError, match="SHA-256"):
        fetch(bad, s, timeout=10)
    assert not bad.dest.exists() and not bad.part.exists()
    missing = DownloadItem("x", archive.base_url + "/files/nope.fits", tmp_path / "nope.fits")
    with requests.Session() as s, pytest.raises(DownloadError, match="404") as err:
        fetch(missing, s, timeout=10)
    assert not err.value.retryable


def test_fetch_keeps_partial_bytes_after_a_dropped_connection(archive, harps, tmp_path):
    item = _fits_item(archive, harps, tmp_path)
    archive.fail_first("*", 1, "truncate")
    with requests.Session() as s, pytest.raises(DownloadError, match="connection lost"):
        fetch(item, s, timeout=10)
    assert item.part.stat().st_size > 0 and not item.dest.exists()


@pytest.mark.filterwarnings("ignore:File may have been truncated")
def test_verify_catches_truncated_and_mislabelled_fits(harps, tmp_path):
    data = harps.read_bytes()
    short = tmp_path / "short.fits"
    short.write_bytes(data[: len(data) - 2880 * 3])  # whole blocks, but the data unit is cut
    with pytest.raises(DownloadError, match="truncated"):
        verify(DownloadItem("s", "http://h/s", short, kind="fits"), short)
    odd = tmp_path / "odd.fits"
    odd.write_bytes(data[:5000])
    with pytest.raises(DownloadError, match="2880"):
        verify(DownloadItem("o", "http://h/o", odd, kind="fits"), odd)
    page = tmp_path / "page.fits"
    page.write_bytes(b"<!DOCTYPE html><html>login</html>")
    with pytest.raises(DownloadError, match="HTML"):
        verify(DownloadItem("p", "http://h/p", page, kind="fits"), page)
    # whatever the kind: a table promised a data product, never a login page (XHTML included)
    for body in (
        b"<!DOCTYPE html><html>login</html>",
        b"\n  <HTML><body>expired</body></HTML>",
        b'<?xml version="1.0"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0//EN">\n<html/>',
    ):
        page.write_bytes(body)
        with pytest.raises(DownloadError, match="HTML page arrived instead of the data product"):
            verify(DownloadItem("p", "http://h/p", page, kind="any"), page)
    votable = tmp_path / "table.xml"  # XML that is data
    votable.write_bytes(b'<?xml version="1.0"?>\n<VOTABLE version="1.4"><RESOURCE/></VOTABLE>')
    verify(DownloadItem("v", "http://h/v", votable, kind="any"), votable)
    good = tmp_path / "good.fits"
    good.write_bytes(data)
    assert (
        verify(DownloadItem("g", "http://h/g", good, kind="fits", size=len(data)), good)
        == hashlib.sha256(data).hexdigest()
    )


def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert 9 <= parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", now=0.0) <= 10


def test_fits_extent_reads_the_layout_of_real_files(fits_dir, fits_files, tmp_path):
    for path in sorted(fits_dir.iterdir()):
        assert fits_extent(path) == fits_extent(path.read_bytes()) == path.stat().st_size, path.name
        item = DownloadItem("k", "http://h/k", path, kind="fits")
        assert verify(item, path) == verify(item, path, deep=True) == verify(item, path, data=path.read_bytes())
    # a whole HDU missing at the end is invisible to the layout (only size or checksum catch it),
    # but padding after the last HDU is tolerated and a header cut before END is not
    data = fits_files["spectrum"].read_bytes()
    padded = tmp_path / "padded.fits"
    padded.write_bytes(data + bytes(2880))
    assert fits_extent(padded) == len(data)
    cut = tmp_path / "cut.fits"
    cut.write_bytes(data[:2880])
    with pytest.raises(ValueError, match="no END card"):
        fits_extent(cut)
    with pytest.raises(DownloadError, match="not a complete FITS file"):
        verify(DownloadItem("c", "http://h/c", cut, kind="fits"), cut)
    with pytest.raises(DownloadError, match="not a complete FITS file"):  # the same from memory
        verify(DownloadItem("c", "http://h/c", cut, kind="fits"), cut, data=data[:2880])
    with pytest.raises(DownloadError, match="were written"):  # bytes in memory and on disk differ
        verify(DownloadItem("c", "http://h/c", cut, kind="fits"), cut, data=data)


def test_verify_parses_with_astropy_only_when_asked_or_compressed(fits_files, tmp_path, monkeypatch):
    import gzip

    from astropy.io import fits

    opened = []
    real_open = fits.open
    monkeypatch.setattr(fits, "open", lambda *a, **kw: opened.append(a[0]) or real_open(*a, **kw))
    path = fits_files["spectrum"]
    item = DownloadItem("s", "http://h/s", path, kind="fits")
    # an uncompressed file: the layout scan of every header (no astropy parse, ~40x the CPU)
    verify(item, path)
    verify(item, path, data=path.read_bytes())
    assert opened == []
    verify(item, path, deep=True)  # --verify: every HDU parsed by astropy
    assert len(opened) == 1
    packed = tmp_path / "s.fits.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    verify(DownloadItem("z", "http://h/z", packed, kind="fits"), packed)  # compressed: opened, decompressed
    assert len(opened) == 2
