"""What a distribution strategy is and what it sees.

A strategy picks one worker among candidates that can all take the task (handler
present, capabilities matched, lane served, breaker closed, a free slot). Strategies
are registered through :func:`clawd.hookspecs.clawd_register_strategies` as factories
``factory(options: dict) -> Strategy``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class WorkerView:
    """A worker as the distributor knows it right now."""

    id: str
    capacity: int
    in_flight: int = 0
    capabilities: frozenset[str] = frozenset()
    handlers: frozenset[str] = frozenset()
    lanes: frozenset[str] = frozenset()
    #: exponentially weighted moving average of task seconds, per task type
    ewma: dict[str, float] = field(default_factory=dict)

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.in_flight)

    @property
    def load(self) -> float:
        return self.in_flight / self.capacity if self.capacity else 1.0


@dataclass(frozen=True)
class TaskView:
    """The parts of a task a strategy may route on."""

    id: str
    type: str
    lane: str
    requires: tuple[str, ...] = ()
    cost: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class Strategy(Protocol):
    """Chooses a worker for a task. ``candidates`` is never empty."""

    def choose(self, task: TaskView, candidates: Sequence[WorkerView]) -> WorkerView: ...


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy factory."""

    name: str
    factory: Any
    description: str = ""
    plugin: str = ""
