"""A worker pool whose handlers run in simulated time.

It takes the place of :class:`clawd.worker.pool.Pool` (the worker's ``pool`` argument):
a task starts now and its handler runs, and reports, when its plan's duration is over on
the simulated clock. A ``poison`` task takes its worker down instead. Every start and end
goes to the ledger, which counts executions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clawd.handler import HandlerSpec, TaskContext
from clawd.sim.clock import SimClock
from clawd.worker.pool import Outcome, call_handler

#: the plan of a then: its input is its parent's result, not a plan
THEN = {"kind": "ok", "ms": 20.0}


class SimPool:
    def __init__(
        self,
        clock: SimClock,
        worker_id: str,
        ledger: Any,
        crash: Callable[[], None],
    ) -> None:
        self.clock = clock
        self.worker_id = worker_id
        self.ledger = ledger
        self.crash = crash
        self.closed = False
        #: (task id, attempt) of every run this process started
        self.started: set[tuple[str, int]] = set()

    def spill(self) -> float | None:
        """Nothing ever waits for a thread here."""
        return None

    def submit(
        self,
        spec: HandlerSpec,
        ctx: TaskContext,
        on_done: Callable[[str, Outcome, float], None],
        before: Callable[[], None] = lambda: None,
    ) -> None:
        before()
        ctx.started = self.clock.now
        plan = ctx.input
        if not isinstance(plan, dict) or "kind" not in plan:
            plan = THEN  # a then's input is what came before it
        self.ledger.started(ctx.id, ctx.attempt, self.worker_id)
        if (ctx.id, ctx.attempt) in self.started:
            # a grant delivered again (a duplicate, a resend) must not run a second time
            self.ledger.violation(
                f"{self.worker_id} ran attempt {ctx.attempt} of {ctx.id} twice in one process"
            )
        self.started.add((ctx.id, ctx.attempt))
        if plan["kind"] == "poison":
            self.clock.after(0.01 + plan["ms"] / 10_000, self._poisoned)
            return
        seconds = plan["ms"] / 1000.0
        if plan["kind"] == "slow":
            self.clock.after(seconds / 2, lambda: self._progress(ctx))

        def finish() -> None:
            if self.closed:
                return  # the process is gone, and the thread with it
            out = call_handler(spec, ctx)
            self.ledger.ended(ctx.id, ctx.attempt, self.worker_id, out["status"])
            on_done(ctx.id, out, seconds)

        self.clock.after(seconds, finish)

    def _progress(self, ctx: TaskContext) -> None:
        if not self.closed:
            ctx.progress(0.5, "half way")

    def _poisoned(self) -> None:
        if not self.closed:
            self.crash()

    def shutdown(self) -> None:
        self.closed = True
