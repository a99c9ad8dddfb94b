"""A small ADQL interpreter: the subset our clients (and pyvo) send, run on astropy Tables.

Supported::

    SELECT [TOP n] * | col [AS name], alias.*, ...
    FROM table [AS] alias [[INNER] JOIN TAP_UPLOAD.t [AS] alias ON <condition>]
    [WHERE <condition>] [ORDER BY col [ASC|DESC], ...]

Conditions combine ``AND``/``OR``/``NOT`` and parentheses over comparisons
(``= != <> < <= > >=``), ``[NOT] LIKE``, ``[NOT] BETWEEN``, ``[NOT] IN (...)``,
``IS [NOT] NULL`` and ``CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', ra, dec, r)) = 1``
(degrees; the test is a great-circle distance).  Anything else raises
:class:`AdqlError` with the offending token, which the TAP endpoint returns
as an ``ERROR`` VOTable, the way a real service refuses a query.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
from astropy.table import Table


class AdqlError(ValueError):
    """The query is outside the supported ADQL subset or refers to unknown names."""


_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*|\.\*)*)
  | (?P<op><>|!=|<=|>=|[=<>(),*+\-/])
""", re.VERBOSE)

_KEYWORDS = {"SELECT", "TOP", "FROM", "WHERE", "AND", "OR", "NOT", "AS", "JOIN", "INNER", "ON", "ORDER", "BY",
             "ASC", "DESC", "LIKE", "BETWEEN", "IN", "IS", "NULL", "DISTINCT"}


def tokenize(text: str) -> list[tuple[str, str]]:
    """Split ADQL into ``(kind, text)`` tokens; keywords get kind ``"kw"`` and upper case."""
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise AdqlError(f"unexpected character {text[pos]!r} at position {pos}")
        pos = m.end()
        kind = m.lastgroup
        if kind == "ws":
            continue
        value = m.group()
        if kind == "name" and value.upper() in _KEYWORDS:
            kind, value = "kw", value.upper()
        tokens.append((kind, value))
    return tokens


# ---------------------------------------------------------------------------- syntax tree

@dataclasses.dataclass
class Query:
    """A parsed SELECT statement."""
    top: int | None
    columns: list  # ("*", None) | ("alias.*", alias) | (expr, output name)
    table: str
    alias: str
    join_table: str | None
    join_alias: str | None
    join_on: object
    where: object
    order: list  # (expr, descending)


class _Parser:
    def __init__(self, text: str):
        self.tokens = tokenize(text)
        self.i = 0

    def peek(self, offset: int = 0):
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else ("eof", "")

    def take(self):
        tok = self.peek()
        self.i += 1
        return tok

    def accept(self, kind, value=None):
        tok = self.peek()
        if tok[0] == kind and (value is None or tok[1] == value):
            self.i += 1
            return tok
        return None

    def expect(self, kind, value=None):
        tok = self.accept(kind, value)
        if tok is None:
            got = self.peek()[1] or "end of query"
            raise AdqlError(f"expected {value or kind} but found {got!r}")
        return tok

    # -- statement
    def query(self) -> Query:
        self.expect("kw", "SELECT")
        if self.accept("kw", "DISTINCT"):
            raise AdqlError("SELECT DISTINCT is not supported by the local archive")
        top = None
        if self.accept("kw", "TOP"):
            top = int(self.expect("number")[1])
        columns = [self.select_item()]
        while self.accept("op", ","):
            columns.append(self.select_item())
        self.expect("kw", "FROM")
        table, alias = self.table_ref()
        join_table = join_alias = join_on = None
        self.accept("kw", "INNER")
        if self.accept("kw", "JOIN"):
            join_table, join_alias = self.table_ref()
            self.expect("kw", "ON")
            join_on = self.condition()
        where = self.condition() if self.accept("kw", "WHERE") else None
        order = []
        if self.accept("kw", "ORDER"):
            self.expect("kw", "BY")
            while True:
                expr = self.operand()
                desc = bool(self.accept("kw", "DESC"))
                if not desc:
                    self.accept("kw", "ASC")
                order.append((expr, desc))
                if not self.accept("op", ","):
                    break
        if self.peek()[0] != "eof":
            raise AdqlError(f"unsupported ADQL after the query: {self.peek()[1]!r}")
        return Query(top, columns, table, alias, join_table, join_alias, join_on, where, order)

    def select_item(self):
        if self.accept("op", "*"):
            return ("*", None)
        tok = self.peek()
        if tok[0] == "name" and tok[1].endswith(".*"):
            self.take()
            return ("alias.*", tok[1][:-2].lower())
        expr = self.operand()
        name = None
        if self.accept("kw", "AS"):
            name = self.expect("name")[1]
        elif expr[0] == "col":
            name = expr[1].split(".")[-1]
        else:
            raise AdqlError("computed select items need an AS name")
        return (expr, name)

    def table_ref(self):
        name = self.expect("name")[1]
        alias = name.split(".")[-1]
        if self.accept("kw", "AS"):
            alias = self.expect("name")[1]
        elif self.peek()[0] == "name":
            alias = self.take()[1]
        return name, alias.lower()

    # -- conditions
    def condition(self):
        left = self.conjunction()
        while self.accept("kw", "OR"):
            left = ("or", left, self.conjunction())
        return left

    def conjunction(self):
        left = self.negation()
        while self.accept("kw", "AND"):
            left = ("and", left, self.negation())
        return left

    def negation(self):
        if self.accept("kw", "NOT"):
            return ("not", self.negation())
        return self.predicate()

    def predicate(self):
        # a parenthesis opens either a sub-condition or an arithmetic operand: try the condition
        if self.peek() == ("op", "("):
            save = self.i
            self.take()
            try:
                inner = self.condition()
                self.expect("op", ")")
                follow = self.peek()
                operand_follows = (follow[0] == "op" and follow[1] not in {")", ","}) or \
                    (follow[0] == "kw" and follow[1] in {"LIKE", "BETWEEN", "IN", "IS", "NOT"})
                if not operand_follows:
                    return inner
            except AdqlError:
                pass
            self.i = save
        left = self.operand()
        negate = bool(self.accept("kw", "NOT"))
        if self.accept("kw", "LIKE"):
            pattern = self.expect("string")[1]
            pred = ("like", left, _unquote(pattern))
        elif self.accept("kw", "BETWEEN"):
            low = self.operand()
            self.expect("kw", "AND")
            pred = ("between", left, low, self.operand())
        elif self.accept("kw", "IN"):
            self.expect("op", "(")
            values = [self.operand()]
            while self.accept("op", ","):
                values.append(self.operand())
            self.expect("op", ")")
            pred = ("in", left, values)
        elif self.accept("kw", "IS"):
            negate = bool(self.accept("kw", "NOT"))
            self.expect("kw", "NULL")
            pred = ("isnull", left)
        else:
            if negate:
                raise AdqlError("NOT must be followed by LIKE, BETWEEN or IN here")
            tok = self.take()
            if tok[0] != "op" or tok[1] not in {"=", "!=", "<>", "<", "<=", ">", ">="}:
                raise AdqlError(f"expected a comparison operator, found {tok[1] or 'end of query'!r}")
            pred = ("cmp", tok[1], left, self.operand())
        return ("not", pred) if negate else pred

    # -- operands (with + - * /)
    def operand(self):
        left = self.term()
        while self.peek() in {("op", "+"), ("op", "-")}:
            op = self.take()[1]
            left = ("arith", op, left, self.term())
        return left

    def term(self):
        left = self.factor()
        while self.peek() in {("op", "*"), ("op", "/")}:
            op = self.take()[1]
            left = ("arith", op, left, self.factor())
        return left

    def factor(self):
        kind, value = self.take()
        if kind == "number":
            return ("num", float(value))
        if kind == "string":
            return ("str", _unquote(value))
        if kind == "op" and value == "-":
            return ("arith", "-", ("num", 0.0), self.factor())
        if kind == "op" and value == "(":
            inner = self.operand()
            self.expect("op", ")")
            return inner
        if kind == "name":
            if self.accept("op", "("):
                args = []
                if not self.accept("op", ")"):
                    args.append(self.operand())
                    while self.accept("op", ","):
                        args.append(self.operand())
                    self.expect("op", ")")
                return ("func", value.upper(), args)
            return ("col", value)
        raise AdqlError(f"unexpected {value or 'end of query'!r} where a value was expected")


def _unquote(text: str) -> str:
    return text[1:-1].replace("''", "'")


def parse(text: str) -> Query:
    """Parse one ADQL SELECT statement (see the module docstring for the subset)."""
    return _Parser(text).query()


# ---------------------------------------------------------------------------- evaluation

class _Scope:
    """Column arrays of the tables in a query, for one set of rows."""

    def __init__(self, tables: dict[str, Table], rows: dict[str, np.ndarray]):
        self.tables, self.rows = tables, rows

    @property
    def n(self) -> int:
        return len(next(iter(self.rows.values())))

    def column(self, ref: str):
        parts = ref.lower().split(".")
        name = parts[-1]
        aliases = [parts[-2]] if len(parts) > 1 else list(self.tables)
        hits = []
        for alias in aliases:
            table = self.tables.get(alias)
            if table is None:
                raise AdqlError(f"unknown table alias {parts[-2]!r} in {ref!r}")
            for col in table.colnames:
                if col.lower() == name:
                    hits.append((alias, col))
        if not hits:
            raise AdqlError(f"unknown column {ref!r}")
        if len(hits) > 1:
            raise AdqlError(f"ambiguous column {ref!r}: prefix it with a table alias")
        alias, col = hits[0]
        data = self.tables[alias][col]
        values = np.asarray(data.filled(np.nan) if data.dtype.kind == "f" and hasattr(data, "filled")
                            else data)[self.rows[alias]]
        if values.dtype.kind in "SU":
            values = values.astype(str)
        return values


def evaluate(expr, scope: _Scope):
    """Value of an expression or condition for every row of ``scope`` (numpy arrays)."""
    kind = expr[0]
    if kind == "num":
        return np.full(scope.n, expr[1])
    if kind == "str":
        return np.full(scope.n, expr[1], dtype=object)
    if kind == "col":
        return scope.column(expr[1])
    if kind == "arith":
        a, b = evaluate(expr[2], scope).astype(float), evaluate(expr[3], scope).astype(float)
        return {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide}[expr[1]](a, b)
    if kind == "and":
        return evaluate(expr[1], scope) & evaluate(expr[2], scope)
    if kind == "or":
        return evaluate(expr[1], scope) | evaluate(expr[2], scope)
    if kind == "not":
        return ~evaluate(expr[1], scope)
    if kind == "cmp":
        op, left, right = expr[1], expr[2], expr[3]
        a, b = (_contains(side, scope).astype(float) if side[0] == "func" and side[1] == "CONTAINS"
                else evaluate(side, scope) for side in (left, right))
        return _compare(op, a, b)
    if kind == "like":
        regex = re.compile("^" + re.escape(expr[2]).replace("%", ".*").replace("_", ".") + "$", re.DOTALL)
        values = evaluate(expr[1], scope)
        return np.array([bool(regex.match(str(v))) for v in values], dtype=bool)
    if kind == "between":
        v = evaluate(expr[1], scope)
        return (v >= evaluate(expr[2], scope)) & (v <= evaluate(expr[3], scope))
    if kind == "in":
        v = evaluate(expr[1], scope)
        out = np.zeros(scope.n, dtype=bool)
        for option in expr[2]:
            out |= _compare("=", v, evaluate(option, scope))
        return out
    if kind == "isnull":
        v = evaluate(expr[1], scope)
        if v.dtype.kind == "f":
            return np.isnan(v)
        return np.array([x is None or x == "" for x in v], dtype=bool)
    if kind == "func":
        raise AdqlError(f"function {expr[1]} is only supported as CONTAINS(POINT(...), CIRCLE(...)) = 1")
    raise AdqlError(f"unsupported expression {kind!r}")


def _compare(op, a, b):
    if a.dtype.kind in "OUS" or b.dtype.kind in "OUS":
        a, b = a.astype(str), b.astype(str)
    with np.errstate(invalid="ignore"):
        if op == "=":
            return a == b
        if op in ("!=", "<>"):
            return a != b
        return {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal}[op](a, b)


def _contains(expr, scope):
    args = expr[2]
    if len(args) != 2 or args[0][0] != "func" or args[0][1] != "POINT" or args[1][0] != "func" \
            or args[1][1] != "CIRCLE":
        raise AdqlError("CONTAINS needs POINT(...) and CIRCLE(...) arguments")
    point, circle = args[0][2], args[1][2]
    if len(point) == 3:  # the coordinate-system argument is optional in ADQL 2.1
        point = point[1:]
    if len(circle) == 4:
        circle = circle[1:]
    if len(point) != 2 or len(circle) != 3:
        raise AdqlError("POINT needs (ra, dec) and CIRCLE needs (ra, dec, radius), in degrees")
    ra1, dec1 = (np.radians(evaluate(a, scope).astype(float)) for a in point)
    ra2, dec2, r = (evaluate(a, scope).astype(float) for a in circle)
    ra2, dec2 = np.radians(ra2), np.radians(dec2)
    # haversine: accurate for the small radii of cone searches
    hav = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    sep = np.degrees(2 * np.arcsin(np.sqrt(np.clip(hav, 0, 1))))
    with np.errstate(invalid="ignore"):
        return sep <= r


MAX_JOIN_PAIRS = 20_000_000


def run(query: Query | str, tables: dict[str, Table], *, maxrec: int | None = None) -> tuple[Table, bool]:
    """Run a query on named tables.

    Parameters
    ----------
    query : Query or str
        The statement.
    tables : dict
        ``{table name (lower case): Table}``; uploads are named ``tap_upload.<name>``.
    maxrec : int, optional
        Most rows returned; more rows than this set the overflow flag.

    Returns
    -------
    table : Table
        The result.
    overflow : bool
        True when rows were cut by ``maxrec`` (TAP ``QUERY_STATUS=OVERFLOW``);
        a ``TOP n`` the query asked for is not an overflow.
    """
    q = parse(query) if isinstance(query, str) else query
    main = _lookup(tables, q.table)
    scope_tables = {q.alias: main}
    if q.join_table is None:
        rows = {q.alias: np.arange(len(main))}
    else:
        other = _lookup(tables, q.join_table)
        if len(main) * len(other) > MAX_JOIN_PAIRS:
            raise AdqlError(f"join of {len(main)} x {len(other)} rows is too large for the local archive")
        scope_tables[q.join_alias] = other
        a, b = np.meshgrid(np.arange(len(main)), np.arange(len(other)), indexing="ij")
        rows = {q.alias: a.ravel(), q.join_alias: b.ravel()}
    scope = _Scope(scope_tables, rows)
    if q.join_on is not None and scope.n:
        keep = np.asarray(evaluate(q.join_on, scope), dtype=bool)
        scope = _Scope(scope_tables, {k: v[keep] for k, v in rows.items()})
    if q.where is not None and scope.n:
        keep = np.asarray(evaluate(q.where, scope), dtype=bool)
        scope = _Scope(scope_tables, {k: v[keep] for k, v in scope.rows.items()})
    if q.order and scope.n:
        keys = []
        for expr, desc in reversed(q.order):
            values = evaluate(expr, scope)
            if desc:
                values = -values.astype(float) if values.dtype.kind in "fiu" else _reverse_rank(values)
            keys.append(values)
        order = np.lexsort(keys)
        scope = _Scope(scope_tables, {k: v[order] for k, v in scope.rows.items()})
    n = scope.n
    limit = n if q.top is None else min(n, q.top)
    overflow = maxrec is not None and limit > maxrec
    if overflow:
        limit = maxrec
    scope = _Scope(scope_tables, {k: v[:limit] for k, v in scope.rows.items()})
    out = Table()
    for item, name in q.columns:
        if item == "*" or item == "alias.*":
            aliases = list(scope_tables) if item == "*" else [name]
            for alias in aliases:
                if alias not in scope_tables:
                    raise AdqlError(f"unknown table alias {name!r}")
                src = scope_tables[alias]
                for col in src.colnames:
                    if col not in out.colnames:
                        out[col] = src[col][scope.rows[alias]]
        else:
            if expr_is_column(item):
                parts = item[1].lower().split(".")
                alias = parts[-2] if len(parts) > 1 else _owner(scope_tables, parts[-1])
                src = scope_tables[alias]
                col = next(c for c in src.colnames if c.lower() == parts[-1])
                out[name] = src[col][scope.rows[alias]]
            else:
                out[name] = evaluate(item, scope)
    return out, overflow


def expr_is_column(expr) -> bool:
    return expr[0] == "col"


def _owner(tables: dict[str, Table], name: str) -> str:
    owners = [a for a, t in tables.items() if any(c.lower() == name for c in t.colnames)]
    if not owners:
        raise AdqlError(f"unknown column {name!r}")
    if len(owners) > 1:
        raise AdqlError(f"ambiguous column {name!r}: prefix it with a table alias")
    return owners[0]


def _reverse_rank(values):
    _, inverse = np.unique(values.astype(str), return_inverse=True)
    return -inverse


def _lookup(tables: dict[str, Table], name: str) -> Table:
    table = tables.get(name.lower())
    if table is None:
        raise AdqlError(f"unknown table {name!r}; this service has {sorted(tables)}")
    return table
