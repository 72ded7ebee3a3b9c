"""Operator commands on ``<prefix>/_/control``: replay, purge, ``task`` (where is it) and
``cancel``.

``task`` is a request: the answer goes to the request's MQTT v5 response topic (with its
correlation data), or under MQTT 3.1.1 to the ``reply_to`` topic in its payload, because
only the running distributor knows whether an open task is queued, delayed or running, on
which worker and since when; the journal only knows open or finished.
"""

from __future__ import annotations

import logging
from typing import Any

from clawd.distributor import cancel
from clawd.distributor.fleet import Fleet
from clawd.distributor.lifecycle import Lifecycle
from clawd.distributor.outbox import Outbox
from clawd.distributor.tasks import TaskTable
from clawd.envelope import encode
from clawd.message import Message
from clawd.wire import Control, Unreadable

log = logging.getLogger("clawd.distributor")


def handle(
    cmd: Control,
    msg: Message,
    *,
    tasks: TaskTable,
    fleet: Fleet,
    outbox: Outbox,
    life: Lifecycle | None = None,
) -> None:
    """Carry out one decoded command."""
    journal = tasks.journal
    reply = msg.response_topic or cmd.reply_to
    if cmd.cmd == "replay":
        ids = cmd.ids or [d["id"] for d in journal.dead_letters()]
        for task_id in ids:
            replay(tasks, task_id)
    elif cmd.cmd == "cancel" and life is not None:
        answer = cancel.cancel(cmd.ids or [], tasks=tasks, fleet=fleet, life=life)
        if reply:
            outbox.publish(
                reply,
                encode(answer),
                response_topic=None,
                correlation=msg.correlation,
            )
        missed = [*answer["finished"], *answer["unknown"]]
        if missed:
            outbox.error(_not_cancelled(answer), msg.topic, msg.payload)
    elif cmd.cmd == "purge":
        journal.purge_dead(cmd.ids or None)
    elif cmd.cmd == "task":
        if not reply:
            raise Unreadable(
                'control command "task" needs an MQTT v5 response topic or a "reply_to" topic'
            )
        assert cmd.id is not None
        outbox.publish(
            reply,
            encode(where(cmd.id, tasks=tasks, fleet=fleet, flows=getattr(life, "flows", None))),
            response_topic=None,
            correlation=msg.correlation,
        )


def replay(tasks: TaskTable, task_id: str) -> bool:
    """Put a dead-lettered task back in its lane with fresh attempts."""
    letters = tasks.journal.dead_letters(task_id)
    if not letters or tasks.replay(letters[0]) is None:
        return False
    log.info("replaying dead letter %s", task_id)
    return True


def where(task_id: str, *, tasks: TaskTable, fleet: Fleet, flows: Any = None) -> dict[str, Any]:
    """Where a task is: open (state, worker), finished (its result), or unknown; an
    open group says how far its members are."""
    group = flows.describe(task_id) if flows is not None else None
    if group is not None:
        return group  # type: ignore[no-any-return]
    e = tasks.get(task_id)
    if e is not None:
        doc = tasks.describe(e)
        w = fleet.holder(task_id)
        if w is not None:
            doc["worker"] = w.id
        return doc
    known = tasks.journal.lookup_many([task_id]).get(task_id)
    if known is None:
        return {"id": task_id, "state": "unknown"}
    state, result = known
    if result is None:
        # open in the journal but not in memory: part of a lane's backlog still on disk
        return {"id": task_id, "state": "queued"}
    return {"id": task_id, "state": "done", "result": result}


def _not_cancelled(answer: dict[str, Any]) -> str:
    """One line naming the ids a cancel could not end, and why."""
    parts = [f"{i} already finished ({s})" for i, s in answer["finished"].items()]
    parts += [f"{i} is unknown" for i in answer["unknown"]]
    return "cancel: " + "; ".join(parts)
