"""The journal: schema migrations, the results outbox, retention."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from clawd import clock
from clawd.envelope import Task, result_doc
from clawd.errors import JournalError
from clawd.journal import BACKSTOP_PAGES, PRUNE_INDEX, PUBLISHED_LAG, VERSION, Journal, prune
from tests.conftest import wait_until
from tests.postgres import pg_server, pg_url  # noqa: F401


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a journal lives: a SQLite file, or an empty database of a private PostgreSQL."""
    if request.param == "sqlite":
        return tmp_path / "journal.db"
    return str(request.getfixturevalue("pg_url"))


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


def test_a_result_stays_in_the_outbox_until_published(where: Path | str) -> None:
    j = Journal(where)
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


def test_a_published_mark_waits_for_a_commit_with_other_writes(
    where: Path | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mark rides on the next commit that writes something else, or goes on its own
    once it has waited PUBLISHED_LAG; the outbox leaves it out meanwhile; a close writes it."""
    now = [100.0]
    monkeypatch.setattr(clock, "monotonic", lambda: now[0])
    j = Journal(where)

    def done(task_id: str) -> None:
        task = Task(id=task_id, type="compute", lane="normal", input="1", submitted_at=1.0)
        j.add(task, None)
        j.finish(task_id, "ok", result_doc(task, "ok", attempts=1, result=1), [])
        j.commit()

    def unmarked() -> list[str]:
        return [r[0] for r in j.db.execute("SELECT id FROM tasks WHERE published=0 ORDER BY seq")]

    done("t1")
    j.published("t1")
    j.commit()  # nothing else to write: the mark waits
    assert unmarked() == ["t1"]
    assert j.outbox() == []  # acknowledged all the same
    done("t2")  # a commit with other writes takes it along
    assert unmarked() == ["t2"]
    j.published("t2")
    now[0] += PUBLISHED_LAG
    j.commit()  # waited long enough: on its own
    assert unmarked() == []
    done("t3")
    j.published("t3")
    j.close()
    j = Journal(where)
    assert unmarked() == [] and j.outbox() == []
    j.close()


def test_a_mark_for_an_earlier_result_does_not_mark_the_next_one(where: Path | str) -> None:
    """A failed task replayed from the dead letters finishes again: the broker's ack of
    its first result must not count for the second."""
    j = Journal(where)
    task = Task(id="t1", type="compute", lane="normal", input="1", submitted_at=1.0)
    j.add(task, None)
    j.finish("t1", "failed", result_doc(task, "failed", attempts=1, error="x"), [])
    j.commit()
    j.published("t1")  # waiting for the next commit
    j.requeue("t1", 1, [])
    j.commit()
    second = result_doc(task, "ok", attempts=2, result=2)
    j.finish("t1", "ok", second, [])
    j.commit()
    assert j.outbox() == [(second, None)]
    j.published("t1")  # the second result's ack, pending, then a third run ends
    third = result_doc(task, "ok", attempts=3, result=3)
    j.finish("t1", "ok", third, [])
    j.commit()
    assert j.outbox() == [(third, None)]
    j.close()
    j = Journal(where)
    assert j.outbox() == [(third, None)]
    j.close()


def test_attempts_staged_with_the_admission_are_written_with_the_row(where: Path | str) -> None:
    """A task admitted and dispatched in one commit is inserted with its attempt count;
    one dispatched again later, or whose row already existed, is updated."""
    j = Journal(where)

    def task(i: str) -> Task:
        return Task(id=i, type="compute", lane="normal", input="1", submitted_at=1.0)

    j.add(task("a"), None)
    j.add(task("b"), None)
    j.dispatched("a", 1)
    j.dispatched("a", 2)  # the last attempt of the turn wins
    j.commit()
    j.add(task("c"), None)
    j.dispatched("b", 1)  # b's row is from the commit before
    j.dispatched("c", 1)
    j.commit()
    j.add(task("a"), None)  # already there: the insert is ignored, the update still made
    j.dispatched("a", 3)
    j.commit()
    j.close()
    again = Journal(where)
    got = {t.id: attempts for _seq, t, attempts, _r, _h in again.open_tasks("normal")}
    assert got == {"a": 3, "b": 1, "c": 1}


def test_lookups_go_in_chunks_and_find_every_known_id(where: Path | str) -> None:
    j = Journal(where)
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
    checkpointer = j.checkpointer
    wait_until(lambda: checkpointer.checkpoints >= 2, what="two background checkpoints")
    # what the checkpointer copied is in the database file itself, not only in the WAL
    assert path.stat().st_size > 3000 * 3000
    j.close()
    assert not j.checkpointer.is_alive()


def _finished(j: Journal, task_id: str, finished_at: float, *, publish: bool = True) -> None:
    task = Task(id=task_id, type="compute", lane="normal", input="1", submitted_at=1.0)
    j.add(task, None)
    j.commit()
    doc = result_doc(task, "ok", attempts=1, result=1, finished_at=finished_at)
    j.finish(task_id, "ok", doc, [])
    if publish:
        j.published(task_id)
    j.commit()


def test_pruning_keeps_open_tasks_the_outbox_and_dead_letters(where: Path | str) -> None:
    j = Journal(where)
    _finished(j, "old", 100.0)
    _finished(j, "old-unpublished", 100.0, publish=False)
    _finished(j, "old-dead", 100.0)
    j.dead_letter("old-dead", "normal", "poison", {"id": "old-dead"})
    _finished(j, "recent", 300.0)
    j.add(Task(id="open", type="compute", lane="normal", input="1", submitted_at=1.0), None)
    j.commit()
    assert prune(j.db, 200.0, batch=1) == 1  # one batch of one, then a batch of none
    left = sorted(j.lookup_many(["old", "old-unpublished", "old-dead", "recent", "open"]))
    assert left == ["old-dead", "old-unpublished", "open", "recent"]
    assert j.results(["old"]) == []


def test_pruning_uses_its_index(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.db")
    plan = j.db.execute(
        "EXPLAIN QUERY PLAN SELECT seq FROM tasks WHERE finished_at < ? AND published = 1",
        (1.0,),
    ).fetchall()
    assert "tasks_finished" in str(plan), plan
    assert "finished_at" in PRUNE_INDEX


def test_the_file_stops_growing_under_a_steady_stream_with_retention(tmp_path: Path) -> None:
    """Rounds of tasks run to the end and are pruned by the background thread: SQLite
    reuses the freed pages, so the page count reaches a plateau instead of growing."""
    path = tmp_path / "journal.db"
    j = Journal(path, fsync=False, checkpointer=True, retention=0.001)
    checkpointer = j.checkpointer
    assert checkpointer is not None
    body = "x" * 500
    pages: list[int] = []
    free_seen = 0
    for r in range(12):
        for i in range(300):
            task = Task(id=f"r{r}-{i}", type="compute", lane="normal", input=body, submitted_at=1.0)
            j.add(task, None)
        j.commit()
        for i in range(300):
            task_id = f"r{r}-{i}"
            task = Task(id=task_id, type="compute", lane="normal", input=body, submitted_at=1.0)
            j.finish(task_id, "ok", result_doc(task, "ok", attempts=1, result=body), [])
            j.published(task_id)
        j.commit()
        wait_until(
            lambda: j.db.execute("SELECT count(*) FROM tasks").fetchone() == (0,),
            what="the round's tasks to be pruned",
        )
        pages.append(j.db.execute("PRAGMA page_count").fetchone()[0])
        free_seen = max(free_seen, j.db.execute("PRAGMA freelist_count").fetchone()[0])
    assert checkpointer.pruned == 12 * 300
    assert free_seen > 0, "pruning freed no page"
    # after a round or two the freed pages hold the next round: no growth at all
    assert pages[-1] == pages[3] and max(pages) == pages[3], pages
    # against what was written (a body and a result of 500 bytes per task): a few rounds' worth
    page_size = j.db.execute("PRAGMA page_size").fetchone()[0]
    assert pages[-1] * page_size < 12 * 300 * 1000 / 4, pages
    j.close()


def test_without_retention_nothing_is_pruned(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.db", fsync=False, checkpointer=True)
    _finished(j, "old", 1.0)
    checkpointer = j.checkpointer
    assert checkpointer is not None
    wait_until(lambda: checkpointer.checkpoints >= 2, what="two background checkpoints")
    assert checkpointer.prunes == 0
    assert list(j.lookup_many(["old"])) == ["old"]
    j.close()


def test_an_id_past_the_retention_is_new_before_it_is_pruned(where: Path | str) -> None:
    j = Journal(where, retention=100.0)
    now = time.time()
    _finished(j, "old", now - 200)
    _finished(j, "recent", now - 50)
    _finished(j, "old-dead", now - 200)
    j.dead_letter("old-dead", "normal", "poison", {"id": "old-dead"})
    j.commit()
    assert sorted(j.lookup_many(["old", "recent", "old-dead"])) == ["old-dead", "recent"]
    # submitted again, "old" gets a fresh row: queued, nothing of the old task left
    j.add(Task(id="old", type="compute", lane="normal", input="2", submitted_at=now), None)
    j.commit()
    assert j.lookup_many(["old"]) == {"old": ("queued", None)}
    assert j.results(["old"]) == []
    assert [t.input for _, t, *_ in j.open_tasks("normal")] == ["2"]


def test_every_method_reads_back_what_was_written(where: Path | str) -> None:
    """The journal's interface, on each backend: dead letters and their replay, routes,
    schedule slots, open tasks by lane, results, purges."""
    j = Journal(where)
    a = Task(id="a", type="compute", lane="high", input="1", submitted_at=1.5)
    b = Task(id="b", type="compute", lane="normal", input="2", submitted_at=2.5)
    j.add(a, None)
    j.add(b, ["r/t", "00ff"])
    j.add(a, None)  # a known id is ignored, not an error
    j.dispatched("a", 3)
    j.schedule_slot("nightly", 86_400.0)
    j.schedule_slot("nightly", 172_800.0)  # replaces
    j.commit()
    assert sorted(j.lanes_with_open()) == ["high", "normal"]
    [(seq, task, attempts, reply, history)] = j.open_tasks("normal")
    assert (task.id, attempts, reply, history) == ("b", 0, ["r/t", "00ff"], [])
    assert j.open_tasks("high")[0][2] == 3
    assert j.open_task("a") == a and j.open_task("nope") is None
    assert j.schedule_slots() == {"nightly": 172_800.0}
    doc = result_doc(a, "failed", attempts=3, error="boom", finished_at=10.25)
    j.finish("a", "failed", doc, [{"attempt": 3}])
    j.dead_letter("a", "high", "boom", {"id": "a", "reason": "boom"})
    j.dead_letter("a", "high", "boom again", {"id": "a", "reason": "boom again"})
    assert j.staged_result("a") == doc and j.open_task("a") is None
    j.commit()
    assert j.results(["a", "b"]) == [doc] and j.results() == [doc]
    assert j.finished(["a", "b"]) == {"a"}
    assert j.dead_letters() == [{"id": "a", "reason": "boom again"}]
    assert j.lookup_many(["a"]) == {"a": ("failed", doc)}
    j.requeue("a", 3, [{"attempt": 3}, {"replayed_from": 3}])
    j.commit()
    assert j.dead_letters("a") == [] and j.lookup_many(["a"]) == {"a": ("queued", None)}
    j.handed_back("b", [{"handed_back": 1}])
    j.commit()
    assert j.open_tasks("normal")[0][4] == [{"handed_back": 1}]
    j.save_route("r1", b'{"match": "x"}', 5.5)
    j.save_route("r1", b'{"match": "y"}', 6.5)
    j.save_route("r2", b"{}", 7.0)
    j.delete_route("r2")
    assert j.routes() == [("r1", b'{"match": "y"}', 6.5)]
    j.dead_letter("b", "normal", "x", {"id": "b"})
    j.dead_letter("c", "normal", "y", {"id": "c"})
    j.commit()
    assert j.purge_dead(["b"]) == 1 and j.purge_dead() == 1 and j.dead_letters() == []
    j.add_group("g2", b'{"members": 2}', None, 9.0)
    j.add_group("g1", b'{"members": 1}', b'["r/g", "01"]', 8.0)
    j.add_group("g1", b"{}", None, 8.5)  # a known group is ignored
    j.commit()
    assert j.open_groups() == [
        ("g1", b'{"members": 1}', b'["r/g", "01"]'),
        ("g2", b'{"members": 2}', None),
    ]
    j.end_group("g1")
    j.commit()
    assert [g for g, *_ in j.open_groups()] == ["g2"]
    j.close()
    # a second opening finds the same state (and its schema already there)
    again = Journal(where)
    assert [t.id for _, t, *_ in again.open_tasks("high")] == ["a"]
    assert again.routes() == [("r1", b'{"match": "y"}', 6.5)]
    assert [g for g, *_ in again.open_groups()] == ["g2"]
    again.close()
