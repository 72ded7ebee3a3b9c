"""Durable task state: SQLite in WAL mode, written in batches (group commit).

Or PostgreSQL, shared by several distributors (``[journal] url``): the same SQL, through
:mod:`clawd.journal_pg`; where this file says SQLite, that is the embedded default.

The distributor stages writes during one turn of its loop and calls :meth:`commit`
once; only then does it acknowledge the submissions to the broker. ``seq`` (the rowid)
orders a lane, so a backlog larger than memory can be paged back in order.

Left alone, SQLite copies the WAL back into the database inside whichever commit takes
it past 1000 pages, two fsyncs included: a stall of milliseconds every hundred or so
tasks. The distributor's journal runs a :class:`Checkpointer` thread instead, with its
own connection, so commits only ever append to the WAL; SQLite's own checkpoint stays
as a backstop at ``BACKSTOP_PAGES``.

The same thread prunes terminal tasks older than the retention (``[journal] retention``),
in batches of ``PRUNE_BATCH`` rows, each its own short transaction: a commit of the loop
waits for one batch at most, and SQLite reuses the freed pages, so under a steady load
the file stops growing. A task that is a dead letter, or whose result the broker has not
acknowledged yet, is never pruned.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

from clawd import clock, journal_pg
from clawd.envelope import Task, decode, encode
from clawd.errors import JournalError

#: routing rules in force (``clawd.routing``): the retained document and when it arrived
ROUTES = """
CREATE TABLE IF NOT EXISTS routes (
    id TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    added_at REAL NOT NULL
)"""

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    lane TEXT NOT NULL,
    type TEXT NOT NULL,
    state TEXT NOT NULL,            -- queued | ok | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    body BLOB NOT NULL,             -- the Task as JSON
    reply BLOB,                     -- [response_topic, correlation hex] or NULL
    result BLOB,                    -- terminal result document
    history BLOB,                   -- attempt history (JSON list)
    submitted_at REAL NOT NULL,
    finished_at REAL,
    published INTEGER NOT NULL DEFAULT 1  -- 0: result not yet acknowledged by the broker
);
CREATE INDEX IF NOT EXISTS tasks_open ON tasks(lane, seq) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS tasks_outbox ON tasks(seq) WHERE published = 0;
CREATE TABLE IF NOT EXISTS dead (
    id TEXT PRIMARY KEY,
    lane TEXT NOT NULL,
    reason TEXT NOT NULL,
    letter BLOB NOT NULL,
    dead_at REAL NOT NULL
);
"""
    + ROUTES
    + ";\n"
)

log = logging.getLogger("clawd.journal")

#: seconds between background checkpoints
CHECKPOINT_EVERY = 0.25
#: WAL pages at which a commit checkpoints by itself (when the background one falls behind)
BACKSTOP_PAGES = 16_000
#: the WAL file is truncated back to this many bytes after a checkpoint restarts it
WAL_SIZE_LIMIT = 64 * 1024 * 1024

#: rows deleted per pruning transaction (a commit of the loop waits for one batch at most)
PRUNE_BATCH = 500
#: most seconds between two prunes (less when the retention is shorter)
PRUNE_EVERY = 30.0
#: finished tasks by age, for pruning (created on open; journals of any version get it)
PRUNE_INDEX = (
    "CREATE INDEX IF NOT EXISTS tasks_finished ON tasks(finished_at) WHERE finished_at IS NOT NULL"
)

#: the last slot each periodic schedule fired (or let pass), so a restart never fires it again
SCHEDULES = "CREATE TABLE IF NOT EXISTS schedules (name TEXT PRIMARY KEY, slot REAL NOT NULL)"

#: open groups (``clawd.workflow``): the group as JSON (lane, member ids, then); a row
#: leaves when the group ends, its result kept in ``tasks`` like any other
GROUPS = """
CREATE TABLE IF NOT EXISTS groups (
    id TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    reply BLOB,
    submitted_at REAL NOT NULL
)"""

#: ids per lookup query (SQLite allows 32 766 parameters)
LOOKUP_CHUNK = 500

#: seconds a result's published mark waits for a commit with other writes before it is
#: written on its own
PUBLISHED_LAG = 1.0

#: the schema version this code writes (``PRAGMA user_version``)
VERSION = 4
#: what brings a journal of version N-1 to N (version 0: created before versions existed)
MIGRATIONS = {
    2: "ALTER TABLE tasks ADD COLUMN published INTEGER NOT NULL DEFAULT 1",
    3: ROUTES,
    4: GROUPS,
}


class Journal:
    """The distributor's task journal. Not thread-safe: one owner thread."""

    def __init__(
        self,
        path: Path | str,
        *,
        fsync: bool = True,
        checkpointer: bool = False,
        retention: float = 0.0,
        fence: journal_pg.Fence | None = None,
    ) -> None:
        """``retention``: seconds a terminal task is kept; 0 keeps every task. Lookups
        honour it; the checkpointer thread (``checkpointer``) prunes what it frees.

        ``path``: a SQLite file, or a ``postgresql://`` URL (:mod:`clawd.journal_pg`),
        where ``fence`` runs in every write transaction (:class:`clawd.leader.Leadership`).
        """
        self.postgres = journal_pg.is_url(path)
        self.path = path
        self.db: Any
        self.checkpointer: Checkpointer | None = None
        if self.postgres:
            self.db = journal_pg.PgConnection(str(path), fence=fence)
        else:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit survives power loss; NORMAL: survives a crash of this process
            self.db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        if checkpointer and not self.postgres:
            self.db.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
            self.db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        try:
            self._migrate()
            self.db.executescript(SCHEMA)
            self.db.execute(PRUNE_INDEX)
            self.db.execute(SCHEDULES)
            self.db.execute(GROUPS)
        except (sqlite3.Error, journal_pg.DatabaseError) as exc:
            raise JournalError(f"journal {journal_pg.redact(str(path))}: {exc}") from None
        self._adds: list[tuple[Any, ...]] = []
        self._attempts: list[tuple[int, str]] = []
        self._finished: list[tuple[Any, ...]] = []
        self._dead: list[tuple[Any, ...]] = []
        self._requeued: list[tuple[int, bytes, str]] = []
        #: results the broker acknowledged, by task id, and since when the oldest waits
        self._published: dict[str, None] = {}
        self._published_since = 0.0
        self._histories: list[tuple[bytes, str]] = []
        self._slots: list[tuple[str, float]] = []
        self._groups_added: list[tuple[str, bytes, bytes | None, float]] = []
        self._groups_ended: list[tuple[str]] = []
        self.retention = retention
        #: ids a lookup found only in rows past the retention (not yet pruned): forgotten
        self._expired: set[str] = set()
        self._forget: list[tuple[str]] = []
        if checkpointer:
            self.checkpointer = Checkpointer(path, fsync=fsync, retention=retention, fence=fence)
            self.checkpointer.start()

    def _migrate(self) -> None:
        """Bring an older journal up to this code's schema, in one transaction."""
        db = self.db
        if self.postgres:
            return self._migrate_pg()
        (version,) = db.execute("PRAGMA user_version").fetchone()
        exists = db.execute("SELECT 1 FROM sqlite_master WHERE name='tasks'").fetchone()
        if not exists:
            db.execute(f"PRAGMA user_version={VERSION}")
            return
        if version == 0:
            cols = {r[1] for r in db.execute("PRAGMA table_info(tasks)")}
            version = 2 if "published" in cols else 1
        if version > VERSION:
            raise JournalError(
                f"journal {self.path} has schema version {version}, newer than this clawd "
                f"({VERSION}): upgrade clawd, or point [daemon] state_dir elsewhere"
            )
        db.execute("BEGIN")
        for v in range(version + 1, VERSION + 1):
            db.execute(MIGRATIONS[v])
        db.execute(f"PRAGMA user_version={VERSION}")
        db.execute("COMMIT")

    def _migrate_pg(self) -> None:
        """The same migrations on PostgreSQL, whose version lives in ``clawd_meta``."""
        db = self.db
        version = db.schema_version()
        if version is None:
            db.set_schema_version(VERSION)
            return
        if version > VERSION:
            raise JournalError(
                f"journal {journal_pg.redact(str(self.path))} has schema version {version},"
                f" newer than this clawd ({VERSION}): upgrade clawd"
            )
        for v in range(version + 1, VERSION + 1):
            db.executescript(MIGRATIONS[v])
        db.set_schema_version(VERSION)

    # -- staged writes -------------------------------------------------------------------

    def add(self, task: Task, reply: list[Any] | None) -> None:
        if self._expired and task.id in self._expired:
            # its id's old task is past the retention: the old row makes way for this one
            self._expired.discard(task.id)
            self._forget.append((task.id,))
            self._published.pop(task.id, None)
        self._adds.append(
            (
                task.id,
                task.lane,
                task.type,
                "queued",
                encode(task),
                encode(reply) if reply else None,
                task.submitted_at,
            )
        )

    def dispatched(self, task_id: str, attempt: int) -> None:
        self._attempts.append((attempt, task_id))

    def finish(self, task_id: str, state: str, result: dict[str, Any], history: list[Any]) -> None:
        self._published.pop(task_id, None)  # a mark for an earlier result is not this one's
        self._finished.append(
            (
                state,
                encode(result),
                encode(history),
                result.get("finished_at", clock.wall()),
                task_id,
            )
        )

    def dead_letter(self, task_id: str, lane: str, reason: str, letter: dict[str, Any]) -> None:
        self._dead.append((task_id, lane, reason, encode(letter), clock.wall()))

    def requeue(self, task_id: str, attempts: int, history: list[Any]) -> None:
        """Make a terminal task queued again (dead-letter replay); ``attempts`` keeps its
        fencing token, ``history`` says from which token on attempts count again."""
        self._published.pop(task_id, None)
        self._requeued.append((attempts, encode(history), task_id))

    def handed_back(self, task_id: str, history: list[Any]) -> None:
        """An open task's attempt was handed back: its history says so, so that after a
        restart the hand-back still does not count against max_attempts."""
        self._histories.append((encode(history), task_id))

    def schedule_slot(self, name: str, slot: float) -> None:
        """A periodic schedule is done with ``slot`` (fired it, or let it pass)."""
        self._slots.append((name, slot))

    def schedule_slots(self) -> dict[str, float]:
        """The last slot of every schedule, by name."""
        return dict(self.db.execute("SELECT name, slot FROM schedules").fetchall())

    def published(self, task_id: str) -> None:
        """The broker acknowledged the task's result: it leaves the outbox.

        The mark is written with the next commit that writes anything else, or on its own
        :data:`PUBLISHED_LAG` seconds later: at one task per turn it saved a commit per
        task. A crash in between publishes those results once more, which results are
        allowed (at least once, like the task)."""
        if not self._published:
            self._published_since = clock.monotonic()
        self._published[task_id] = None

    @property
    def dirty(self) -> bool:
        return bool(
            self._adds
            or self._attempts
            or self._finished
            or self._dead
            or self._requeued
            or self._histories
            or self._slots
            or self._groups_added
            or self._groups_ended
        )

    def commit(self, *, marks: bool = False) -> None:
        """Write everything staged in one transaction; results' published marks only
        with other writes, once they have waited :data:`PUBLISHED_LAG`, or with ``marks``."""
        if not self.dirty and not (
            self._published
            and (marks or clock.monotonic() - self._published_since >= PUBLISHED_LAG)
        ):
            return
        db = self.db
        db.execute("BEGIN")
        try:
            if self._forget:
                db.executemany("DELETE FROM tasks WHERE id=?", self._forget)
            attempts = self._attempts
            if self._adds:
                rows, attempts = _fold_attempts(self._adds, attempts)
                cur = db.executemany(
                    "INSERT OR IGNORE INTO tasks(id, lane, type, state, body, reply, submitted_at,"
                    " attempts) VALUES (?,?,?,?,?,?,?,?)",
                    rows,
                )
                # (rows inserted, summed over the batch, on sqlite3 and psycopg alike)
                if cur.rowcount != len(rows):
                    attempts = self._attempts  # a row was already there: update every one
            if attempts:
                db.executemany("UPDATE tasks SET attempts=? WHERE id=?", attempts)
            if self._finished:
                db.executemany(
                    "UPDATE tasks SET state=?, result=?, history=?, finished_at=?, published=0"
                    " WHERE id=?",
                    self._finished,
                )
            if self._dead:
                db.executemany("INSERT OR REPLACE INTO dead VALUES (?,?,?,?,?)", self._dead)
            if self._requeued:
                db.executemany(
                    "UPDATE tasks SET state='queued', attempts=?, result=NULL, history=?,"
                    " finished_at=NULL WHERE id=?",
                    self._requeued,
                )
                db.executemany("DELETE FROM dead WHERE id=?", [r[2:] for r in self._requeued])
            if self._histories:
                db.executemany("UPDATE tasks SET history=? WHERE id=?", self._histories)
            if self._published:
                db.executemany(
                    "UPDATE tasks SET published=1 WHERE id=?", [(i,) for i in self._published]
                )
            if self._slots:
                db.executemany("INSERT OR REPLACE INTO schedules VALUES (?,?)", self._slots)
            self._commit_groups()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._forget.clear()
        self._expired.clear()
        self._adds.clear()
        self._attempts.clear()
        self._finished.clear()
        self._dead.clear()
        self._requeued.clear()
        self._histories.clear()
        self._published.clear()
        self._slots.clear()
        self._groups_added.clear()
        self._groups_ended.clear()

    # -- groups (clawd.distributor.groups): staged, written by commit -------------------

    def add_group(self, group_id: str, body: bytes, reply: bytes | None, at: float) -> None:
        """A new open group (its members are added as tasks in the same commit)."""
        self._groups_added.append((group_id, body, reply, at))

    def end_group(self, group_id: str) -> None:
        """A group ended: it leaves; its result is a task row (:meth:`add`, :meth:`finish`)."""
        self._groups_ended.append((group_id,))

    def _commit_groups(self) -> None:
        if self._groups_added:
            self.db.executemany(
                "INSERT OR IGNORE INTO groups(id, body, reply, submitted_at) VALUES (?,?,?,?)",
                self._groups_added,
            )
        if self._groups_ended:
            self.db.executemany("DELETE FROM groups WHERE id=?", self._groups_ended)

    def open_groups(self) -> list[tuple[str, bytes, bytes | None]]:
        """Every open group in submission order: (id, body, reply)."""
        return [
            (r[0], bytes(r[1]), bytes(r[2]) if r[2] is not None else None)
            for r in self.db.execute("SELECT id, body, reply FROM groups ORDER BY submitted_at, id")
        ]

    # -- reads ---------------------------------------------------------------------------

    def outbox(self) -> list[tuple[dict[str, Any], list[Any] | None]]:
        """Terminal results the broker has not acknowledged yet: (result, reply)."""
        rows = self.db.execute(
            "SELECT id, result, reply FROM tasks WHERE published=0 ORDER BY seq"
        ).fetchall()
        marked = self._published
        return [(decode(r), decode(rp) if rp else None) for i, r, rp in rows if i not in marked]

    def lookup_many(self, ids: list[str]) -> dict[str, tuple[str, dict[str, Any] | None]]:
        """(state, result) of those of ``ids`` the journal knows, by id.

        A task past the retention counts as unknown even before it is pruned (what
        :func:`prune` would delete): its id is new again, and :meth:`add` replaces it."""
        found: dict[str, tuple[str, dict[str, Any] | None]] = {}
        cutoff = clock.wall() - self.retention if self.retention else None
        for i in range(0, len(ids), LOOKUP_CHUNK):
            chunk = ids[i : i + LOOKUP_CHUNK]
            rows = self.db.execute(
                "SELECT id, state, result, finished_at, published, id IN (SELECT id FROM dead)"
                f" FROM tasks WHERE id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            for task_id, state, result, finished_at, published, dead in rows:
                if cutoff is not None and _prunable(finished_at, published, dead, cutoff):
                    self._expired.add(task_id)
                    continue
                found[task_id] = (state, decode(result) if result else None)
        return found

    def open_tasks(self, lane: str, after: int = 0, limit: int = 10_000) -> list[tuple[Any, ...]]:
        """Queued tasks of a lane in order: (seq, task, attempts, reply, history)."""
        rows = self.db.execute(
            "SELECT seq, body, attempts, reply, history FROM tasks"
            " WHERE state='queued' AND lane=? AND seq>? ORDER BY seq LIMIT ?",
            (lane, after, limit),
        ).fetchall()
        return [
            (
                seq,
                _task(body),
                attempts,
                decode(reply) if reply else None,
                decode(history) if history else [],
            )
            for seq, body, attempts, reply, history in rows
        ]

    def finished(self, ids: list[str]) -> set[str]:
        """Those of ``ids`` whose task has a terminal result."""
        out: set[str] = set()
        for i in range(0, len(ids), LOOKUP_CHUNK):
            chunk = ids[i : i + LOOKUP_CHUNK]
            rows = self.db.execute(
                f"SELECT id FROM tasks WHERE id IN ({','.join('?' * len(chunk))})"
                " AND finished_at IS NOT NULL",
                chunk,
            )
            out.update(r[0] for r in rows)
        return out

    # -- routing rules (written at once: they are rare, and acknowledged after) ----------

    def save_route(self, rule_id: str, body: bytes, added_at: float) -> None:
        self.db.execute("INSERT OR REPLACE INTO routes VALUES (?,?,?)", (rule_id, body, added_at))

    def delete_route(self, rule_id: str) -> None:
        self.db.execute("DELETE FROM routes WHERE id=?", (rule_id,))

    def routes(self) -> list[tuple[str, bytes, float]]:
        """Every journaled rule: (id, retained document, wall time it arrived)."""
        return [
            (r[0], bytes(r[1]), float(r[2]))
            for r in self.db.execute("SELECT id, body, added_at FROM routes ORDER BY id")
        ]

    def open_task(self, task_id: str) -> Task | None:
        """An open task's body, or None when it is not open (a finish staged in this
        turn counts: it is not open any more)."""
        if self.staged_result(task_id) is not None:
            return None
        row = self.db.execute(
            "SELECT body FROM tasks WHERE id=? AND state='queued'", (task_id,)
        ).fetchone()
        return _task(row[0]) if row else None

    def staged_result(self, task_id: str) -> dict[str, Any] | None:
        """The terminal result staged for ``task_id`` in this turn, not yet committed."""
        for row in reversed(self._finished):
            if row[-1] == task_id:
                return decode(row[1])  # type: ignore[no-any-return]
        return None

    def lanes_with_open(self) -> list[str]:
        return [
            r[0] for r in self.db.execute("SELECT DISTINCT lane FROM tasks WHERE state='queued'")
        ]

    def results(self, ids: list[str] | None = None, limit: int = 50) -> list[dict[str, Any]]:
        if ids:
            marks = ",".join("?" * len(ids))
            rows = self.db.execute(
                f"SELECT result FROM tasks WHERE id IN ({marks}) AND result IS NOT NULL", ids
            ).fetchall()
        else:
            rows = self.db.execute(
                "SELECT result FROM (SELECT seq, result FROM tasks WHERE result IS NOT NULL"
                " ORDER BY finished_at DESC LIMIT ?) AS latest ORDER BY seq",
                (limit,),
            ).fetchall()
        return [decode(r[0]) for r in rows]

    def dead_letters(self, task_id: str | None = None) -> list[dict[str, Any]]:
        if task_id:
            rows = self.db.execute("SELECT letter FROM dead WHERE id=?", (task_id,)).fetchall()
        else:
            rows = self.db.execute("SELECT letter FROM dead ORDER BY dead_at").fetchall()
        return [decode(r[0]) for r in rows]

    def purge_dead(self, ids: list[str] | None = None) -> int:
        """Delete the dead letters of ``ids``, or all of them."""
        if ids:
            marks = ",".join("?" * len(ids))
            cur = self.db.execute(f"DELETE FROM dead WHERE id IN ({marks})", ids)
        else:
            cur = self.db.execute("DELETE FROM dead")
        return cur.rowcount

    def close(self) -> None:
        self.commit(marks=True)
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.db.close()

    def abandon(self) -> None:
        """Close without committing what is staged (a deposed distributor's writes)."""
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.db.close()


def _prunable(finished_at: float | None, published: int, dead: int, cutoff: float) -> bool:
    """What :func:`prune` deletes, for one row."""
    return finished_at is not None and finished_at < cutoff and bool(published) and not dead


def prune(
    db: Any,
    before: float,
    *,
    batch: int = PRUNE_BATCH,
    halt: threading.Event | None = None,
) -> int:
    """Delete the terminal tasks finished before ``before`` (epoch seconds), ``batch`` rows
    per transaction; returns how many. Kept: open tasks, results the broker has not
    acknowledged (the outbox), and dead letters (an operator's to replay or purge).
    ``db`` must be in autocommit mode (each DELETE commits by itself)."""
    total = 0
    while True:
        n = db.execute(
            "DELETE FROM tasks WHERE seq IN (SELECT seq FROM tasks WHERE finished_at < ?"
            " AND published = 1 AND id NOT IN (SELECT id FROM dead) LIMIT ?)",
            (before, batch),
        ).rowcount
        total += n
        # between batches the writer gets the lock: a gap, not a fair queue, but enough
        if n < batch or (halt is not None and halt.wait(0.005)):
            return total


class Checkpointer(threading.Thread):
    """Copies committed WAL pages into the database file from its own connection, every
    ``CHECKPOINT_EVERY`` seconds: a passive checkpoint never blocks the writer, and SQLite
    releases the GIL while it works. With a ``retention``, it also prunes old terminal
    tasks (:func:`prune`) every ``PRUNE_EVERY`` seconds, or every half retention if that
    is shorter."""

    def __init__(
        self,
        path: Path | str,
        *,
        fsync: bool,
        retention: float = 0.0,
        fence: journal_pg.Fence | None = None,
    ) -> None:
        super().__init__(name="clawd-checkpoint", daemon=True)
        self.postgres = journal_pg.is_url(path)
        self.db: Any
        if self.postgres:  # only prunes: PostgreSQL checkpoints by itself
            self.db = journal_pg.PgConnection(str(path), fence=fence)
        else:
            self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self.db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
            self.db.execute("PRAGMA wal_autocheckpoint=0")
        self._halt = threading.Event()
        self.checkpoints = 0
        self.retention = retention
        #: prunes run, and tasks pruned, so far
        self.prunes = 0
        self.pruned = 0

    def run(self) -> None:
        every = min(PRUNE_EVERY, self.retention / 2)
        next_prune = time.monotonic()
        while not self._halt.wait(CHECKPOINT_EVERY):
            try:
                if not self.postgres:
                    self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                self.checkpoints += 1
            except sqlite3.Error as exc:
                log.warning("journal checkpoint failed (retrying): %s", exc)
            if self.retention > 0 and time.monotonic() >= next_prune:
                next_prune = time.monotonic() + every
                self._prune()

    def _prune(self) -> None:
        try:
            n = prune(self.db, clock.wall() - self.retention, halt=self._halt)
        except (sqlite3.Error, journal_pg.DatabaseError, JournalError) as exc:
            log.warning("journal pruning failed (retrying): %s", exc)
            return
        self.prunes += 1
        self.pruned += n
        if n:
            log.debug("pruned %d finished task(s) older than %gs", n, self.retention)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        self.db.close()


_task = msgspec.json.Decoder(Task).decode


def location(cfg: Any) -> Path | str:
    """Where the distributor's journal is: ``[journal] url``, or the state dir's file."""
    return str(cfg.journal.url) if cfg.journal.url else cfg.state_path / "journal.db"


def exists(where: Path | str) -> bool:
    """Whether there is a journal to read there (a PostgreSQL one is taken to exist)."""
    return journal_pg.is_url(where) or Path(where).exists()


def open_readonly(path: Path | str) -> Journal:
    """A journal for the CLI's reads beside a running distributor (WAL lets both in)."""
    return Journal(path, fsync=False)


def _fold_attempts(
    adds: list[tuple[Any, ...]], attempts: list[tuple[int, str]]
) -> tuple[list[tuple[Any, ...]], list[tuple[int, str]]]:
    """Insert rows with their attempt count, and the updates still needed.

    A task admitted and dispatched in the same turn (the usual case under load) is
    written once, with its attempt count, instead of an INSERT and an UPDATE."""
    if not attempts:
        return [(*row, 0) for row in adds], attempts
    latest = dict((task_id, attempt) for attempt, task_id in attempts)  # the last one wins
    rows = [(*row, latest.get(row[0], 0)) for row in adds]
    added = {row[0] for row in adds}
    return rows, [(a, task_id) for a, task_id in attempts if task_id not in added]
