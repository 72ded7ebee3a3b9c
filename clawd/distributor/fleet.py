"""The fleet: the workers the distributor knows, what each runs (its grants), its liveness.

A grant is recorded once, here: ``WorkerState.grants`` maps a task id to the entry a
worker was given; a task is RUNNING exactly while one worker holds its grant. The
worker's ``in_flight`` follows its grants as they change, so a strategy always sees
live load. Workers that have been offline for ``forget_after`` seconds are forgotten.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from clawd import clock
from clawd.strategy import WorkerView

if TYPE_CHECKING:
    from clawd.distributor.entry import Entry
    from clawd.wire import WorkerStatus

log = logging.getLogger("clawd.distributor")


class WorkerState(WorkerView):
    """A worker: what it announced, what it runs now, and when it was last heard."""

    def __init__(self, id: str) -> None:
        super().__init__(id=id, capacity=0)
        self.online = False
        self.session = ""
        self.last_seen = 0.0
        #: task id -> the entry of everything dispatched to it and not yet ended
        self.grants: dict[str, Entry] = {}
        self.status: WorkerStatus | None = None
        self.done = 0
        self.busy_seconds = 0.0
        #: declared lost for heartbeat silence; its next report brings it back
        self.silent = False
        #: a suspected poison task running here alone: nothing else is granted beside it
        self.solo: str | None = None
        #: monotonic time it went offline (forgotten ``forget_after`` later)
        self.offline_since = clock.monotonic()

    def update(self, status: WorkerStatus) -> None:
        self.status = status
        self.capacity = status.capacity
        self.handlers = frozenset(status.handlers)
        self.capabilities = frozenset(status.capabilities)
        self.lanes = frozenset(status.lanes)
        self.last_seen = clock.monotonic()

    def set_online(self, online: bool) -> None:
        if online == self.online:
            return
        self.online = online
        if not online:
            self.offline_since = clock.monotonic()

    def observe(self, type_: str, seconds: float, alpha: float = 0.3) -> None:
        """Fold one task time into the per-type EWMA that ``fastest`` routes on."""
        prior = self.ewma.get(type_)
        self.ewma[type_] = seconds if prior is None else prior + alpha * (seconds - prior)
        self.done += 1
        self.busy_seconds += seconds

    def can_take(self, type_: str, lane: str, requires: list[str]) -> bool:
        if self.solo is not None and self.solo in self.grants:
            return False
        return (
            self.online
            and self.in_flight < self.capacity
            and type_ in self.handlers
            and (not self.lanes or lane in self.lanes)
            and (not requires or self.capabilities.issuperset(requires))
        )


class Fleet:
    """All workers heard from and not yet forgotten, and every task type ever announced."""

    def __init__(self) -> None:
        self.workers: dict[str, WorkerState] = {}
        #: task types any worker announced, kept after it is forgotten: they say what exists
        self.types: set[str] = set()

    def get(self, worker_id: str) -> WorkerState:
        w = self.workers.get(worker_id)
        if w is None:
            w = self.workers[worker_id] = WorkerState(worker_id)
        return w

    def announce(self, w: WorkerState, status: WorkerStatus) -> bool:
        """Take a worker's status; True when it brought a task type not seen before."""
        w.update(status)
        new = not w.handlers <= self.types
        self.types |= w.handlers
        return new

    def online(self) -> list[WorkerState]:
        return [w for w in self.workers.values() if w.online]

    def free_slots(self) -> int:
        return sum(max(0, w.capacity - w.in_flight) for w in self.workers.values() if w.online)

    def candidates(self, type_: str, lane: str, requires: list[str]) -> list[WorkerState]:
        return [w for w in self.workers.values() if w.can_take(type_, lane, requires)]

    def in_flight(self) -> int:
        return sum(w.in_flight for w in self.workers.values())

    # -- grants ----------------------------------------------------------------------------

    def grant(self, w: WorkerState, e: Entry) -> None:
        """``w`` was given ``e`` (at the entry's current fencing token)."""
        w.grants[e.task.id] = e
        w.in_flight = len(w.grants)
        w.solo = e.task.id if e.lost else None

    def release(self, w: WorkerState, task_id: str, attempt: int) -> Entry | None:
        """End ``w``'s grant of ``task_id`` at token ``attempt``; the entry, or None when
        the worker holds no such grant (a superseded or repeated report)."""
        e = w.grants.get(task_id)
        if e is None or e.attempt != attempt:
            return None
        del w.grants[task_id]
        w.in_flight = len(w.grants)
        return e

    def release_all(self, w: WorkerState) -> list[Entry]:
        """End every grant of ``w`` (it is gone); the entries it held."""
        held = list(w.grants.values())
        w.grants.clear()
        w.in_flight = 0
        return held

    def holder(self, task_id: str) -> WorkerState | None:
        """The worker running ``task_id`` now, if any."""
        for w in self.workers.values():
            if task_id in w.grants:
                return w
        return None

    # -- forgetting ------------------------------------------------------------------------

    def departed(self, now: float, forget_after: float) -> list[str]:
        """Workers offline, holding nothing, for at least ``forget_after`` seconds."""
        cutoff = now - forget_after
        return [
            w.id
            for w in self.workers.values()
            if not w.online and not w.grants and w.offline_since <= cutoff
        ]

    def forget(self, worker_id: str) -> None:
        self.workers.pop(worker_id, None)
