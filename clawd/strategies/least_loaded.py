"""``least_loaded``: the worker with the most headroom."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from clawd.strategies._options import check_options
from clawd.strategy import TaskView, WorkerView


def load_key(worker: WorkerView) -> tuple[float, int, str]:
    """Sort key: lowest ``in_flight/capacity``, then most free slots, then id.

    Free slots break a load tie because an 8-slot worker at 50% absorbs a burst better
    than a 2-slot one at 50%; the id makes the order total, so tests and operators can
    predict it.
    """
    return (worker.load, -worker.free, worker.id)


class LeastLoaded:
    """Send the task to the candidate with the lowest ``in_flight/capacity``.

    Load is relative to capacity, so a big worker gets proportionally more tasks. Use it
    when task times vary a lot or workers differ in size; round robin would queue behind
    a worker stuck on a long task.

    Options: none.
    """

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        check_options("least_loaded", options or {}, {})

    def choose(self, task: TaskView, candidates: Sequence[WorkerView]) -> WorkerView:
        return min(candidates, key=load_key)
