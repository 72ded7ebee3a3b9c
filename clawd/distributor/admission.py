"""Admission: submissions in, parsed by the envelope parser, deduplicated by id, queued.

A turn's valid submissions are collected and admitted together after the turn's messages
are handled, with one journal lookup for all the ids their producers chose: a known id
is not run again, its stored outcome is published again. Whether the producer chose the
id is what the decoded envelope says, however the key was spelt.
"""

from __future__ import annotations

from typing import Any

from clawd import clock
from clawd.distributor.metrics import Metrics
from clawd.distributor.outbox import Outbox
from clawd.distributor.tasks import TaskTable
from clawd.envelope import Rejected, Task, encode, parse_item
from clawd.message import Message


class Admission:
    """Parses submissions as they arrive and admits them once per turn."""

    def __init__(self, tasks: TaskTable, outbox: Outbox, metrics: Metrics) -> None:
        self.tasks = tasks
        self.outbox = outbox
        self.metrics = metrics
        #: the turn's valid submissions: (task or group, reply, id chosen by the producer)
        self.pending: list[tuple[Any, list[Any] | None, bool]] = []
        #: the group table (clawd.distributor.groups); set by the core
        self.flows: Any = None

    def submission(
        self, msg: Message, levels: list[str], *, max_payload: int, known_types: Any
    ) -> None:
        """A message on ``<prefix>/tasks/...``: a task to admit, or a rejection."""
        self.outbox.ack(msg.mid, msg.qos)
        try:
            task, chosen = parse_item(
                levels,
                msg.payload,
                lanes=self.tasks.lanes.lanes,
                max_payload=max_payload,
                expiry=msg.expiry,
                known_types=known_types,
            )
        except Rejected as exc:
            self.metrics.count("rejected")
            self.outbox.error(exc.error, msg.topic, msg.payload, exc.task_id)
            if exc.task_id:
                self.outbox.publish(
                    self.outbox.topics.result(exc.task_id),
                    encode(_rejected_doc(exc.task_id, levels, exc.error)),
                )
            return
        reply = (
            [msg.response_topic, msg.correlation.hex() if msg.correlation else None]
            if msg.response_topic
            else None
        )
        # an id clawd generated is new by construction: only a producer's id is looked up
        self.pending.append((task, reply, chosen))

    def admit(self) -> None:
        """Queue the turn's valid submissions, in order; a known id is not run again."""
        subs, self.pending = self.pending, []
        tasks = self.tasks
        entries = tasks.entries
        known = tasks.journal.lookup_many(
            [t.id for t, _, chosen in subs if chosen and t.id not in entries]
        )
        admitted: set[str] = set()
        groups = self.flows.open if self.flows is not None else {}
        for task, reply, chosen in subs:
            if task.id in entries or task.id in groups or (chosen and task.id in admitted):
                continue  # already open: it will produce its one result
            done = known.get(task.id)
            if done is not None:
                state, result = done
                if result is not None:  # idempotent: the stored outcome stands
                    self.outbox.result(result, reply, track=False)
                continue
            if chosen:
                admitted.add(task.id)
            if not isinstance(task, Task):
                self.flows.admit(task, reply)
                continue
            tasks.admit(task, reply)
            self.metrics.count("submitted")


def _rejected_doc(task_id: str, levels: list[str], error: str) -> dict[str, Any]:
    now = clock.wall()
    return {
        "id": task_id,
        "type": levels[2] if len(levels) > 2 else None,
        "lane": levels[1] if len(levels) > 1 else None,
        "status": "rejected",
        "error": error,
        "attempts": 0,
        "submitted_at": now,
        "finished_at": now,
        "duration_ms": 0.0,
    }
