"""The one module that reads (and, to plant bugs, patches) the distributor's internals.

Everything else in the simulator sees the distributor only through its outer API; the
checks here look inside: a task never both queued and running, the journal and memory
agreeing after a recovery, nothing left open once the run has settled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from clawd.distributor.entry import State
from clawd.distributor.lifecycle import Lifecycle

#: bugs :func:`plant` can put in, to show the simulator catches them
PLANTS = ("fencing", "requeue", "epoch", "rate", "early")


def consistency(d: Any) -> list[str]:
    """A task is queued in exactly one lane or granted to exactly one worker, never both."""
    problems: list[str] = []
    queued: dict[str, int] = {}
    for lane in d.lanes.lanes.values():
        parked = [e for waiting in lane.parked.values() for e in waiting]
        for e in [*lane.queue, *parked]:
            queued[e.task.id] = queued.get(e.task.id, 0) + 1
            if e.state is not State.QUEUED:
                problems.append(f"task {e.task.id} is in lane {lane.name} but {e.state.value}")
    for task_id, n in queued.items():
        if n > 1:
            problems.append(f"task {task_id} is queued {n} times")
    holders: dict[str, list[str]] = {}
    for w in d.fleet.workers.values():
        for task_id, e in w.grants.items():
            holders.setdefault(task_id, []).append(w.id)
            if d.entries.get(task_id) is not e:
                problems.append(f"{w.id} holds a grant of {task_id}, which is not that open task")
    for task_id, e in d.entries.items():
        held = holders.get(task_id, [])
        if e.state is State.RUNNING:
            if task_id in queued:
                problems.append(f"task {task_id} is both queued and running on {held}")
            if len(held) != 1:
                problems.append(f"task {task_id} runs attempt {e.attempt}, granted to {held}")
        elif held:
            problems.append(f"task {task_id} is {e.state.value} but granted to {held}")
    return problems


def rules(d: Any) -> set[str]:
    """The ids of the routing rules the distributor has in force."""
    return set(d.routes.rules)


def breaker_state(d: Any, key: str) -> str:
    """The state of the distributor's breaker ``key`` ("closed" when it has none)."""
    if key.startswith("eject/"):
        return "ejected" if key[len("eject/") :] in d.breakers._until else "active"
    b = d.breakers._all.get(key)
    return "closed" if b is None else str(b.state)


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
    if d.tasks.delayed:
        problems.append(f"{len(d.tasks.delayed)} task(s) still waiting for a retry")
    still = journal_open(d)
    if still:
        problems.append(f"{len(still)} task(s) still open in the journal: {sorted(still)[:5]}")
    # (the outbox leaves out results whose published mark waits for the next commit)
    unpublished = len(d.journal.outbox())
    if unpublished:
        problems.append(f"{unpublished} result(s) never acknowledged by the broker")
    return problems


def online(d: Any) -> set[str]:
    """The workers the distributor believes online."""
    return {w.id for w in d.fleet.online()}


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
    forgotten, not requeued, when it is lost. ``epoch``: a shared journal accepts a
    deposed distributor's writes, as if the epoch check were missing (runs two
    distributors). ``rate``: a dispatch takes no token from its rate limits. ``early``: a
    delayed task is queued at once, its time ignored.
    """
    if bug is None:
        yield
        return
    real: Any
    if bug == "fencing":
        real = Lifecycle.outcome

        def outcome(self: Lifecycle, w: Any, o: Any) -> None:
            # as if the (task, attempt, worker) check were missing: whoever reports an
            # attempt of an open task is taken to hold its current dispatch
            e = self.tasks.get(o.id)
            if e is not None and e.state in (State.RUNNING, State.QUEUED):
                holder = self.fleet.holder(o.id)
                if holder is not None:
                    self.fleet.release(holder, o.id, e.attempt)
                elif not self.tasks.reclaim(e):
                    return real(self, w, o)
                e.attempt = o.attempt
                self.fleet.grant(w, e)
            return real(self, w, o)

        patched: tuple[Any, str, Any, Any] = (Lifecycle, "outcome", real, outcome)
    elif bug == "requeue":
        real = Lifecycle.lose

        def lose(self: Lifecycle, w: Any, why: str, *, lost: bool) -> None:
            self.fleet.release_all(w)  # forgotten, not requeued

        patched = (Lifecycle, "lose", real, lose)
    elif bug == "epoch":
        from clawd.sim.ha import SimLeadership

        real = SimLeadership.fence

        def fence(self: SimLeadership, conn: Any = None) -> None:
            pass  # as if the epoch were never compared

        patched = (SimLeadership, "fence", real, fence)
    elif bug == "rate":
        from clawd.distributor.rates import RateLimits

        real = RateLimits.take

        def take(self: RateLimits, type_name: str, rule: Any, now: float) -> None:
            return None  # a dispatch that takes no token: the bucket never empties

        patched = (RateLimits, "take", real, take)
    elif bug == "early":
        from clawd.distributor.tasks import TaskTable

        real = TaskTable._place

        def place(self: TaskTable, e: Any) -> None:
            self.lanes.push(e)  # not_before ignored: queued at once

        patched = (TaskTable, "_place", real, place)
    else:
        raise ValueError(f"unknown bug {bug!r} (known: {', '.join(PLANTS)})")
    owner, name, original, replacement = patched
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)
