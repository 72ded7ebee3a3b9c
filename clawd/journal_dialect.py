"""The journal's SQL, written once in SQLite's dialect, turned into PostgreSQL's.

:class:`clawd.journal.Journal` writes plain SQLite SQL (``?`` placeholders, ``INSERT OR
IGNORE``, ``INSERT OR REPLACE``, ``BLOB``, ``REAL``, ``AUTOINCREMENT``). On PostgreSQL the
connection (:mod:`clawd.journal_pg`) passes every statement through :func:`statement` or
:func:`ddl` first, so a new journal method works on both backends as written; only SQL
outside this small common subset needs a branch on ``Journal.postgres``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

_OR_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO\b", re.I)
_OR_REPLACE = re.compile(r"^\s*INSERT\s+OR\s+REPLACE\s+INTO\s+(\w+)\s*(\(([^)]*)\))?", re.I)

#: SQLite column types and clauses, and what PostgreSQL calls them (DDL only)
_TYPES = (
    (re.compile(r"\bINTEGER\s+PRIMARY\s+KEY\s+AUTOINCREMENT\b", re.I), "BIGSERIAL PRIMARY KEY"),
    (re.compile(r"\bBLOB\b", re.I), "BYTEA"),
    # SQLite's REAL is 8 bytes, PostgreSQL's 4: epoch seconds need DOUBLE PRECISION
    (re.compile(r"\bREAL\b", re.I), "DOUBLE PRECISION"),
)

#: (primary key columns, every column) of a table, for INSERT OR REPLACE
TableInfo = Callable[[str], tuple[list[str], list[str]]]


def placeholders(sql: str) -> str:
    """``?`` to ``%s`` (and a literal ``%`` to ``%%``), outside quoted strings."""
    out: list[str] = []
    quoted = False
    for ch in sql:
        if ch == "'":
            quoted = not quoted
        if not quoted and ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


def statement(sql: str, table_info: TableInfo) -> str:
    """One DML statement in PostgreSQL's dialect (cached by :func:`translator`)."""
    if _OR_IGNORE.match(sql):
        sql = _OR_IGNORE.sub("INSERT INTO", sql, count=1).rstrip().rstrip(";")
        sql += " ON CONFLICT DO NOTHING"
    elif m := _OR_REPLACE.match(sql):
        table = m.group(1)
        keys, columns = table_info(table)
        if m.group(3):
            columns = [c.strip() for c in m.group(3).split(",")]
        updates = ", ".join(f"{c}=EXCLUDED.{c}" for c in columns if c not in keys)
        head = f"INSERT INTO {table}({', '.join(columns)})"
        sql = head + sql[m.end() :].rstrip().rstrip(";")
        sql += f" ON CONFLICT ({', '.join(keys)}) "
        sql += f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
    return placeholders(sql)


def translator(table_info: TableInfo) -> Callable[[str], str]:
    """:func:`statement`, memoised per connection (the journal repeats a few statements)."""
    return lru_cache(maxsize=512)(lambda sql: statement(sql, table_info))


def ddl(script: str) -> list[str]:
    """A schema script (``CREATE TABLE``/``INDEX``, ``ALTER TABLE``) as PostgreSQL
    statements, one per item."""
    for pattern, replacement in _TYPES:
        script = pattern.sub(replacement, script)
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
