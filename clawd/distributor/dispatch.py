"""The dispatch pass: which queued task goes to which worker, within the workers' credit.

Lanes are served in the scheduler's order; in a lane the first of the next ``SCAN`` tasks
that some worker can take goes (a task nobody can take now does not block the lane). A
worker never gets more than its free slots, and what one worker gets in a turn travels
in one message.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from clawd import clock
from clawd.distributor.entry import Entry
from clawd.distributor.registry import WorkerState
from clawd.envelope import Task, encode
from clawd.strategy import TaskView

if TYPE_CHECKING:
    from clawd.distributor.core import Distributor

log = logging.getLogger("clawd.distributor")


#: how many queued tasks of one lane are scanned for one that some worker can take
SCAN = 64
#: a lane keeps at most this many tasks in memory; the rest are paged from the journal
WINDOW = 20_000


def run(d: Distributor) -> None:
    if not d.registry.free_slots():
        return
    batches: dict[str, list[Task]] = defaultdict(list)
    blocked: set[str] = set()
    now = clock.monotonic()
    wall = clock.wall()
    lease = now + d.config.distributor.liveness_timeout
    while True:
        order = d.lanes.candidates(exclude=blocked)
        if not order:
            break
        lane = order[0]
        picked: tuple[int, Entry, list[WorkerState] | None, str] | None = None
        for i, e in enumerate(lane.queue):
            if i >= SCAN:
                break
            t = e.task
            if t.expires_at is not None and t.expires_at < wall:
                picked = (i, e, None, "expired")
                break
            if not d.breakers.type_allows(t.type):
                # the whole type is failing: hold its tasks rather than burn attempts
                if now - e.enqueued_at > d.config.breaker_config(t.type).hold_seconds:
                    picked = (i, e, None, "circuit_open")
                    break
                continue
            cands = [
                w
                for w in d.registry.candidates(t.type, t.lane, t.requires)
                if d.breakers.allows(w.id, t.type)
            ]
            if e.lost:
                # a suspect of killing its worker runs alone, so that if it does it
                # again no innocent task beside it is blamed (and dead-lettered)
                cands = [w for w in cands if not w.running]
            if cands:
                picked = (i, e, cands, "")
                break
        if picked is None:
            blocked.add(lane.name)
            continue
        i, e, found, why = picked
        del lane.queue[i]
        if found is None:
            if why == "expired":
                e.attempt += 1
                d._dead(e, why, "the task's time to live ran out before it started")
            else:
                d._dead(
                    e,
                    why,
                    f"the circuit breaker of type {e.task.type!r} stayed "
                    "open longer than hold_seconds",
                )
            continue
        d.lanes.served(lane)
        t = e.task
        view = TaskView(t.id, t.type, t.lane, tuple(t.requires), t.cost, t.meta or {})
        w = d.strategy.choose(view, found) if len(found) > 1 else found[0]
        e.attempt += 1
        e.state = "running"
        e.worker = w.id
        d.breakers.dispatched(w.id, t.type)
        e.lease_until = lease
        e.dispatched_at = wall
        w.running[t.id] = e.attempt
        w.solo = t.id if e.lost else None
        t.attempt = e.attempt
        d.journal.dispatched(t.id, e.attempt)
        batches[w.id].append(t)
        d.metrics.dispatched(t.lane, now - e.enqueued_at)
        if lane.spilled and len(lane.queue) < WINDOW // 2:
            page_in(d, lane)
        if not d.registry.free_slots():
            break
    for worker_id, tasks in batches.items():
        d._publish(d.topics.dispatch(worker_id), encode({"tasks": tasks}))


def page_in(d: Distributor, lane: Any) -> int:
    rows = d.journal.open_tasks(lane.name, after=lane.cursor, limit=WINDOW // 2)
    for seq, task, attempts, reply, history in rows:
        lane.cursor = seq
        if task.id in d.entries:
            continue
        e = Entry(task, reply, attempts, history, seq)
        d.entries[task.id] = e
        d.lanes.push(e)
    lane.spilled = len(rows) >= WINDOW // 2
    return len(rows)
