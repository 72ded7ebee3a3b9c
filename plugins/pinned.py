"""A drop-in strategy: ``pinned`` sends a task to the worker its producer names.

    [distributor]
    strategy = "pinned"

    mosquitto_pub -t clawd/tasks/normal -m '{"type": "compute", "input": "2+2",
                                             "meta": {"worker": "gpu-1"}}'

A task goes to ``meta["worker"]`` when that worker is a candidate (alive, has the
handler, has a free slot, breaker closed). Otherwise it goes to the first candidate by
id rather than waiting: pinning here is a preference, and a task must not sit in the
queue because its favourite worker is busy or gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clawd import hookimpl
from clawd.errors import ConfigError
from clawd.strategy import TaskView, WorkerView


class Pinned:
    """Choose ``task.meta["worker"]`` if it is a candidate, else the lowest worker id."""

    def __init__(self, options: dict[str, Any]) -> None:
        # nothing to configure; reject options so a typo in the config is not ignored
        if options:
            raise ConfigError(
                [
                    f"[distributor] strategy_options: strategy 'pinned' takes no options, "
                    f"got {', '.join(sorted(options))}"
                ]
            )

    def choose(self, task: TaskView, candidates: Sequence[WorkerView]) -> WorkerView:
        wanted = task.meta.get("worker")
        for worker in candidates:
            if worker.id == wanted:
                return worker
        return min(candidates, key=lambda w: w.id)


@hookimpl
def clawd_register_strategies(register: Any, config: Any) -> None:
    """Register the ``pinned`` strategy."""
    register("pinned", Pinned, description='the worker named in meta["worker"]')
