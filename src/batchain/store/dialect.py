"""The store's SQL as PostgreSQL reads it.

The queries of :class:`~batchain.store.sql.SQLStore` and the schema of
:mod:`batchain.store.schema` are written once, in SQLite's words. The few that PostgreSQL
spells otherwise are rewritten here, once per statement text (statements are built from
a closed set of templates, so the cache stays small):

- ``?`` and ``?N`` parameters become psycopg's ``%s`` and ``%(pN)s``;
- ``INSERT OR IGNORE`` becomes ``ON CONFLICT DO NOTHING``, and ``INSERT OR REPLACE`` an
  upsert on the table's primary key (read from the schema);
- SQLite's scalar ``max(a, b, ...)`` and ``min(...)`` become ``GREATEST`` and ``LEAST``,
  and ``a IS NOT b`` (b not NULL) becomes ``IS DISTINCT FROM``;
- ``INDEXED BY`` hints are dropped (PostgreSQL's planner picks the index);
- in the schema, ``WITHOUT ROWID`` is dropped, ``INTEGER`` is ``BIGINT`` and ``REAL`` is
  ``DOUBLE PRECISION``;
- ``PRAGMA busy_timeout=N`` sets ``lock_timeout``, and ``PRAGMA table_info(t)`` reads the
  columns from ``information_schema``.

``json_valid`` and ``json_extract``, which the reports use, are functions the PostgreSQL
store creates (:data:`JSON_FUNCTIONS`).
"""

from __future__ import annotations

import functools
import re

from batchain.store.schema import SCHEMA

__all__ = ["JSON_FUNCTIONS", "Statement", "ddl", "primary_keys", "translate"]

#: SQLite's JSON functions the reports use, for PostgreSQL (same names, same answers for
#: the paths they read; text that is not JSON is not valid, and extracts nothing)
JSON_FUNCTIONS = (
    """CREATE OR REPLACE FUNCTION json_valid(t text) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE AS $$
    BEGIN
        PERFORM t::jsonb;
        RETURN t IS NOT NULL;
    EXCEPTION WHEN others THEN
        RETURN false;
    END $$""",
    """CREATE OR REPLACE FUNCTION json_extract(t text, path text) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$ SELECT jsonb_path_query_first(t::jsonb, path::jsonpath) #>> '{}' $$""",
)


class Statement:
    """One statement in PostgreSQL's words, and how its parameters are passed."""

    __slots__ = ("named", "text")

    def __init__(self, text: str, named: bool) -> None:
        self.text = text
        #: parameters are ``?N`` (passed by name: ``pN``) rather than in order
        self.named = named


@functools.cache
def primary_keys() -> dict[str, tuple[str, ...]]:
    """Each table's primary key columns, as the schema declares them."""
    keys: dict[str, tuple[str, ...]] = {}
    for m in re.finditer(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\)(?: WITHOUT ROWID)?;", SCHEMA, re.S):
        table, body = m.group(1), m.group(2)
        composite = re.search(r"PRIMARY KEY \(([^)]*)\)", body)
        if composite:
            keys[table] = tuple(c.strip() for c in composite.group(1).split(","))
            continue
        single = re.search(r"^\s*(\w+) \w+ PRIMARY KEY", body, re.M)
        if single:
            keys[table] = (single.group(1),)
    return keys


def ddl(sql: str) -> str:
    """A schema statement (``CREATE TABLE``, ``CREATE INDEX``, a column's declaration) for
    PostgreSQL."""
    sql = re.sub(r"\)\s*WITHOUT ROWID", ")", sql)
    sql = re.sub(r"\bINTEGER\b", "BIGINT", sql)
    return re.sub(r"\bREAL\b", "DOUBLE PRECISION", sql)


@functools.lru_cache(maxsize=2048)
def translate(sql: str) -> Statement:
    """``sql`` (a statement of the store, in SQLite's words) for PostgreSQL."""
    pragma = _pragma(sql)
    if pragma is not None:
        return Statement(pragma, named=False)
    text = re.sub(r"\s+INDEXED BY \w+", "", sql)
    text = re.sub(r"\bIS NOT (?!NULL\b)", "IS DISTINCT FROM ", text)
    text = _scalar_extremes(text)
    text = _insert_or(text)
    return _parameters(text)


def _pragma(sql: str) -> str | None:
    stripped = sql.strip()
    if not stripped.upper().startswith("PRAGMA"):
        return None
    timeout = re.fullmatch(r"PRAGMA busy_timeout=(\d+)", stripped)
    if timeout:
        return f"SET lock_timeout = {int(timeout.group(1))}"
    table = re.fullmatch(r"PRAGMA table_info\((\w+)\)", stripped)
    if table:
        return (
            "SELECT ordinal_position - 1 AS cid, column_name AS name FROM information_schema.columns"
            f" WHERE table_schema = current_schema() AND table_name = '{table.group(1)}'"
            " ORDER BY ordinal_position"
        )
    raise ValueError(f"no PostgreSQL equivalent for {stripped!r}")


def _insert_or(sql: str) -> str:
    """``INSERT OR IGNORE`` / ``INSERT OR REPLACE`` as ``ON CONFLICT`` clauses."""
    m = re.match(r"\s*INSERT OR (IGNORE|REPLACE) INTO (\w+) \(([^)]*)\)", sql)
    if m is None:
        return sql
    how, table, columns = m.group(1), m.group(2), [c.strip() for c in m.group(3).split(",")]
    text = f"INSERT INTO {table} ({m.group(3)})" + sql[m.end() :]
    if how == "IGNORE":
        return text + " ON CONFLICT DO NOTHING"
    key = primary_keys()[table]
    rest = [c for c in columns if c not in key]
    if not rest:
        return text + " ON CONFLICT DO NOTHING"
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in rest)
    return text + f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}"


def _scalar_extremes(sql: str) -> str:
    """SQLite's ``max``/``min`` of several arguments (not the aggregates, which take one)."""
    out: list[str] = []
    pos = 0
    for m in re.finditer(r"\b(max|min)\(", sql, re.I):
        if m.start() < pos:
            continue  # inside a call already rewritten
        close = _closing(sql, m.end() - 1)
        inner = sql[m.end() : close]
        if not _has_top_level_comma(inner):
            continue
        out.append(sql[pos : m.start()])
        name = "GREATEST" if m.group(1).lower() == "max" else "LEAST"
        out.append(f"{name}({_scalar_extremes(inner)})")
        pos = close + 1
    out.append(sql[pos:])
    return "".join(out)


def _closing(sql: str, opening: int) -> int:
    depth = 0
    for i in range(opening, len(sql)):
        if sql[i] == "(":
            depth += 1
        elif sql[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced parentheses in {sql!r}")


def _has_top_level_comma(inner: str) -> bool:
    depth = 0
    for ch in inner:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            return True
    return False


def _parameters(sql: str) -> Statement:
    """``?`` as ``%s`` and ``?N`` as ``%(pN)s`` (outside string literals); ``%`` doubled."""
    out: list[str] = []
    named = False
    i, n = 0, len(sql)
    in_string = False
    while i < n:
        ch = sql[i]
        if ch == "'":
            in_string = not in_string
            out.append(ch)
        elif ch == "%":
            out.append("%%")
        elif ch == "?" and not in_string:
            j = i + 1
            while j < n and sql[j].isdigit():
                j += 1
            if j > i + 1:
                out.append(f"%(p{sql[i + 1 : j]})s")
                named = True
                i = j
                continue
            out.append("%s")
        else:
            out.append(ch)
        i += 1
    return Statement("".join(out), named)
