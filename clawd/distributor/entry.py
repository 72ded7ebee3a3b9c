"""The distributor's in-memory record of one open task."""

from __future__ import annotations

from typing import Any

from clawd import clock
from clawd.envelope import Task


class Entry:
    """One accepted, not yet terminal task."""

    __slots__ = (
        "task",
        "reply",
        "attempt",
        "history",
        "state",
        "worker",
        "lease_until",
        "enqueued_at",
        "seq",
        "lost",
        "dispatched_at",
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
        self.attempt = attempt
        self.history: list[dict[str, Any]] = history if history is not None else []
        self.state = "queued"  # queued | delayed | running
        self.worker: str | None = None
        self.lease_until = 0.0
        self.enqueued_at = clock.monotonic()
        self.seq = seq
        #: times the worker running this task vanished (poison detection)
        self.lost = 0
        #: wall-clock time of the latest dispatch (the result's ``started_at``)
        self.dispatched_at = 0.0


def attempt_record(
    e: Entry, worker: str | None, status: str, error: str | None = None
) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "attempt": e.attempt,
        "worker": worker,
        "status": status,
        "at": clock.wall(),
    }
    if error:
        rec["error"] = error
    return rec
