"""A lane's backlog beyond the in-memory window lives only in the journal and is paged
back in order: lane priority and order hold, and a restart loads it the same way."""

from __future__ import annotations

from pathlib import Path

import pytest

from clawd.distributor import dispatch, tasks
from clawd.distributor.lanes import LaneScheduler
from clawd.distributor.tasks import TaskTable
from clawd.envelope import Task, result_doc
from clawd.journal import Journal

WINDOW = 10
PER_LANE = 40


@pytest.fixture(autouse=True)
def small_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks, "WINDOW", WINDOW)
    monkeypatch.setattr(dispatch, "WINDOW", WINDOW)


def table(path: Path) -> TaskTable:
    return TaskTable(Journal(path, fsync=False), LaneScheduler({"high": 8, "normal": 1}))


def fill(t: TaskTable) -> None:
    """The low lane's backlog first, then the high lane's: both spill."""
    for lane in ("normal", "high"):
        for i in range(PER_LANE):
            task = Task(id=f"{lane}-{i}", type="compute", lane=lane, input="1", submitted_at=1.0)
            t.admit(task, None)
    t.journal.commit()


def serve(t: TaskTable, n: int | None = None) -> list[str]:
    """Take tasks the way the dispatch pass does (next lane, page in when a spilled lane
    runs low) and end each at once, all in one turn (one commit at the end); the ids in
    the order they were served. A task ended in the turn must not be paged in again."""
    out: list[str] = []
    while n is None or len(out) < n:
        lane = t.lanes.first()
        if lane is None:
            break
        e = t.take(lane, 0)
        t.lanes.served(lane)
        out.append(e.task.id)
        if lane.spilled and len(lane.queue) < WINDOW // 2:
            t.page_in(lane)
        # ended in the same turn, before the turn's commit (as a quick task's outcome is)
        t.finish(e, "ok", result_doc(e.task, "ok", attempts=1, result=1))
    t.journal.commit()
    return out


def in_lane(ids: list[str], lane: str) -> list[int]:
    return [int(i.rsplit("-", 1)[1]) for i in ids if i.startswith(lane + "-")]


def test_a_spilled_backlog_stays_within_the_window_and_keeps_priority_and_order(
    tmp_path: Path,
) -> None:
    t = table(tmp_path / "journal.db")
    fill(t)
    lanes = t.lanes.lanes
    assert lanes["normal"].spilled and lanes["high"].spilled
    assert len(lanes["normal"].queue) == WINDOW and len(lanes["high"].queue) == WINDOW
    assert len(t.entries) == 2 * WINDOW  # the other 60 tasks are only in the journal
    served = serve(t)
    assert len(served) == 2 * PER_LANE == len(set(served))
    assert in_lane(served, "high") == list(range(PER_LANE))  # submission order
    assert in_lane(served, "normal") == list(range(PER_LANE))
    # weights 8:1 across the page boundaries: the high lane takes 8 of every 9 slots
    assert sum(i.startswith("high") for i in served[:36]) == 32
    assert max(len(ln.queue) for ln in lanes.values()) <= WINDOW


def test_a_spilled_backlog_survives_a_restart_in_order(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    t = table(path)
    fill(t)
    before = serve(t, 25)
    t.journal.close()

    again = table(path)
    assert again.recover() == 2 * (WINDOW // 2)  # one page per lane, not the backlog
    assert all(ln.spilled for ln in again.lanes.lanes.values())
    after = serve(again)
    assert not set(before) & set(after)  # nothing served twice
    for lane in ("high", "normal"):
        assert in_lane(before + after, lane) == list(range(PER_LANE))
    assert sum(i.startswith("high") for i in after[:9]) == 8
