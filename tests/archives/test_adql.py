"""The local archive's ADQL interpreter on small tables: what it accepts, computes and refuses."""

import numpy as np
import pytest
from astropy.table import Table

from latentsky.archives.local import adql


@pytest.fixture
def tables():
    obs = Table({"s_ra": [10.0, 10.001, 200.0, 10.0], "s_dec": [5.0, 5.0, -30.0, 5.5],
                 "obs_collection": ["HARPS", "HARPS", "UVES", "HARPS"], "t_min": [1.0, 2.0, 3.0, np.nan],
                 "target_name": ["a", "b'c", "d", "e"]})
    up = Table({"ra": [10.0, 200.0], "dec": [5.0, -30.0], "radius": [0.01, 0.01], "target_index": [7, 8]})
    return {"ivoa.obscore": obs, "tap_upload.targets": up}


def run(q, tables, **kw):
    return adql.run(q, tables, **kw)


def test_cone_top_order(tables):
    out, overflow = run("SELECT TOP 5 * FROM ivoa.ObsCore WHERE obs_collection = 'HARPS' AND "
                        "CONTAINS(POINT('ICRS', s_ra, s_dec), CIRCLE('ICRS', 10.0, 5.0, 0.01)) = 1 "
                        "ORDER BY t_min DESC", tables)
    assert list(out["t_min"]) == [2.0, 1.0] and not overflow


def test_cone_uses_great_circle_distance(tables):
    # 0.001 deg of RA at dec 5 is 0.000996 deg on the sky: inside a 0.000997 circle, outside 0.000995
    inside, _ = run("SELECT s_ra FROM ivoa.obscore WHERE CONTAINS(POINT('ICRS', s_ra, s_dec), "
                    "CIRCLE('ICRS', 10.0, 5.0, 0.000997)) = 1", tables)
    outside, _ = run("SELECT s_ra FROM ivoa.obscore WHERE 1 = CONTAINS(POINT('ICRS', s_ra, s_dec), "
                     "CIRCLE('ICRS', 10.0, 5.0, 0.000995))", tables)
    assert len(inside) == 2 and len(outside) == 1


def test_upload_join_keeps_target_columns(tables):
    out, _ = run("SELECT o.s_ra, t.target_index FROM ivoa.ObsCore AS o JOIN TAP_UPLOAD.targets AS t "
                 "ON 1 = CONTAINS(POINT('ICRS', o.s_ra, o.s_dec), CIRCLE('ICRS', t.ra, t.dec, t.radius))", tables)
    assert sorted(zip(out["s_ra"], out["target_index"])) == [(10.0, 7), (10.001, 7), (200.0, 8)]


def test_maxrec_overflow_but_top_is_not(tables):
    out, overflow = run("SELECT s_ra FROM ivoa.obscore", tables, maxrec=2)
    assert len(out) == 2 and overflow
    out, overflow = run("SELECT TOP 2 s_ra FROM ivoa.obscore", tables, maxrec=2)
    assert len(out) == 2 and not overflow


def test_boolean_logic_like_in_between_null_and_quotes(tables):
    out, _ = run("SELECT target_name FROM ivoa.obscore WHERE (t_min >= 2 AND t_min < 3) OR "
                 "obs_collection LIKE 'UV%' OR t_min IS NULL", tables)
    assert list(out["target_name"]) == ["b'c", "d", "e"]
    out, _ = run("SELECT target_name FROM ivoa.obscore WHERE target_name IN ('a', 'b''c') "
                 "AND NOT t_min BETWEEN 1.5 AND 9", tables)
    assert list(out["target_name"]) == ["a"]


@pytest.mark.parametrize("query, message", [
    ("SELECT x FROM ivoa.obscore", "unknown column 'x'"),
    ("SELECT s_ra FROM nowhere", "unknown table 'nowhere'"),
    ("SELECT s_ra FROM ivoa.obscore WHERE s_ra ~ 3", "unexpected character"),
    ("SELECT DISTINCT s_ra FROM ivoa.obscore", "DISTINCT"),
    ("SELECT s_ra FROM ivoa.obscore WHERE CONTAINS(POINT('ICRS', s_ra, s_dec), BOX('ICRS', 1, 2, 3, 4)) = 1",
     "CIRCLE"),
])
def test_refused_with_the_offending_name(tables, query, message):
    with pytest.raises(adql.AdqlError, match=message):
        run(query, tables)
