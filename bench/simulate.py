"""``python -m bench.simulate --seeds 1000 --tasks 500``: a long deterministic exploration.

Runs seeds one after another through :func:`clawd.sim.simulate` (the distributor and real
workers on an in-memory broker and a simulated clock, faults drawn from each seed) and
prints one table: seeds, simulated tasks, faults injected by kind, simulated and wall
time, and violations, with the command that replays each failing seed.
"""

from __future__ import annotations

import time
from collections import Counter

import click
from rich.console import Console
from rich.table import Table

from clawd.sim import simulate
from clawd.sim.faults import KINDS
from clawd.sim.internals import PLANTS

console = Console(width=120)


@click.command()
@click.option("--seeds", default=1000, show_default=True, help="how many seeds to run")
@click.option("--first", default=1, show_default=True, help="the first seed")
@click.option("--tasks", default=500, show_default=True, help="tasks per seed")
@click.option("--workers", default=3, show_default=True)
@click.option("--plant", type=click.Choice(PLANTS), help="plant a known bug (to time its catch)")
@click.option(
    "--step-checks/--no-step-checks",
    default=True,
    show_default=True,
    help="check the distributor's consistency after every turn, not only at the end",
)
def main(
    seeds: int, first: int, tasks: int, workers: int, plant: str | None, step_checks: bool
) -> None:
    faults: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    failing: list[str] = []
    first_failure: tuple[int, float] | None = None
    sim_seconds = executions = acked = violations = 0.0
    unpublished = 0
    reruns: Counter[str] = Counter()
    began = time.perf_counter()
    for seed in range(first, first + seeds):
        r = simulate(seed, tasks, workers=workers, plant=plant, check_steps=step_checks)
        if not r.ok and first_failure is None:
            first_failure = (seed, time.perf_counter() - began)
        faults.update(r.faults)
        outcomes.update(r.outcomes)
        sim_seconds += r.sim_seconds
        executions += r.executions
        reruns.update(after_ok=r.reruns_after_ok, after_unfinished=r.reruns_after_unfinished)
        acked += r.acked
        violations += len(r.violations)
        unpublished += len(r.letters_unpublished)
        if not r.ok:
            failing.append(f"{r.command()}  # {r.violations[0]}")
    wall = time.perf_counter() - began

    table = Table(title=f"clawd.sim: seeds {first}..{first + seeds - 1}, {tasks} tasks each")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("seeds", f"{seeds}")
    table.add_row("simulated tasks (acknowledged)", f"{seeds * tasks} ({int(acked)})")
    table.add_row("results", ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    table.add_row("executions", f"{int(executions)}")
    table.add_row(
        "executions after a successful / an unfinished one",
        f"{reruns['after_ok']} / {reruns['after_unfinished']}",
    )
    for kind in KINDS:
        table.add_row(f"faults: {kind}", f"{faults.get(kind, 0)}")
    for kind in sorted(set(faults) - set(KINDS)):  # operator actions (clawd.sim.operator)
        table.add_row(f"also: {kind}", f"{faults[kind]}")
    table.add_row("faults: total", f"{sum(faults.values())}")
    table.add_row("simulated time", f"{sim_seconds / 3600:.2f} h")
    table.add_row("wall time", f"{wall:.1f} s ({wall / seeds:.3f} s per seed)")
    table.add_row("failing seeds (violations)", f"{len(failing)} ({int(violations)})")
    table.add_row("dead letters never published", f"{unpublished}")
    if first_failure is not None:
        seed, after = first_failure
        table.add_row("first failing seed", f"{seed} ({after:.2f} s in)")
    console.print(table)
    for line in failing[:20]:
        console.print(line, soft_wrap=True)
    if failing:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
