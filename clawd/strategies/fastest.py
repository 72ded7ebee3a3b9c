"""``fastest``: the worker that has been quickest at this task type."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from clawd.strategies._options import check_options, number_option
from clawd.strategies.least_loaded import load_key
from clawd.strategy import TaskView, WorkerView

OPTIONS = {"heavy_cost": "tasks with cost >= this go to the fastest worker (default 10)"}


class Fastest:
    """Prefer the worker with the lowest observed time (EWMA) for the task's type.

    * A worker with no observation for the type yet is tried first, least loaded first:
      without that a worker that was never tried would never be measured, and a new or
      upgraded machine would stay idle forever.
    * A task whose ``cost`` hint is at least ``heavy_cost`` goes to the fastest worker
      strictly: for a long task, the difference in speed outweighs waiting for a slot.
    * Otherwise the score is ``ewma * (1 + load)``, so a fast worker that is already busy
      yields to a slightly slower idle one instead of collecting every task.

    Ties go to the least loaded worker. Use it for heterogeneous workers.

    Options: ``heavy_cost`` (default 10).
    """

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        options = options or {}
        check_options("fastest", options, OPTIONS)
        self.heavy_cost = number_option("fastest", options, "heavy_cost", 10.0)

    def choose(self, task: TaskView, candidates: Sequence[WorkerView]) -> WorkerView:
        unmeasured = [w for w in candidates if task.type not in w.ewma]
        if unmeasured:
            return min(unmeasured, key=load_key)
        if task.cost is not None and task.cost >= self.heavy_cost:
            return min(candidates, key=lambda w: (w.ewma[task.type], *load_key(w)))
        return min(candidates, key=lambda w: (w.ewma[task.type] * (1 + w.load), *load_key(w)))
