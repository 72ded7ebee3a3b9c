"""Cancel: an open task ends with ``status: "cancelled"``, whatever state it is in.

A queued or delayed task leaves its queue; a running one loses its grant at once and its
worker is told to stop it (on its dispatch topic, with the dispatch's fencing token), so
an outcome the worker sends anyway is about a dispatch that no longer counts. The task
table and this loop's single thread make the race with completion simple: whichever of
the cancel and the outcome is handled first ends the task, and the other finds it gone.
"""

from __future__ import annotations

import logging
from typing import Any

from clawd.distributor.entry import Entry, State, attempt_record
from clawd.distributor.fleet import Fleet
from clawd.distributor.lifecycle import Lifecycle
from clawd.distributor.tasks import TaskTable
from clawd.envelope import encode

log = logging.getLogger("clawd.distributor")

#: the error a cancelled task's result carries
REASON = "cancelled on request"


def cancel(ids: list[str], *, tasks: TaskTable, fleet: Fleet, life: Lifecycle) -> dict[str, Any]:
    """Cancel each of ``ids``; the answer says what became of each one:
    ``{"cancelled": [...], "finished": {id: status}, "unknown": [...]}``."""
    answer: dict[str, Any] = {"cancelled": [], "finished": {}, "unknown": []}
    flows = life.flows
    for task_id in dict.fromkeys(ids):
        if flows is not None and task_id in flows.open:
            # a group: its running members and its then, then the group itself
            flows.cancel(task_id, lambda i: _cancel_one(i, tasks=tasks, fleet=fleet, life=life))
            answer["cancelled"].append(task_id)
            continue
        e = tasks.get(task_id) or tasks.load_open(task_id)
        if e is not None:
            _end(e, tasks=tasks, fleet=fleet, life=life)
            answer["cancelled"].append(task_id)
            continue
        known = tasks.journal.lookup_many([task_id]).get(task_id)
        result = tasks.journal.staged_result(task_id) or (known[1] if known else None)
        if result is not None:
            answer["finished"][task_id] = result.get("status", "done")
        else:
            answer["unknown"].append(task_id)
    return answer


def _cancel_one(task_id: str, *, tasks: TaskTable, fleet: Fleet, life: Lifecycle) -> None:
    e = tasks.get(task_id) or tasks.load_open(task_id)
    if e is not None:
        _end(e, tasks=tasks, fleet=fleet, life=life)


def _end(e: Entry, *, tasks: TaskTable, fleet: Fleet, life: Lifecycle) -> None:
    worker = None
    if e.state is State.RUNNING:
        w = fleet.holder(e.task.id)
        if w is not None:
            worker = w.id
            fleet.release(w, e.task.id, e.attempt)
            life.breakers.cancelled(w.id, e.task.type)
            # the worker stops it: kills an exec command's process group, or abandons
            # an in-process handler's thread and frees its slot
            life.outbox.publish(
                life.topics.dispatch(w.id),
                encode(
                    {"tasks": [], "cancel": [[e.task.id, e.attempt]], "epoch": life.outbox.epoch}
                ),
            )
        e.history.append(attempt_record(e, worker, "cancelled"))
    else:
        tasks.withdraw(e)
    log.info("task %s cancelled (was %s)", e.task.id, e.state.value)
    life.finish(e, "cancelled", error=REASON, worker=worker)
