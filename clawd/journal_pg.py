"""The journal's PostgreSQL connection: the part of sqlite3's interface the journal uses.

``execute``/``executemany``/``executescript``/``close`` with SQLite-flavoured SQL
(translated by :mod:`clawd.journal_dialect`), autocommit outside ``BEGIN``/``COMMIT``,
as the journal drives SQLite. Every write transaction first runs the ``fence`` (see
:class:`clawd.leader.Leadership`): a distributor deposed by another cannot change
anything, even before it has noticed. A write statement outside ``BEGIN`` is wrapped in
a fenced transaction of its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from clawd import journal_dialect
from clawd.errors import JournalError

try:
    import psycopg

    #: what the PostgreSQL driver raises
    DatabaseError: type[Exception] = psycopg.Error
    #: a statement waited longer than lock_timeout for a lock
    LockNotAvailable: type[Exception] = psycopg.errors.LockNotAvailable
except ImportError:  # pragma: no cover - the optional extra is missing
    psycopg = None  # type: ignore[assignment]

    class DatabaseError(Exception):  # type: ignore[no-redef]
        """Never raised: psycopg is not installed."""

    class LockNotAvailable(Exception):  # type: ignore[no-redef]
        """Never raised: psycopg is not installed."""


#: called inside every write transaction before the write: raises Deposed
Fence = Callable[[Any], None]

#: ms a fenced connection may sit in an open transaction, or wait on an unacknowledged
#: send, before the server (or the kernel) ends it
STALLED_MS = 5000

_WRITE = re.compile(r"^\s*(INSERT|UPDATE|DELETE|REPLACE)\b", re.I)
_CONTROL = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK)\b", re.I)
_DDL = re.compile(r"^\s*(CREATE|ALTER|DROP)\b", re.I)

#: the schema version (SQLite's PRAGMA user_version)
META = "CREATE TABLE IF NOT EXISTS clawd_meta (id INTEGER PRIMARY KEY, version INTEGER NOT NULL)"


def is_url(target: object) -> bool:
    """Whether a journal location is a PostgreSQL URL (else: a SQLite file path)."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def connect_raw(url: str, **kwargs: Any) -> Any:
    """A psycopg connection in autocommit mode, or a JournalError saying what failed."""
    if psycopg is None:
        raise JournalError(
            "[journal] url is a PostgreSQL URL but psycopg is not installed: "
            "pip install 'clawd[postgres]'"
        )
    try:
        return psycopg.connect(url, autocommit=True, **kwargs)
    except psycopg.Error as exc:
        raise JournalError(f"journal {redact(url)}: {exc}".strip()) from None


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


class PgConnection:
    """What :class:`clawd.journal.Journal` calls ``db`` when its journal is PostgreSQL."""

    def __init__(self, url: str, *, fence: Fence | None = None) -> None:
        self.url = url
        self.fence = fence
        if fence is None:
            self.pg = connect_raw(url)
        else:
            # a leader cut off from the server fails its writes within seconds, not when
            # TCP gives up (minutes), and one stalled inside a write does not hold a
            # takeover up for long: another distributor may lead by then
            self.pg = connect_raw(url, tcp_user_timeout=STALLED_MS)
            self.pg.execute(f"SET idle_in_transaction_session_timeout = {STALLED_MS}")
        self._tables: dict[str, tuple[list[str], list[str]]] = {}
        self._sql = journal_dialect.translator(self._table_info)

    # -- sqlite3.Connection's interface ------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if _CONTROL.match(sql):
            return self._control(sql)
        if _DDL.match(sql) and not params:
            self.executescript(sql)  # SQLite's column types become PostgreSQL's
            return self.pg.cursor()
        if _WRITE.match(sql) and not self.in_transaction:
            with self._fenced():
                return self.pg.execute(self._sql(sql), params)
        return self.pg.execute(self._sql(sql), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        rows = list(rows)
        cur = self.pg.cursor()
        if not rows:
            return cur
        if self.in_transaction:
            cur.executemany(self._sql(sql), rows)
        else:
            with self._fenced():
                cur.executemany(self._sql(sql), rows)
        return cur

    def executescript(self, script: str) -> None:
        for stmt in journal_dialect.ddl(script):
            self.pg.execute(stmt)

    def close(self) -> None:
        self.pg.close()

    # -- transactions --------------------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        return bool(self.pg.info.transaction_status != psycopg.pq.TransactionStatus.IDLE)

    def _control(self, sql: str) -> Any:
        cur = self.pg.execute(sql)
        if sql.strip().upper().startswith("BEGIN") and self.fence is not None:
            try:
                self.fence(self.pg)
            except BaseException:
                self.pg.execute("ROLLBACK")
                raise
        return cur

    def _fenced(self) -> Any:
        return _Fenced(self)

    def _table_info(self, table: str) -> tuple[list[str], list[str]]:
        """(primary key columns, every column) of ``table``, from the catalog."""
        if table not in self._tables:
            cols = [
                r[0]
                for r in self.pg.execute(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = current_schema() AND table_name = %s"
                    " ORDER BY ordinal_position",
                    (table,),
                )
            ]
            keys = [
                r[0]
                for r in self.pg.execute(
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a"
                    " ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
                    " WHERE i.indrelid = %s::regclass AND i.indisprimary",
                    (table,),
                )
            ]
            self._tables[table] = (keys, cols)
        return self._tables[table]

    # -- schema --------------------------------------------------------------------------

    def schema_version(self) -> int | None:
        """The journal's schema version, or None for an empty database."""
        self.pg.execute(META)
        row = self.pg.execute("SELECT version FROM clawd_meta WHERE id = 1").fetchone()
        return None if row is None else int(row[0])

    def set_schema_version(self, version: int) -> None:
        self.pg.execute(
            "INSERT INTO clawd_meta VALUES (1, %s) ON CONFLICT (id) DO UPDATE SET version = %s",
            (version, version),
        )


class _Fenced:
    """BEGIN, the fence, the block, COMMIT (ROLLBACK when anything raised)."""

    def __init__(self, conn: PgConnection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN")

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        self.conn.pg.execute("ROLLBACK" if kind is not None else "COMMIT")
