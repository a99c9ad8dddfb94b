"""ADQL for the local archive: parsed by sqlglot, run by SQLite, on astropy Tables.

``run(query, tables, maxrec=None) -> (Table, overflow)`` is the whole contract:
``tables`` maps lower-case names (``"ivoa.obscore"``, ``"tap_upload.targets"``,
``"specobj"``) to Tables; a bad query raises :class:`AdqlError` with a message
meant for the user, which the TAP endpoint returns as an ``ERROR`` VOTable and
the SkyServer endpoint as an error text.

Why these parts: sqlglot is a maintained, pure-Python SQL parser with an
SQLite generator (ADQL's ``TOP`` becomes ``LIMIT``); the ADQL-specific parser on
PyPI (queryparser-python3) translates to PostgreSQL+pg_sphere or MySQL only,
which no embedded engine runs.  SQLite (Python's ``sqlite3``) executes: joins,
``GROUP BY``, ``DISTINCT``, sub-queries, ``ORDER BY``, ``OFFSET``, ``ILIKE``,
``CAST``, ``CASE``, ``COALESCE``, ADQL's math functions and its geometry
(:mod:`.geometry`: ``POINT``, ``CIRCLE``, ``BOX``, ``POLYGON``, ``CONTAINS``,
``INTERSECTS``, ``DISTANCE``, ``COORD1``, ``COORD2``, ``COORDSYS``; degrees).
The cone search ``CONTAINS(POINT(...), CIRCLE(...))`` and ``DISTANCE(POINT,
POINT)`` are rewritten into SQL arithmetic, so they run inside SQLite.

Limits, each refused with a message before any work: a query longer than
:data:`MAX_QUERY_CHARS`, parentheses nested deeper than :data:`MAX_NESTING`,
functions outside ADQL, statements other than ``SELECT``; a query still running
after :data:`QUERY_SECONDS` is stopped.  ``LIKE`` is SQLite's, which is
case-sensitive here (as ADQL's) and matches any pattern without backtracking
blow-up.
"""

from __future__ import annotations

import re
import sqlite3
import time

import sqlglot
from astropy.table import Table
from sqlglot import exp
from sqlglot.dialects.sqlite import SQLite
from sqlglot.tokens import TokenType

from latentsky.archives.local import sqlengine
from latentsky.archives.local.geometry import haversine_sql

MAX_QUERY_CHARS = 100_000
"""Longest query accepted, in characters (long lists of targets belong in an UPLOAD table)."""

MAX_NESTING = 100
"""Deepest nesting of parentheses accepted."""

QUERY_SECONDS = 30.0
"""A query still running after this many seconds is stopped with an error."""


class AdqlError(ValueError):
    """The query is not ADQL this service runs, refers to unknown names, or exceeds a limit."""


GEOMETRY_FUNCTIONS = (
    "POINT",
    "CIRCLE",
    "BOX",
    "POLYGON",
    "CONTAINS",
    "INTERSECTS",
    "DISTANCE",
    "COORD1",
    "COORD2",
    "COORDSYS",
)
"""ADQL's geometry functions the engine executes (declared in the TAP capabilities)."""

ADQL_FUNCTIONS = frozenset(
    {
        "COUNT",
        "SUM",
        "AVG",
        "MIN",
        "MAX",
        "LOWER",
        "UPPER",
        "COALESCE",
        "ABS",
        "CEILING",
        "FLOOR",
        "DEGREES",
        "RADIANS",
        "EXP",
        "LOG",
        "LOG10",
        "MOD",
        "PI",
        "POWER",
        "SQRT",
        "RAND",
        "ROUND",
        "TRUNCATE",
        "SIN",
        "COS",
        "TAN",
        "ASIN",
        "ACOS",
        "ATAN",
        "ATAN2",
        "COT",
    }
) | frozenset(GEOMETRY_FUNCTIONS)
"""The functions a query may call (ADQL 2.1's, less AREA, CENTROID and REGION)."""

_TYPED = {"COUNT", "SUM", "AVG", "MIN", "MAX", "LOWER", "UPPER", "COALESCE"}
"""Functions sqlglot parses into its own nodes; every other name is kept verbatim for SQLite's ADQL functions."""


_SYNTAX = (exp.And, exp.Or, exp.Case, exp.If, exp.Cast, exp.Exists)
"""sqlglot's function nodes for ADQL syntax rather than function calls."""


class _ADQL(SQLite):
    """SQLite's SQL as sqlglot reads it, plus ADQL's ``TOP``; ADQL's functions kept as written."""

    class Tokenizer(SQLite.Tokenizer):
        KEYWORDS = {**SQLite.Tokenizer.KEYWORDS, "TOP": TokenType.TOP}

    class Parser(SQLite.Parser):
        FUNCTIONS = {k: v for k, v in SQLite.Parser.FUNCTIONS.items() if k in _TYPED}


def _check_shape(text: str) -> None:
    if len(text) > MAX_QUERY_CHARS:
        raise AdqlError(
            f"the query is {len(text)} characters long; this service accepts at most "
            f"{MAX_QUERY_CHARS} (upload long lists of values as a table)"
        )
    depth = deepest = 0
    quote = None
    for ch in text:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_NESTING:
                raise AdqlError(f"parentheses are nested more than {MAX_NESTING} deep")
        elif ch == ")":
            depth -= 1


def parse(text: str) -> exp.Expression:
    """The syntax tree of one ADQL ``SELECT`` statement; AdqlError when it is not one."""
    _check_shape(text)
    try:
        statements = sqlglot.parse(text, read=_ADQL)
    except sqlglot.errors.SqlglotError as err:
        raise AdqlError(_plain(str(err))) from None
    except RecursionError:
        raise AdqlError("the query is nested too deeply") from None
    statements = [s for s in statements if s is not None]
    if len(statements) != 1:
        raise AdqlError(f"one SELECT statement is expected, found {len(statements)} statements")
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        raise AdqlError(f"only SELECT queries are run, not {tree.key.upper()}")
    for node in tree.find_all(exp.Func):
        if isinstance(node, _SYNTAX):
            continue
        name = node.name.upper() if isinstance(node, exp.Anonymous) else node.sql_name().upper()
        if name not in ADQL_FUNCTIONS:
            raise AdqlError(f"unknown function {name}; ADQL functions here: {', '.join(sorted(ADQL_FUNCTIONS))}")
    return tree


def _plain(message: str) -> str:
    """A sqlglot message without its terminal colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", message).strip()


def tables_used(tree: exp.Expression) -> list[str]:
    """Lower-case ``schema.name`` of every table the query reads (not its WITH names)."""
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    out = []
    for table in tree.find_all(exp.Table):
        name = ".".join(p for p in (table.db, table.name) if p).lower()
        if name not in ctes and name not in out:
            out.append(name)
    return out


# ---------------------------------------------------------------------------- geometry rewrite
def _args(call: exp.Expression, name: str, n: int) -> list[exp.Expression] | None:
    """Arguments of ``NAME([frame,] a1..an)`` when ``call`` is such a call, without the frame."""
    if not isinstance(call, exp.Anonymous) or call.name.upper() != name:
        return None
    args = list(call.expressions)
    if len(args) == n + 1 and isinstance(args[0], (exp.Literal, exp.Null)) and not args[0].is_number:
        args = args[1:]
    return args if len(args) == n else None


def _rewrite_geometry(node: exp.Expression) -> exp.Expression:
    """``CONTAINS(POINT, CIRCLE)``, ``DISTANCE(POINT, POINT)`` and ``COORDn(POINT)`` as plain SQL arithmetic."""
    if not isinstance(node, exp.Anonymous):
        return node
    name = node.name.upper()
    args = list(node.expressions)
    if name == "CONTAINS" and len(args) == 2:
        p, c = _args(args[0], "POINT", 2), _args(args[1], "CIRCLE", 3)
        if p and c:
            sql = haversine_sql(*(a.sql("sqlite") for a in (*p, *c[:2])))
            return sqlglot.parse_one(f"CASE WHEN {sql} <= ({c[2].sql('sqlite')}) THEN 1 ELSE 0 END", read="sqlite")
    if name == "DISTANCE" and len(args) == 2:
        a, b = _args(args[0], "POINT", 2), _args(args[1], "POINT", 2)
        if a and b:
            return sqlglot.parse_one(haversine_sql(*(x.sql("sqlite") for x in (*a, *b))), read="sqlite")
    if name in ("COORD1", "COORD2") and len(args) == 1:
        p = _args(args[0], "POINT", 2)
        if p:
            return p[int(name[-1]) - 1].copy()
    return node


# ---------------------------------------------------------------------------- output columns
def _sources(select: exp.Select, tables: dict[str, Table]) -> dict[str, tuple[str, Table]]:
    """Alias (lower case) -> (table name, Table) of the known tables in the FROM and JOIN clauses."""
    out = {}
    froms = [select.args.get("from_") or select.args.get("from")] + list(select.args.get("joins") or [])
    for item in froms:
        if item is None:
            continue
        table = item.this if isinstance(item, (exp.From, exp.Join)) else item
        if not isinstance(table, exp.Table):
            return {}  # a sub-query: its columns are not known here
        name = ".".join(p for p in (table.db, table.name) if p).lower()
        if name not in tables:
            return {}
        out[(table.alias_or_name or name).lower()] = (name, tables[name])
    return out


def _expand_stars(select: exp.Select, sources: dict) -> None:
    """``*`` and ``alias.*`` -> the columns themselves, so that each output column has a known source."""
    items = []
    for item in select.expressions:
        if isinstance(item, exp.Star) or (isinstance(item, exp.Column) and isinstance(item.this, exp.Star)):
            wanted = [item.table.lower()] if isinstance(item, exp.Column) and item.table else list(sources)
            for alias in wanted:
                if alias not in sources:
                    raise AdqlError(f"unknown table alias {alias!r} in {item.sql()}")
                for col in sources[alias][1].colnames:
                    items.append(exp.column(col, table=alias, quoted=True))
        else:
            items.append(item)
    select.set("expressions", items)


def _output_sources(select: exp.Select, sources: dict) -> list:
    """For each output column of ``select``, the Column it copies unchanged, or None."""
    out = []
    for item in select.expressions:
        target = item.this if isinstance(item, exp.Alias) else item
        column = None
        if isinstance(target, exp.Column) and not isinstance(target.this, exp.Star):
            wanted = target.name.lower()
            aliases = [target.table.lower()] if target.table else list(sources)
            hits = [
                sources[a][1][c] for a in aliases if a in sources for c in sources[a][1].colnames if c.lower() == wanted
            ]
            column = hits[0] if len(hits) == 1 else None
        out.append(column)
    return out


def _friendly(err: sqlite3.Error, conn, deadline: float) -> str:
    message = str(err)
    if conn.error:
        return conn.error
    if message == "interrupted" and time.monotonic() >= deadline:
        return f"the query ran longer than {QUERY_SECONDS:g} s, this service's limit"
    m = re.match(r"no such column: (.+)", message)
    if m:
        return f"unknown column {m.group(1)!r}"
    m = re.match(r"ambiguous column name: (.+)", message)
    if m:
        return f"ambiguous column {m.group(1)!r}: prefix it with a table alias"
    return message


def run(query: str, tables: dict[str, Table], *, maxrec: int | None = None) -> tuple[Table, bool]:
    """Run an ADQL query on named tables.

    Parameters
    ----------
    query : str
        One ADQL ``SELECT`` statement.
    tables : dict
        ``{table name (lower case): Table}``; uploads are named ``tap_upload.<name>``.
    maxrec : int, optional
        Most rows returned; more rows than this set the overflow flag.

    Returns
    -------
    table : Table
        The result; columns copied from a table keep its unit, description and
        ``meta`` (``ucd``, ``utype``, ``xtype``).
    overflow : bool
        True when rows were cut by ``maxrec`` (TAP ``QUERY_STATUS=OVERFLOW``);
        a ``TOP n`` the query asked for is not an overflow.
    """
    tree = parse(query)
    tables = {k.lower(): v for k, v in tables.items()}
    used = tables_used(tree)
    unknown = [name for name in used if name not in tables]
    if unknown:
        raise AdqlError(f"unknown table {unknown[0]!r}; this service has {sorted(tables)}")
    sources, outputs = {}, None
    if isinstance(tree, exp.Select):
        sources = _sources(tree, tables)
        if sources:
            _expand_stars(tree, sources)
        outputs = _output_sources(tree, sources)
    tree = tree.transform(_rewrite_geometry)
    try:
        sql = tree.sql(dialect="sqlite", unsupported_level=sqlglot.ErrorLevel.RAISE)
    except sqlglot.errors.SqlglotError as err:
        raise AdqlError(_plain(str(err))) from None
    deadline = time.monotonic() + QUERY_SECONDS
    conn = sqlengine.connect({name: tables[name] for name in used}, deadline=deadline)
    try:
        cursor = conn.execute(sql)
        names = [d[0] for d in cursor.description]
        rows = cursor.fetchall() if maxrec is None else cursor.fetchmany(int(maxrec) + 1)
    except sqlite3.Error as err:
        raise AdqlError(_friendly(err, conn, deadline)) from None
    finally:
        conn.close()
    overflow = maxrec is not None and len(rows) > maxrec
    if overflow:
        rows = rows[:maxrec]
    if outputs is None or len(outputs) != len(names):
        outputs = [None] * len(names)
    return sqlengine.fetch_table(rows, names, outputs), overflow
