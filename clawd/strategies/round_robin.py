"""``round_robin``: take turns, in worker-id order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from clawd.strategies._options import check_options
from clawd.strategy import TaskView, WorkerView


class RoundRobin:
    """Rotate over the candidates in worker-id order, resuming after the last one chosen.

    The cursor is the last chosen *id*, not an index: the candidate list changes with
    every task (a worker with no free slot is not a candidate), and an index into a list
    that shrank or grew would skip or repeat workers. Resuming after an id keeps the
    rotation fair whatever joins or leaves.

    Options: none.
    """

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        check_options("round_robin", options or {}, {})
        self._last: str | None = None

    def choose(self, task: TaskView, candidates: Sequence[WorkerView]) -> WorkerView:
        ordered = sorted(candidates, key=lambda w: w.id)
        chosen = ordered[0]
        if self._last is not None:
            # the first id after the last one chosen; wrap to the start when none is
            chosen = next((w for w in ordered if w.id > self._last), ordered[0])
        self._last = chosen.id
        return chosen
