"""What the simulated producer submits: tasks whose behaviour is written in their input.

A task's ``input`` is its plan: how long its handler runs and how it ends, so the same
task behaves the same on every worker and in every replay. The handlers registered here
read the plan; :class:`~clawd.sim.pool.SimPool` decides when they run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from clawd import hookimpl
from clawd.errors import TaskError
from clawd.handler import TaskContext
from clawd.sim import flows

#: (kind, weight): ok runs and succeeds; slow outlives a lease (its worker's heartbeats
#: keep it); flaky fails its first attempts; fatal fails for good; hang overruns its time
#: limit on every attempt; sick (its own type) fails often enough to trip breakers;
#: poison takes its worker down
KINDS = (
    ("ok", 76),
    ("slow", 6),
    ("flaky", 5),
    ("fatal", 3),
    ("hang", 1),
    ("sick", 8),
    ("poison", 1),
)
LANES = ("high", "normal", "low")


@dataclass
class Submission:
    id: str
    lane: str
    type: str
    plan: dict[str, Any]
    envelope: dict[str, Any]
    at: float


def draw(rng: random.Random, n: int, window: float, *, poison: int) -> list[Submission]:
    """``n`` submissions spread over ``window`` simulated seconds, in time order."""
    kinds, weights = zip(*KINDS, strict=True)
    out = []
    poisoned = 0
    for i in range(n):
        kind = rng.choices(kinds, weights)[0]
        if kind == "poison":
            if poisoned >= poison:
                kind = "ok"
            poisoned += 1
        plan: dict[str, Any] = {"kind": kind, "ms": round(rng.uniform(2, 300), 1)}
        env: dict[str, Any] = {"id": f"t{i:05d}", "type": "sick" if kind == "sick" else "sim"}
        if kind == "slow":
            plan["ms"] = round(rng.uniform(3000, 9000), 1)
        elif kind == "flaky":
            plan["fail"] = rng.randint(1, 3)
            env["max_attempts"] = rng.choice((2, 4, 6))
        elif kind == "sick":
            plan["fails"] = [a for a in range(1, 7) if rng.random() < 0.6]
            plan["ms"] = round(rng.uniform(2, 60), 1)
        elif kind == "hang":
            plan["ms"] = 5000.0
            env["timeout"] = 0.5
            env["max_attempts"] = 2
        env["input"] = plan
        lane = rng.choice(LANES)
        out.append(Submission(env["id"], lane, env["type"], plan, env, rng.uniform(0, window)))
    out.sort(key=lambda s: s.at)
    return flows.shape(rng, out)


def run_plan(ctx: TaskContext) -> Any:
    """The handler of every simulated type: end as the plan says."""
    plan = ctx.input
    if not isinstance(plan, dict) or "kind" not in plan:
        return {"attempt": ctx.attempt}  # a then: its input is what came before it
    kind = plan["kind"]
    if kind == "fatal":
        raise TaskError("refused by its plan", retryable=False)
    if kind == "flaky" and ctx.attempt <= plan["fail"]:
        raise RuntimeError(f"flaky failure on attempt {ctx.attempt}")
    if kind == "sick" and ctx.attempt in plan["fails"]:
        raise RuntimeError(f"sick on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


class SimHandlers:
    """The plugin registering the simulated task types."""

    @hookimpl
    def clawd_register_handlers(self, register: Any) -> None:
        register("sim", run_plan, description="simulated work")
        register("sick", run_plan, description="simulated work that fails often")
