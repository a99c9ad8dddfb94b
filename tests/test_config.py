"""latentsky.conf: one object for every setting, environment overrides, and ``set_temp`` blocks."""

from __future__ import annotations

import pytest

from latentsky.config import Conf, conf


def test_set_temp_restores_what_it_changed_even_after_an_error():
    before = (conf.offline, conf.timeout, conf.eso_tap_url)
    with pytest.raises(RuntimeError):
        with conf.set_temp(offline=not before[0], timeout=1.5) as inside:
            assert inside is conf and (conf.offline, conf.timeout) == (not before[0], 1.5)
            conf.eso_tap_url = "http://127.0.0.1:1/tap"  # not named: left as the block leaves it
            raise RuntimeError("the block failed")
    assert (conf.offline, conf.timeout) == before[:2] and conf.eso_tap_url == "http://127.0.0.1:1/tap"


def test_set_temp_without_arguments_restores_every_setting_and_blocks_nest():
    before = dict(vars(conf))
    with conf.set_temp():
        conf.set(max_retries=1, name_table="names.csv")
        with conf.set_temp(max_retries=2):
            assert conf.max_retries == 2
        assert conf.max_retries == 1
    assert dict(vars(conf)) == before


def test_unknown_settings_are_refused_and_nothing_changes():
    before = dict(vars(conf))
    with pytest.raises(AttributeError, match="no setting 'time_out'"):
        conf.set(timeout=2.0, time_out=3.0)
    with pytest.raises(AttributeError, match="no setting 'time_out'"):
        with conf.set_temp(timeout=2.0, time_out=3.0):
            pass
    assert dict(vars(conf)) == before


def test_environment_variables_override_defaults(monkeypatch):
    monkeypatch.setenv("LATENTSKY_RETRY_BACKOFF", "0.25")
    monkeypatch.setenv("LATENTSKY_OFFLINE", "yes")
    monkeypatch.setenv("LATENTSKY_TAP_SYNC_ROWS", "500")
    fresh = Conf()
    assert (fresh.retry_backoff, fresh.offline, fresh.tap_sync_rows) == (0.25, True, 500)
    monkeypatch.setenv("LATENTSKY_OFFLINE", "maybe")
    with pytest.raises(ValueError, match="LATENTSKY_OFFLINE='maybe' is not a boolean"):
        Conf()
