"""The distributor's in-memory record of one open task, and the states it moves through.

Only :class:`clawd.distributor.tasks.TaskTable` changes an entry's ``state``, ``attempt``
and ``spent``; everything else reads them.
"""

from __future__ import annotations

import enum
from typing import Any

from clawd import clock
from clawd.envelope import Task


class State(enum.Enum):
    """Where an accepted task is. ``DONE`` entries have left the table."""

    QUEUED = "queued"
    DELAYED = "delayed"
    RUNNING = "running"
    DONE = "done"


class Entry:
    """One accepted, not yet terminal task."""

    __slots__ = (
        "task",
        "reply",
        "attempt",
        "spent",
        "history",
        "state",
        "lease_until",
        "enqueued_at",
        "seq",
        "lost",
        "dispatched_at",
        "ready_at",
        "held",
    )

    def __init__(
        self,
        task: Task,
        reply: list[Any] | None = None,
        attempt: int = 0,
        history: list[dict[str, Any]] | None = None,
        seq: int = 0,
    ) -> None:
        self.task = task
        self.reply = reply
        #: the fencing token: the number of the latest dispatch; it only ever goes up
        self.attempt = attempt
        self.history: list[dict[str, Any]] = history if history is not None else []
        #: dispatches that count against max_attempts (a hand-back does not)
        self.spent = spent_attempts(attempt, history) if history else attempt
        self.state = State.QUEUED
        self.lease_until = 0.0
        self.enqueued_at = clock.monotonic()
        self.seq = seq
        #: times the worker running this task vanished (poison detection)
        self.lost = 0
        #: wall-clock time of the latest dispatch (the result's ``started_at``)
        self.dispatched_at = 0.0
        #: monotonic time a delayed entry becomes queued again
        self.ready_at = 0.0
        #: delayed after a restart because its latest dispatch may still be running
        self.held = False


def spent_attempts(fence: int, history: list[dict[str, Any]]) -> int:
    """Attempts that counted, from the fencing token and the journaled history: every
    dispatch since the last replay, less the ones handed back."""
    base = handed = 0
    for rec in history:
        status = rec.get("status")
        if status == "replayed":
            base, handed = int(rec.get("attempt") or 0), 0
        elif status == "handback":
            handed += 1
    return max(0, fence - base - handed)


def attempt_record(
    e: Entry, worker: str | None, status: str, error: str | None = None
) -> dict[str, Any]:
    """One line of a task's attempt history."""
    rec: dict[str, Any] = {
        "attempt": e.attempt,
        "worker": worker,
        "status": status,
        "at": clock.wall(),
    }
    if error:
        rec["error"] = error
    return rec
