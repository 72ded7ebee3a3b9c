"""The one module that reads (and, to plant bugs, patches) the distributor's internals.

Everything else in the simulator sees the distributor only through its outer API; the
checks here look inside: a task never both queued and running, the journal and memory
agreeing after a recovery, nothing left open once the run has settled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from clawd.distributor import liveness

#: bugs :func:`plant` can put in, to show the simulator catches them
PLANTS = ("fencing", "requeue")


def consistency(d: Any) -> list[str]:
    """A task is queued in exactly one lane or running on exactly one worker, never both."""
    problems: list[str] = []
    queued: dict[str, int] = {}
    for lane in d.lanes.lanes.values():
        for e in lane.queue:
            queued[e.task.id] = queued.get(e.task.id, 0) + 1
            if e.state != "queued":
                problems.append(f"task {e.task.id} is in lane {lane.name} but {e.state}")
    for task_id, n in queued.items():
        if n > 1:
            problems.append(f"task {task_id} is queued {n} times")
    for task_id, e in d.entries.items():
        if e.state != "running":
            continue
        if task_id in queued:
            problems.append(f"task {task_id} is both queued and running on {e.worker}")
        w = d.registry.workers.get(e.worker or "")
        if w is None or w.running.get(task_id) != e.attempt:
            problems.append(
                f"task {task_id} runs attempt {e.attempt} on {e.worker}, "
                "which does not hold that grant"
            )
    return problems


def journal_open(d: Any) -> dict[str, int]:
    """Open (not terminal) tasks in the journal: id -> attempts."""
    rows = d.journal.db.execute("SELECT id, attempts FROM tasks WHERE state='queued'")
    return dict(rows.fetchall())


def recovery(d: Any, dispatched: dict[str, int]) -> list[str]:
    """Right after ``recover()``: memory holds exactly the journal's open tasks, at the
    attempt the journal has, and no attempt below one already dispatched."""
    problems: list[str] = []
    rows = journal_open(d)
    memory = {task_id: e.attempt for task_id, e in d.entries.items()}
    for task_id in sorted(set(rows) ^ set(memory)):
        where = "journal" if task_id in rows else "memory"
        problems.append(f"after recovery, task {task_id} is open only in the {where}")
    for task_id, attempt in sorted(memory.items()):
        if rows.get(task_id, attempt) != attempt:
            problems.append(
                f"after recovery, task {task_id} is at attempt {attempt} in memory "
                f"but {rows[task_id]} in the journal"
            )
        if attempt < dispatched.get(task_id, 0):
            problems.append(
                f"after recovery, task {task_id} is back at attempt {attempt}, "
                f"below the {dispatched[task_id]} already dispatched"
            )
    return problems


def settled(d: Any) -> list[str]:
    """Once every task has its result: nothing open in memory or in the journal, and
    every result acknowledged by the broker (the outbox is empty)."""
    problems: list[str] = []
    if d.entries:
        problems.append(f"{len(d.entries)} task(s) still open in memory: {sorted(d.entries)[:5]}")
    if d.delayed:
        problems.append(f"{len(d.delayed)} task(s) still waiting for a retry")
    still = journal_open(d)
    if still:
        problems.append(f"{len(still)} task(s) still open in the journal: {sorted(still)[:5]}")
    (unpublished,) = d.journal.db.execute("SELECT count(*) FROM tasks WHERE published=0").fetchone()
    if unpublished:
        problems.append(f"{unpublished} result(s) never acknowledged by the broker")
    return problems


def online(d: Any) -> set[str]:
    """The workers the distributor believes online."""
    return {w.id for w in d.registry.online()}


def journal_results(d: Any) -> dict[str, tuple[str, bytes | None]]:
    rows = d.journal.db.execute("SELECT id, state, result FROM tasks")
    return {task_id: (state, result) for task_id, state, result in rows}


def crash(d: Any) -> None:
    """Drop the distributor as kill -9 would: staged writes never reach the journal."""
    d.journal.db.close()


@contextlib.contextmanager
def plant(bug: str | None) -> Iterator[None]:
    """Run with a bug planted (``None``: without).

    ``fencing``: an outcome is accepted from whichever attempt and worker reports it, as
    if the (task, attempt, worker) check were missing. ``requeue``: a worker's tasks are
    forgotten, not requeued, when it is lost.
    """
    if bug is None:
        yield
        return
    real: Any
    if bug == "fencing":
        real = liveness.outcome

        def outcome(d: Any, w: Any, o: dict[str, Any]) -> None:
            e = d.entries.get(o.get("id"))
            if e is not None:
                if e.state == "queued":
                    lane = d.lanes.lanes[e.task.lane]
                    if e in lane.queue:
                        lane.queue.remove(e)
                e.state, e.attempt, e.worker = "running", o["attempt"], w.id
            real(d, w, o)

        patched: tuple[str, Any, Any] = ("outcome", real, outcome)
    elif bug == "requeue":
        real = liveness.lose_worker

        def lose_worker(d: Any, w: Any, why: str, *, lost: bool) -> None:
            w.running.clear()

        patched = ("lose_worker", real, lose_worker)
    else:
        raise ValueError(f"unknown bug {bug!r} (known: {', '.join(PLANTS)})")
    name, original, replacement = patched
    setattr(liveness, name, replacement)
    try:
        yield
    finally:
        setattr(liveness, name, original)
