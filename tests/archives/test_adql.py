"""The local archive's ADQL (sqlglot + SQLite) on small tables: what it accepts, computes and refuses."""

import math
import time

import numpy as np
import pytest
from astropy.table import Table

from latentsky.archives.local import adql


@pytest.fixture
def tables():
    obs = Table(
        {
            "s_ra": [10.0, 10.001, 200.0, 10.0],
            "s_dec": [5.0, 5.0, -30.0, 5.5],
            "obs_collection": ["HARPS", "HARPS", "UVES", "HARPS"],
            "t_min": [1.0, 2.0, 3.0, np.nan],
            "target_name": ["a", "b'c", "d", "e"],
        }
    )
    obs["s_ra"].unit, obs["s_ra"].description = "deg", "right ascension"
    obs["s_ra"].meta["ucd"] = "pos.eq.ra;meta.main"
    up = Table({"ra": [10.0, 200.0], "dec": [5.0, -30.0], "radius": [0.01, 0.01], "target_index": [7, 8]})
    return {"ivoa.obscore": obs, "tap_upload.targets": up}


def run(q, tables, **kw):
    return adql.run(q, tables, **kw)


def test_cone_top_order(tables):
    out, overflow = run(
        "SELECT TOP 5 * FROM ivoa.ObsCore WHERE obs_collection = 'HARPS' AND "
        "CONTAINS(POINT('ICRS', s_ra, s_dec), CIRCLE('ICRS', 10.0, 5.0, 0.01)) = 1 "
        "ORDER BY t_min DESC",
        tables,
    )
    assert list(out["t_min"]) == [2.0, 1.0] and not overflow
    assert out.colnames == ["s_ra", "s_dec", "obs_collection", "t_min", "target_name"]


def test_cone_uses_great_circle_distance(tables):
    # 0.001 deg of RA at dec 5 is 0.000996 deg on the sky: inside a 0.000997 circle, outside 0.000995
    inside, _ = run(
        "SELECT s_ra FROM ivoa.obscore WHERE CONTAINS(POINT('ICRS', s_ra, s_dec), "
        "CIRCLE('ICRS', 10.0, 5.0, 0.000997)) = 1",
        tables,
    )
    outside, _ = run(
        "SELECT s_ra FROM ivoa.obscore WHERE 1 = CONTAINS(POINT('ICRS', s_ra, s_dec), "
        "CIRCLE('ICRS', 10.0, 5.0, 0.000995))",
        tables,
    )
    assert len(inside) == 2 and len(outside) == 1
    # the same through the generic geometry functions (a circle built from a point, ADQL 2.1)
    generic, _ = run(
        "SELECT s_ra FROM ivoa.obscore WHERE CONTAINS(POINT(s_ra, s_dec), CIRCLE(POINT(10.0, 5.0), 0.000997)) = 1",
        tables,
    )
    assert len(generic) == 2


def test_distance_box_polygon_intersects(tables):
    out, _ = run(
        "SELECT target_name, DISTANCE(POINT('ICRS', s_ra, s_dec), POINT('ICRS', 10, 5)) AS d, "
        "DISTANCE(s_ra, s_dec, 10, 5) AS d4 FROM ivoa.obscore ORDER BY d",
        tables,
    )
    assert list(out["target_name"][:2]) == ["a", "b'c"]
    assert out["d"][2] == pytest.approx(0.5) and out["d4"][2] == pytest.approx(0.5)
    box, _ = run(
        "SELECT target_name FROM ivoa.obscore WHERE CONTAINS(POINT(s_ra, s_dec), BOX(10, 5, 0.1, 1.2)) = 1", tables
    )
    poly, _ = run(
        "SELECT target_name FROM ivoa.obscore WHERE 1 = CONTAINS(POINT('ICRS', s_ra, s_dec), "
        "POLYGON('ICRS', 9.9, 4.9, 10.1, 4.9, 10.1, 5.1, 9.9, 5.1))",
        tables,
    )
    hit, _ = run(
        "SELECT target_name FROM ivoa.obscore WHERE INTERSECTS(CIRCLE(s_ra, s_dec, 0.2), CIRCLE(10, 5.7, 0.1)) = 1",
        tables,
    )
    assert sorted(box["target_name"]) == ["a", "b'c", "e"]
    assert sorted(poly["target_name"]) == ["a", "b'c"]
    assert list(hit["target_name"]) == ["e"]


def test_upload_join_keeps_target_columns(tables):
    out, _ = run(
        "SELECT o.s_ra, t.target_index FROM ivoa.ObsCore AS o JOIN TAP_UPLOAD.targets AS t "
        "ON 1 = CONTAINS(POINT('ICRS', o.s_ra, o.s_dec), CIRCLE('ICRS', t.ra, t.dec, t.radius))",
        tables,
    )
    assert sorted(zip(out["s_ra"], out["target_index"])) == [(10.0, 7), (10.001, 7), (200.0, 8)]
    assert out["target_index"].dtype.kind == "i"


def test_maxrec_overflow_but_top_is_not(tables):
    out, overflow = run("SELECT s_ra FROM ivoa.obscore", tables, maxrec=2)
    assert len(out) == 2 and overflow
    out, overflow = run("SELECT TOP 2 s_ra FROM ivoa.obscore", tables, maxrec=2)
    assert len(out) == 2 and not overflow


def test_boolean_logic_like_in_between_null_and_quotes(tables):
    out, _ = run(
        "SELECT target_name FROM ivoa.obscore WHERE (t_min >= 2 AND t_min < 3) OR "
        "obs_collection LIKE 'UV%' OR t_min IS NULL",
        tables,
    )
    assert list(out["target_name"]) == ["b'c", "d", "e"]
    out, _ = run(
        "SELECT target_name FROM ivoa.obscore WHERE target_name IN ('a', 'b''c') AND NOT t_min BETWEEN 1.5 AND 9",
        tables,
    )
    assert list(out["target_name"]) == ["a"]
    # ADQL's LIKE is case-sensitive, ILIKE is not
    assert len(run("SELECT s_ra FROM ivoa.obscore WHERE obs_collection LIKE 'harps'", tables)[0]) == 0
    assert len(run("SELECT s_ra FROM ivoa.obscore WHERE obs_collection ILIKE 'harps'", tables)[0]) == 3


def test_grouping_distinct_functions_and_column_metadata(tables):
    out, _ = run(
        "SELECT obs_collection, COUNT(*) AS n FROM ivoa.obscore GROUP BY obs_collection ORDER BY n DESC", tables
    )
    assert list(out["obs_collection"]) == ["HARPS", "UVES"] and list(out["n"]) == [3, 1]
    out, _ = run("SELECT DISTINCT obs_collection FROM ivoa.obscore", tables)
    assert sorted(out["obs_collection"]) == ["HARPS", "UVES"]
    # ADQL's LOG is natural (SQLite's is base 10); TRUNCATE keeps its decimals
    out, _ = run(
        "SELECT TOP 1 LOG(100.0) AS ln, LOG10(100.0) AS lg, TRUNCATE(2.567, 2) AS tr, "
        "MOD(7, 3) AS m, s_ra FROM ivoa.obscore",
        tables,
    )
    assert out["ln"][0] == pytest.approx(math.log(100)) and out["lg"][0] == pytest.approx(2.0)
    assert out["tr"][0] == pytest.approx(2.56) and out["m"][0] == 1
    assert out["s_ra"].unit == "deg" and out["s_ra"].meta["ucd"] == "pos.eq.ra;meta.main"
    assert out["s_ra"].description == "right ascension"


def test_like_never_backtracks(tables):
    # what took 101 s with a regular expression: 6 (and 40) '%_' pairs on long values
    long = Table({"access_url": [f"http://127.0.0.1:8000/eso/file/{'x' * 2000}{i}" for i in range(200)]})
    t0 = time.monotonic()
    for pairs in (6, 40):
        out, _ = adql.run(f"SELECT access_url FROM t WHERE access_url LIKE '{'%_' * pairs}%!'", {"t": long})
        assert len(out) == 0
    assert time.monotonic() - t0 < 2.0


@pytest.mark.parametrize(
    "query, message",
    [
        ("SELECT x FROM ivoa.obscore", "unknown column 'x'"),
        ("SELECT s_ra FROM nowhere", "unknown table 'nowhere'"),
        ("SELECT s_ra FROM ivoa.obscore WHERE s_ra ~ 3", "Invalid expression|Unexpected token|Required keyword"),
        ("SELECT s_ra FROM ivoa.obscore WHERE s_ra = = 1", "Required keyword|Invalid expression"),
        ("DELETE FROM ivoa.obscore", "only SELECT"),
        ("SELECT 1; SELECT 2", "one SELECT statement"),
        ("SELECT randomblob(1000000000) FROM ivoa.obscore", "unknown function RANDOMBLOB"),
        ("SELECT s_ra FROM ivoa.obscore WHERE CONTAINS(BOX(1, 2, 3, 4), POINT(1, 2)) = 1", "CONTAINS.BOX, POSITION"),
        ("SELECT s_ra FROM ivoa.obscore WHERE " + "(" * 2000 + "s_ra = 1" + ")" * 2000, "nested more than 100"),
        (
            "SELECT s_ra FROM ivoa.obscore WHERE " + " OR ".join(f"s_ra = {i}" for i in range(100_000)),
            "characters long",
        ),
    ],
)
def test_refused_with_the_offending_name(tables, query, message):
    with pytest.raises(adql.AdqlError, match=message):
        run(query, tables)


def test_slow_queries_are_stopped(tables, monkeypatch):
    monkeypatch.setattr(adql, "QUERY_SECONDS", 0.2)
    big = {"t": Table({"x": np.arange(2000)})}
    t0 = time.monotonic()
    with pytest.raises(adql.AdqlError, match="longer than 0.2 s"):
        run("SELECT COUNT(*) FROM t AS a, t AS b, t AS c WHERE a.x + b.x = c.x", big)
    assert time.monotonic() - t0 < 2.0
