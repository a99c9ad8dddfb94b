"""SQLite as the local archive's query engine: astropy Tables in, astropy Tables out.

:func:`connect` loads named tables into an in-memory SQLite database (a name
``"ivoa.obscore"`` becomes table ``obscore`` of an attached schema ``ivoa``),
registers ADQL's functions (math with ADQL's meaning, e.g. ``LOG`` is the
natural logarithm, and the sky geometry of :mod:`.geometry`) and makes ``LIKE``
case-sensitive, as ADQL's is.  SQLite's ``LIKE`` matches without backtracking
blow-up.  :func:`fetch_table` turns a cursor's rows into a Table whose columns
keep the type, unit, UCD and description of the columns they come from.
"""

from __future__ import annotations

import math
import random
import sqlite3
import time
import weakref

import numpy as np
from astropy.table import Column, MaskedColumn, Table

from latentsky.archives.local import geometry


def _safe(fn):
    """An SQL function returning NULL where the math is undefined (log of a negative...)."""

    def call(*args):
        if any(a is None for a in args):
            return None
        try:
            value = fn(*args)
        except (ValueError, OverflowError, ZeroDivisionError, TypeError):
            return None
        return None if isinstance(value, float) and not math.isfinite(value) else value

    return call


def _truncate(x, n=0):
    factor = 10.0 ** int(n)
    return math.trunc(x * factor) / factor


def _mod(x, y):
    return x % y if isinstance(x, int) and isinstance(y, int) and x >= 0 and y > 0 else math.fmod(x, y)


_ADQL_MEANING = {
    # always ours: SQLite's LOG is base 10 (ADQL's is natural), and SQLite has none of the others
    "LOG": (math.log, 1),
    "TRUNCATE": (_truncate, -1),
    "COT": (lambda x: 1.0 / math.tan(x), 1),
    "RAND": (lambda *seed: random.Random(*seed[:1]).random(), -1),
}
_FALLBACK = {
    # SQLite's own (C, no Python call per row) when it was built with its math functions; ours otherwise
    "LOG10": (math.log10, 1),
    "MOD": (_mod, 2),
    "CEILING": (lambda x: float(math.ceil(x)), 1),
    "FLOOR": (lambda x: float(math.floor(x)), 1),
    "DEGREES": (math.degrees, 1),
    "RADIANS": (math.radians, 1),
    "EXP": (math.exp, 1),
    "SQRT": (math.sqrt, 1),
    "POWER": (math.pow, 2),
    "PI": (lambda: math.pi, 0),
    "ATAN2": (math.atan2, 2),
    **{name.upper(): (getattr(math, name), 1) for name in ("sin", "cos", "tan", "asin", "acos", "atan")},
}


class Connection(sqlite3.Connection):
    """A connection that remembers the message of the last :class:`~.geometry.GeometryError` of its functions
    (SQLite reports only that a function failed)."""

    error: str | None = None

    def keep_error(self, fn):
        def call(*args):
            try:
                return fn(*args)
            except geometry.GeometryError as err:
                self.error = str(err)
                raise

        return call


def connect(tables: dict[str, Table], *, deadline: float | None = None) -> sqlite3.Connection:
    """An in-memory SQLite database holding ``tables`` ({"schema.name" or "name": Table}).

    ``deadline`` (``time.monotonic()`` seconds) interrupts statements still running then.
    """
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False, factory=Connection)
    conn.execute("PRAGMA case_sensitive_like = ON")
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 50_000_000)  # no string or blob beyond 50 MB
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 10)
    for name, (fn, nargs) in {**{k: _FALLBACK[k] for k in _missing(conn)}, **_ADQL_MEANING}.items():
        conn.create_function(name, nargs, _safe(fn) if nargs else fn, deterministic=name != "RAND")
    for name, (fn, nargs) in geometry.FUNCTIONS.items():
        conn.create_function(name, nargs, conn.keep_error(fn), deterministic=True)
    schemas = set()
    for key, table in tables.items():
        schema, _, name = key.lower().rpartition(".")
        if schema and schema not in schemas:
            conn.execute(f"ATTACH DATABASE ':memory:' AS {quote(schema)}")
            schemas.add(schema)
        _load(conn, f"{quote(schema)}.{quote(name)}" if schema else quote(name), table)
    if deadline is not None:
        # checked every million SQLite instructions (a few ms): rarely enough that the Python call,
        # which takes the GIL, never slows the server's event loop
        conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 1_000_000)
    return conn


_MISSING: set[str] | None = None


def _missing(conn: sqlite3.Connection) -> set[str]:
    """Math functions this build of SQLite lacks (probed once per process)."""
    global _MISSING
    if _MISSING is None:
        missing = set()
        for name, (_, nargs) in _FALLBACK.items():
            try:
                conn.execute(f"SELECT {name}({', '.join(['0.5'] * max(nargs, 0))})")
            except sqlite3.OperationalError:
                missing.add(name)
        _MISSING = missing
    return _MISSING


def quote(identifier: str) -> str:
    """An SQL delimited identifier."""
    return '"' + identifier.replace('"', '""') + '"'


def _sql_type(col) -> str:
    kind = col.dtype.kind
    return {"f": "REAL", "i": "INTEGER", "u": "INTEGER", "b": "INTEGER"}.get(kind, "TEXT")


def _values(col) -> list:
    """A column as Python values for SQLite: masked -> NULL (NaN becomes NULL in SQLite too), bytes -> text."""
    mask = np.ma.getmaskarray(col)
    raw = np.asarray(col.data if hasattr(col, "mask") else col)
    if col.ndim > 1:  # arrays in a cell: as text
        mask = mask.reshape(len(raw), -1).all(axis=1)
        items = [" ".join(map(str, np.ravel(v))) for v in raw]
    elif raw.dtype.kind in "SO":
        items = [
            v.decode("utf-8", "replace") if isinstance(v, bytes) else (None if v is None else str(v))
            for v in raw.tolist()
        ]
    else:
        items = raw.tolist()
    return [None if m else v for v, m in zip(items, mask)]


_ROWS: dict[int, tuple] = {}
"""id(table) -> (weak reference, shape, column definitions, rows) of the tables served again and again
(ObsCore, TAP_SCHEMA), while they live: a table given to a query is read as unchanging."""


def _rows(table: Table) -> tuple[str, list]:
    key = (tuple(table.colnames), len(table))
    cached = _ROWS.get(id(table))
    if cached is None or cached[0]() is not table or cached[1] != key:
        names = table.colnames
        columns = ", ".join(f"{quote(n)} {_sql_type(table[n])}" for n in names)
        rows = list(zip(*(_values(table[n]) for n in names))) if len(table) and names else []
        ident = id(table)
        cached = _ROWS[ident] = (weakref.ref(table, lambda _, ident=ident: _ROWS.pop(ident, None)), key, columns, rows)
    return cached[2], cached[3]


def _load(conn: sqlite3.Connection, target: str, table: Table) -> None:
    columns, rows = _rows(table)
    conn.execute(f"CREATE TABLE {target} ({columns})")
    if rows:
        conn.executemany(f"INSERT INTO {target} VALUES ({', '.join('?' * len(rows[0]))})", rows)


def fetch_table(rows: list[tuple], names: list[str], sources: list) -> Table:
    """The rows of a query as a Table; ``sources[i]`` is the column output ``i`` copies, or None."""
    out = Table()
    for i, name in enumerate(_unique(names)):
        values = [row[i] for row in rows]
        out[name] = _column(values, sources[i])
    return out


def _unique(names: list[str]) -> list[str]:
    seen, out = set(), []
    for name in names:
        candidate, k = name, 2
        while candidate.lower() in seen:
            candidate, k = f"{name}_{k}", k + 1
        seen.add(candidate.lower())
        out.append(candidate)
    return out


def _column(values: list, source) -> Column:
    """A result column: the type (and description) of the column it copies, else one fitting the values."""
    missing = np.array([v is None for v in values], dtype=bool)
    if source is not None and source.ndim == 1:
        kind, dtype = source.dtype.kind, source.dtype
    else:
        kind = _infer(values)
        dtype = {"f": np.float64, "i": np.int64}.get(kind)
    if kind == "f":
        col = Column(np.array([np.nan if v is None else float(v) for v in values], dtype=dtype))
    elif kind in "iub":
        data = np.array([0 if v is None else v for v in values], dtype=dtype)
        col = MaskedColumn(data, mask=missing) if missing.any() else Column(data)
    else:
        data = (
            np.array(["" if v is None else str(v) for v in values], dtype=str) if values else np.array([], dtype="U1")
        )
        col = MaskedColumn(data, mask=missing) if missing.any() else Column(data)
    if source is not None:
        col.unit, col.description = source.unit, source.description
        col.meta.update(
            {k: v for k, v in source.meta.items() if k in ("ucd", "utype", "xtype", "datatype", "arraysize")}
        )
    return col


def _infer(values: list) -> str:
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return "f" if values else "U"
    if kinds <= {int, bool}:
        return "i"
    if kinds <= {int, float, bool}:
        return "f"
    return "U"
