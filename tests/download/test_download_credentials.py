"""The ESO token is sent to the archive and never appears in logs, the manifest, repr() or errors."""

from __future__ import annotations

import logging
import pickle

import pytest

from latentsky.download import DownloadManager, credentials
from latentsky.download.credentials import Secret, auth_headers, get_token
from latentsky.exceptions import CredentialError

TOKEN = "eyJhbGciOi.TOP-SECRET-eso-token.x9Zq"


def _all_text_in(folder) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def eso_is_local(archive, monkeypatch):
    """Point conf.eso_data_url at the loopback archive, the one host the token may go to."""
    from latentsky.config import conf

    monkeypatch.setattr(conf, "eso_data_url", archive.base_url + "/files/")


def test_token_is_used_and_never_leaks(
    archive, fits_dir, tmp_path, plan, assert_identical, monkeypatch, caplog, eso_is_local
):
    monkeypatch.setenv("LATENTSKY_ESO_TOKEN", TOKEN)
    archive.require_token("/files/", TOKEN)
    items = plan(archive, tmp_path / "dest", auth="eso")
    broken = items[0]
    # one file keeps failing, so its error goes through every reporting path
    archive.fail_first(broken.url[len(archive.base_url) :], 10, "500")
    archive.fail_first("/files/*", 1, "html")  # an expired-session page: re-authenticate, retry
    manager = DownloadManager(tmp_path / "dest", max_retries=3, backoff=0.01, timeout=5)
    with caplog.at_level(logging.DEBUG):
        results = manager.run(items)
        again = manager.run(results.errors)
    assert len(results.done) == len(items) - 1 and len(results.errors) == 1
    assert_identical(items[1:])
    # the token was really sent, as a header
    assert {r.headers.get("authorization") for r in archive.log} == {f"Bearer {TOKEN}"}
    texts = [
        caplog.text,
        repr(manager),
        repr(results),
        repr(again),
        repr(items),
        repr(results.errors),
        str(results.errors[0]),
        results.errors[0].error,
        results.summary(),
        *(str(r) for r in manager.manifest.rows()),
    ]
    for text in texts:
        assert TOKEN not in text
    assert "HTTP 500" in results.errors[0].error
    # the manifest on disk (database, WAL) holds the credential's name at most
    manager.manifest.close()
    assert TOKEN.encode() not in _all_text_in(tmp_path / "dest")
    assert "TOP-SECRET" not in caplog.text


def test_missing_token_is_a_clear_error_without_a_value(archive, tmp_path, plan, monkeypatch, eso_is_local):
    monkeypatch.delenv("LATENTSKY_ESO_TOKEN", raising=False)
    import keyring

    monkeypatch.setattr(keyring, "get_password", lambda service, user: None)
    with pytest.raises(CredentialError, match="LATENTSKY_ESO_TOKEN"):
        auth_headers("eso")
    items = plan(archive, tmp_path / "dest", auth="eso")[:1]
    results = DownloadManager(tmp_path / "dest").run(items)
    assert "LATENTSKY_ESO_TOKEN" in results.errors[0].error and archive.log == []


def test_login_page_without_a_valid_token_is_never_saved(archive, tmp_path, plan, monkeypatch, eso_is_local):
    monkeypatch.setenv("LATENTSKY_ESO_TOKEN", "expired-" + TOKEN)
    archive.require_token("/files/", TOKEN)
    items = plan(archive, tmp_path / "dest", auth="eso")[:2]
    results = DownloadManager(tmp_path / "dest", max_retries=2, backoff=0.01).run(items)
    assert len(results.errors) == 2 and all("HTML page" in e.error for e in results.errors)
    assert not any(i.dest.exists() or i.part.exists() for i in items)
    assert TOKEN not in repr(results.errors)


def test_keyring_is_the_fallback(monkeypatch):
    import keyring

    monkeypatch.delenv("LATENTSKY_ESO_TOKEN", raising=False)
    monkeypatch.setattr(
        keyring, "get_password", lambda service, user: TOKEN if (service, user) == ("latentsky", "eso") else None
    )
    token = get_token("eso")
    assert token.reveal() == TOKEN and TOKEN not in repr(token) and TOKEN not in str(token)
    assert TOKEN not in f"{token}" and TOKEN not in repr({"t": token})
    with pytest.raises(TypeError):
        pickle.dumps(token)
    assert credentials.redact(f"server said: Bearer {TOKEN}") == "server said: Bearer ***"
    assert Secret("a") == Secret("a")


def test_token_goes_only_to_eso_hosts(archive, fits_dir, tmp_path, plan, monkeypatch):
    """A table whose URLs point elsewhere (a hostile or mistaken table) cannot collect the token."""
    from latentsky.config import conf

    monkeypatch.setenv("LATENTSKY_ESO_TOKEN", TOKEN)
    monkeypatch.setattr(conf, "eso_data_url", "https://dataportal.eso.org/dataportal_new/file/")
    assert auth_headers("eso", "https://dataportal.eso.org/dataportal_new/file/ADP.1")["Authorization"].endswith(TOKEN)
    with pytest.raises(CredentialError, match="refusing to send") as err:
        auth_headers("eso", "https://eso.org.evil.example/x")
    assert TOKEN not in str(err.value)
    with pytest.raises(CredentialError):
        auth_headers("eso", "http://archive.eso.org/x")  # never in clear text
    items = plan(archive, tmp_path / "dest", auth="eso")
    results = DownloadManager(tmp_path / "dest", max_retries=2).run(items)
    assert len(results.errors) == len(items) and archive.log == []
    assert all("refusing to send" in e.error for e in results.errors)
