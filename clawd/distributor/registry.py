"""The workers the distributor knows, from their retained status and their reports."""

from __future__ import annotations

from typing import Any

from clawd import clock
from clawd.strategy import WorkerView


class WorkerState(WorkerView):
    """A worker: what it announced, what it runs now, and when it was last heard."""

    def __init__(self, id: str) -> None:
        super().__init__(id=id, capacity=0)
        self.online = False
        self.session = ""
        self.last_seen = 0.0
        #: task id -> attempt of everything dispatched to it and not yet reported
        self.running: dict[str, int] = {}
        self.status: dict[str, Any] = {}
        self.done = 0
        self.busy_seconds = 0.0
        #: declared lost for heartbeat silence; its next report brings it back
        self.silent = False
        #: a suspected poison task running here alone: nothing else is granted beside it
        self.solo: str | None = None

    def update(self, status: dict[str, Any]) -> None:
        # every field is converted before any is kept: a bad one changes nothing
        capacity = int(status.get("capacity") or 0)
        handlers = frozenset(status.get("handlers") or ())
        capabilities = frozenset(status.get("capabilities") or ())
        lanes = frozenset(status.get("lanes") or ())
        self.status = status
        self.capacity, self.handlers, self.capabilities, self.lanes = (
            capacity,
            handlers,
            capabilities,
            lanes,
        )
        self.last_seen = clock.monotonic()

    def observe(self, type_: str, seconds: float, alpha: float = 0.3) -> None:
        """Fold one task time into the per-type EWMA that ``fastest`` routes on."""
        prior = self.ewma.get(type_)
        self.ewma[type_] = seconds if prior is None else prior + alpha * (seconds - prior)
        self.done += 1
        self.busy_seconds += seconds

    def can_take(self, type_: str, lane: str, requires: list[str]) -> bool:
        if self.solo is not None and self.solo in self.running:
            return False
        return (
            self.online
            and len(self.running) < self.capacity
            and type_ in self.handlers
            and (not self.lanes or lane in self.lanes)
            and (not requires or self.capabilities.issuperset(requires))
        )


class Registry:
    """All workers ever seen (offline ones keep their handlers: they say what types exist)."""

    def __init__(self) -> None:
        self.workers: dict[str, WorkerState] = {}

    def get(self, worker_id: str) -> WorkerState:
        w = self.workers.get(worker_id)
        if w is None:
            w = self.workers[worker_id] = WorkerState(worker_id)
        return w

    def online(self) -> list[WorkerState]:
        return [w for w in self.workers.values() if w.online]

    def free_slots(self) -> int:
        return sum(max(0, w.capacity - len(w.running)) for w in self.workers.values() if w.online)

    def known_types(self) -> set[str]:
        types: set[str] = set()
        for w in self.workers.values():
            types |= w.handlers
        return types

    def candidates(self, type_: str, lane: str, requires: list[str]) -> list[WorkerState]:
        return [w for w in self.workers.values() if w.can_take(type_, lane, requires)]
