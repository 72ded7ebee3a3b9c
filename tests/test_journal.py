"""The journal: schema migrations, the results outbox."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from clawd.envelope import Task, result_doc
from clawd.errors import JournalError
from clawd.journal import BACKSTOP_PAGES, VERSION, Journal

# the tasks table as the first release wrote it: no outbox column, no user_version
V1 = """
CREATE TABLE tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, lane TEXT NOT NULL,
    type TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    body BLOB NOT NULL, reply BLOB, result BLOB, history BLOB, submitted_at REAL NOT NULL,
    finished_at REAL
);
INSERT INTO tasks(id, lane, type, state, body, result, submitted_at)
VALUES ('old-1', 'normal', 'compute', 'ok', '{}', '{"id": "old-1"}', 1.0);
"""


def test_an_older_journal_is_migrated_and_keeps_its_tasks(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    db = sqlite3.connect(path)
    db.executescript(V1)
    db.close()
    j = Journal(path)
    assert j.db.execute("PRAGMA user_version").fetchone() == (VERSION,)
    assert j.lookup_many(["old-1", "unknown"]) == {"old-1": ("ok", {"id": "old-1"})}
    assert j.outbox() == []  # results of the old journal count as published


def test_a_journal_newer_than_the_code_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    Journal(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={VERSION + 1}")
    db.close()
    with pytest.raises(JournalError, match="newer than this clawd"):
        Journal(path)


def test_a_result_stays_in_the_outbox_until_published(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.db")
    task = Task(id="t1", type="compute", lane="normal", input="1", submitted_at=1.0)
    j.add(task, ["my/reply", "ab"])
    j.commit()
    doc = result_doc(task, "ok", attempts=1, result=1)
    j.finish("t1", "ok", doc, [])
    j.commit()
    assert j.outbox() == [(doc, ["my/reply", "ab"])]
    j.published("t1")
    j.commit()
    assert j.outbox() == []


def test_lookups_go_in_chunks_and_find_every_known_id(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.db")
    for i in range(1200):
        j.add(Task(id=f"t{i}", type="compute", lane="normal", input="1", submitted_at=1.0), None)
    j.commit()
    ids = [f"t{i}" for i in range(0, 1200, 2)] + [f"nope{i}" for i in range(700)]
    found = j.lookup_many(ids)
    assert sorted(found) == sorted(f"t{i}" for i in range(0, 1200, 2))
    assert found["t0"] == ("queued", None)


def test_commits_leave_checkpoints_to_the_background_thread(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    j = Journal(path, fsync=False, checkpointer=True)
    assert j.db.execute("PRAGMA wal_autocheckpoint").fetchone() == (BACKSTOP_PAGES,)
    body = "x" * 3000  # about a page per task: well past SQLite's default 1000-page checkpoint
    for i in range(3000):
        j.add(Task(id=f"t{i}", type="compute", lane="normal", input=body, submitted_at=1.0), None)
        if i % 10 == 9:
            j.commit()
    assert j.checkpointer is not None
    deadline = time.monotonic() + 10
    while j.checkpointer.checkpoints < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    # what the checkpointer copied is in the database file itself, not only in the WAL
    assert path.stat().st_size > 3000 * 3000
    j.close()
    assert not j.checkpointer.is_alive()
