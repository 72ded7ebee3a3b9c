"""The journal: schema migrations, the results outbox."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from clawd.envelope import Task, result_doc
from clawd.errors import JournalError
from clawd.journal import VERSION, Journal

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
    assert j.lookup("old-1") == ("ok", {"id": "old-1"})
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
