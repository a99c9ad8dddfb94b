"""Positions, radii, dates and names: user input becomes ICRS degrees or a clear error naming the parameter."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table

from latentsky.archives.base import parse_coordinates, parse_radius, parse_time, resolve_name, safe_name
from latentsky.config import conf
from latentsky.exceptions import CoordinateError


def test_frames_strings_pairs_and_tables_become_icrs():
    target = SkyCoord(83.633, 22.0145, unit="deg")  # the Crab
    for given in (target.galactic, target.fk4, "5h34m31.92s +22d00m52.2s", (83.633, 22.0145), "83.633 22.0145"):
        c = parse_coordinates(given)
        assert c.separation(target).arcsec < 1.0, given
    table = Table({"RA": [1.0, 2.0] * u.deg, "Dec": [3.0, 4.0] * u.deg})
    np.testing.assert_allclose(parse_coordinates(table).ra.deg, [1.0, 2.0])


@pytest.mark.parametrize(
    "given, message",
    [
        ((10.0, 91.0), "coordinates: not a valid sky position"),
        ((float("nan"), 1.0), "not finite"),
        ("somewhere nice", "coordinates: not a valid sky position"),
        (Table({"x": [1.0]}), "needs 'ra' and 'dec'"),
        (42, "expected a SkyCoord"),
    ],
)
def test_impossible_positions(given, message):
    with pytest.raises(CoordinateError, match=message):
        parse_coordinates(given)


def test_radius_units_and_limits():
    assert parse_radius("2 arcsec").arcsec == pytest.approx(2)
    assert parse_radius(2 * u.arcmin).deg == pytest.approx(2 / 60)
    assert parse_radius(0.5).deg == 0.5  # bare numbers are degrees, as in ADQL
    for bad in (0, -1, 200, "5 kg", "wide"):
        with pytest.raises(CoordinateError, match="radius"):
            parse_radius(bad)


def test_dates():
    assert parse_time(55000, parameter="start").mjd == 55000
    assert parse_time("2012-04-01", parameter="start").isot.startswith("2012-04-01")
    with pytest.raises(CoordinateError, match="end: 'soon'"):
        parse_time("soon", parameter="end")


def test_names_offline_come_from_the_local_table_only(tmp_path):
    table = tmp_path / "names.csv"
    table.write_text("name,ra,dec\nalf Cen B,219.8961,-60.8375\n")
    conf.set(name_table=str(table), offline=True)
    assert resolve_name("ALFCENB").ra.deg == pytest.approx(219.8961)
    with pytest.raises(CoordinateError, match=r"target: unknown object name 'M31'.*offline"):
        resolve_name("M31")
    with pytest.raises(CoordinateError, match="target: expected a non-empty object name"):
        resolve_name("  ")
    bad = tmp_path / "bad.csv"
    bad.write_text("name,ra,dec\nX,not-a-number,1\n")
    conf.set(name_table=str(bad))
    with pytest.raises(CoordinateError, match="bad.csv, line 2"):
        resolve_name("X")


def test_safe_names_cannot_escape():
    from latentsky.download import names

    assert safe_name is names.safe_name  # the archive clients use the one sanitiser
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("ADP.2014-11-12T16:17:06.307") == "ADP.2014-11-12T16_17_06.307" and safe_name("") == "download"
