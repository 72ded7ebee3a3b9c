"""Fault harness: submit tasks, break something, and account for every acknowledged task.

    python -m tests.faults.harness --scenario worker-kill --tasks 1000
    python -m tests.faults.harness --all --tasks 5000 --down-seconds 30

Each run starts a private mosquitto (persistence on), a distributor and two workers as
real processes, submits N tasks with unique ids at QoS 1 and records which submissions
the broker acknowledged. Then it injects the scenario's fault, waits for the results,
and classifies every acknowledged id:

- ``ok``: exactly the expected terminal result, executed as often as expected;
- ``lost``: no terminal result at all (the promise is broken);
- ``dup exec``: executed more often than expected (allowed, bounded by what was in
  flight when the fault hit);
- ``dup result``: more than one distinct terminal result (never allowed);
- ``unexpected``: a terminal result other than the expected one.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clawd.message import Delivery
from tests.conftest import wait_until
from tests.faults.cluster import Cluster

#: slots per worker (the harness config's [worker] concurrency) times two workers
SLOTS = 8


@dataclass
class Fault:
    """One injected fault: when, what, and (for a killed worker) which pid died."""

    at: float
    what: str
    pid: int | None = None


@dataclass
class Report:
    scenario: str
    tasks: int
    acked: int = 0
    ok: int = 0
    lost: int = 0
    dup_exec: int = 0
    extra_execs: int = 0
    dup_results: int = 0
    unexpected: int = 0
    #: tasks started and not yet finished at the moments of the faults (summed)
    in_flight: int = 0
    #: seconds from a worker's kill -9 to the last of its tasks starting again elsewhere
    redelivery_max: float | None = None
    seconds: float = 0.0
    worker_restarts: int = 0
    faults: list[Fault] = field(default_factory=list)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    @property
    def passed(self) -> bool:
        return (
            self.lost == 0
            and self.dup_results == 0
            and self.unexpected == 0
            and self.extra_execs <= self.in_flight
            and (self.redelivery_max is None or self.redelivery_max <= 10.0)
        )


@dataclass
class Expect:
    """What a task should end as: status, dead-letter reason, and how many executions."""

    status: str = "ok"
    reason: str | None = None
    executions: int = 1


class Run:
    """One scenario run: the cluster, the tasks, the faults recorded so far."""

    def __init__(self, cluster: Cluster, ids: list[str], down_seconds: float) -> None:
        self.cluster = cluster
        self.ids = ids
        self.down_seconds = down_seconds
        self.faults: list[Fault] = []
        self.deliveries: dict[str, Delivery] = {}

    @property
    def observer(self) -> Any:
        return self.cluster.observer

    def done(self) -> int:
        return sum(1 for i in self.ids if i in self.observer.results)

    def wait_done(self, fraction: float, timeout: float = 120) -> None:
        """Wait until ``fraction`` of the tasks have a result (a fault should hit mid-run)."""
        want = int(len(self.ids) * fraction)
        wait_until(lambda: self.done() >= want, timeout, f"{want} results")

    def wait_acked(self, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        for d in list(self.deliveries.values()):
            d.wait(max(0.0, end - time.monotonic()))

    def fault(self, what: str, pid: int | None = None, at: float | None = None) -> None:
        self.faults.append(Fault(time.time() if at is None else at, what, pid))


# -- scenarios ---------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    doc: str
    inject: Callable[[Run], None]
    #: i -> (envelope without id, expectation)
    task: Callable[[int, int], tuple[dict[str, Any], Expect]] = lambda i, n: (
        {"type": "sleep", "input": 0.02},
        Expect(),
    )
    config: str = ""
    workers: int = 2
    #: redelivery time is measured for worker kills
    measure_redelivery: bool = False


def _worker_kill(run: Run) -> None:
    c = run.cluster
    for k in range(3):
        run.wait_done(0.15 + 0.2 * k)
        t, pid = c.kill_worker("w1")
        run.fault("kill -9 w1", pid, t)
        c.wait_restarted("w1", pid)
        c.wait_workers_known()


def _distributor_kill(run: Run) -> None:
    c = run.cluster
    # right after the broker acknowledged the submissions: some are still being journaled
    run.wait_acked()
    assert c.distributor is not None
    run.fault("kill -9 distributor (after submit)")
    c.distributor.stop(signal.SIGKILL)
    c.down(0.5)  # down for a while: the workers report into the void
    c.start_distributor()
    # and once more mid-run, with tasks running on the workers
    run.wait_done(0.5)
    run.fault("kill -9 distributor (mid-run)")
    c.distributor.stop(signal.SIGKILL)
    c.down(1.0)
    c.start_distributor()


def _worker_sigterm(run: Run) -> None:
    run.wait_done(0.3)
    t, pid = run.cluster.kill_worker("w1", signal.SIGTERM)
    run.fault("SIGTERM w1", pid, t)
    run.cluster.wait_restarted("w1", pid)


def _broker_restart(run: Run) -> None:
    run.wait_done(0.3)
    run.fault("mosquitto SIGTERM + start")
    run.cluster.restart_broker(0.2)


def _broker_down(run: Run) -> None:
    run.wait_done(0.3)
    run.fault(f"mosquitto down {run.down_seconds:g} s")
    run.cluster.restart_broker(run.down_seconds)


def _nothing(run: Run) -> None:
    """The fault is in the tasks themselves."""


def _sprinkle(kind: str, count: int, expect: Expect) -> Callable[[int, int], Any]:
    def task(i: int, n: int) -> tuple[dict[str, Any], Expect]:
        step = max(1, n // count)
        if i % step == step // 2 and i // step < count:
            return {"type": kind, "input": None}, expect
        return {"type": "sleep", "input": 0.02}, Expect()

    return task


STUBBORN_MARK = f"100.{os.getpid()}"

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "worker-kill",
            "kill -9 a worker mid-run three times, restarting it each time",
            _worker_kill,
            task=lambda i, n: ({"type": "sleep", "input": 0.1}, Expect()),
            measure_redelivery=True,
        ),
        Scenario(
            "distributor-kill",
            "kill -9 the distributor right after submission and again mid-run; restart it",
            _distributor_kill,
        ),
        Scenario(
            "worker-sigterm",
            "SIGTERM a worker under load: it drains, hands back the rest, restarts",
            _worker_sigterm,
            task=lambda i, n: (
                {"type": "sleep", "input": 2.0 if i % 25 == 0 else 0.05},
                Expect(),
            ),
        ),
        Scenario(
            "broker-restart",
            "mosquitto stopped gracefully mid-run (persistence on) and started again",
            _broker_restart,
        ),
        Scenario("broker-down", "mosquitto down for --down-seconds mid-run", _broker_down),
        Scenario(
            "poison",
            "tasks that kill their own worker process, among good ones",
            _nothing,
            task=_sprinkle("crash", 3, Expect("failed", "poison", 3)),
        ),
        Scenario(
            "hang",
            "a handler that never returns (isolation=process, timeout 1 s)",
            _nothing,
            task=_sprinkle("hang", 3, Expect("failed", "timeout", 3)),
        ),
        Scenario(
            "exec-stubborn",
            "an exec command that ignores SIGTERM (timeout 1 s): its group is killed",
            _nothing,
            task=_sprinkle("stubborn", 3, Expect("failed", "timeout", 2)),
            config=(
                "\n[handlers.exec.stubborn]\n"
                f'command = ["/bin/sh", "-c", "trap \'\' TERM; sleep {STUBBORN_MARK}"]\n'
                "timeout = 1\n\n[handlers.stubborn]\nmax_attempts = 2\n"
            ),
        ),
    ]
}


# -- running and classifying -------------------------------------------------------------


def run_scenario(
    name: str,
    tasks: int,
    *,
    down_seconds: float = 30.0,
    workdir: Path | None = None,
    timeout: float | None = None,
) -> Report:
    """Run one scenario end to end and classify every acknowledged task."""
    sc = SCENARIOS[name]
    started = time.monotonic()
    token = uuid.uuid4().hex[:6]
    with Cluster(workdir, workers=sc.workers, extra_config=sc.config) as cluster:
        expect: dict[str, Expect] = {}
        envelopes: list[dict[str, Any]] = []
        for i in range(tasks):
            env, ex = sc.task(i, tasks)
            env["id"] = f"{name}-{token}-{i:06d}"
            expect[env["id"]] = ex
            envelopes.append(env)
        run = Run(cluster, [e["id"] for e in envelopes], down_seconds)
        injector = threading.Thread(target=sc.inject, args=(run,), daemon=True)
        injector.start()
        for env in envelopes:
            run.deliveries[env["id"]] = cluster.observer.submit(env)  # type: ignore[union-attr]
        injector.join(600)
        budget = timeout or (60.0 + tasks * 0.02 + (down_seconds if name == "broker-down" else 0))
        run.wait_acked(budget)
        acked = {i for i, d in run.deliveries.items() if d.acknowledged}
        cluster.observer.wait_results(acked, budget)  # type: ignore[union-attr]
        # a last submission the distributor rejects at once: its answer comes after every
        # result the distributor published before it, late duplicates included
        marker = f"marker-{token}"
        cluster.observer.submit({"id": marker, "type": "no-such-type"})  # type: ignore[union-attr]
        cluster.observer.wait_results({marker}, budget)  # type: ignore[union-attr]
        report = classify(run, sc, expect, acked)
        report.worker_restarts = cluster.restarts
        if not run.faults:
            # the tasks were the fault (poison): each death took its worker's slots down
            report.in_flight += cluster.restarts * SLOTS // 2
        report.seconds = round(time.monotonic() - started, 1)
        if name == "exec-stubborn":
            report.examples["leftover processes"] = _leftovers()
            report.unexpected += len(report.examples["leftover processes"])
        if not report.passed and os.environ.get("CLAWD_FAULTS_VERBOSE"):
            print(cluster.logs(), file=sys.stderr)
    return report


def classify(run: Run, sc: Scenario, expect: dict[str, Expect], acked: set[str]) -> Report:
    obs = run.observer
    report = Report(sc.name, len(run.ids), acked=len(acked), faults=run.faults)
    execs = run.cluster.executions()
    per_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in execs:
        per_id[rec["id"]].append(rec)
    first_result = {i: min(r.values()) for i, r in obs.results.items()}
    for i in sorted(acked):
        ex = expect[i]
        results = obs.results.get(i, {})
        n_exec = len(per_id.get(i, ()))
        if not results:
            report.lost += 1
            report.examples["lost"].append(i)
            continue
        if len(results) > 1:
            report.dup_results += 1
            report.examples["dup result"].append(i)
        doc = obs.result(i)
        reasons = {d["reason"] for d in obs.dead.get(i, ())}
        if doc["status"] != ex.status or (ex.reason and reasons != {ex.reason}):
            report.unexpected += 1
            report.examples["unexpected"].append(f"{i}: {doc['status']} {sorted(reasons)}")
            continue
        if n_exec > ex.executions:
            report.dup_exec += 1
            report.extra_execs += n_exec - ex.executions
            report.examples["dup exec"].append(i)
        elif len(results) == 1:
            report.ok += 1
    for f in run.faults:
        report.in_flight += sum(
            1
            for i, recs in per_id.items()
            if any(r["t"] <= f.at for r in recs) and first_result.get(i, float("inf")) > f.at
        )
    if sc.measure_redelivery:
        report.redelivery_max = _redelivery(run.faults, per_id, first_result)
    return report


def _redelivery(
    faults: list[Fault], per_id: dict[str, list[dict[str, Any]]], first_result: dict[str, float]
) -> float | None:
    """The longest time from a kill to a task it interrupted starting again."""
    worst: float | None = None
    for f in faults:
        for i, recs in per_id.items():
            hit = [r for r in recs if r["pid"] == f.pid and r["t"] <= f.at]
            if not hit or first_result.get(i, float("inf")) <= f.at:
                continue
            later = [r["t"] for r in recs if r["t"] > f.at]
            if later:
                delay = min(later) - f.at
                worst = delay if worst is None else max(worst, delay)
    return None if worst is None else round(worst, 3)


def _leftovers() -> list[str]:
    """Processes still running the stubborn command: its group was not killed."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if f"sleep {STUBBORN_MARK}" in cmd:
            found.append(f"{pid}: {cmd.strip()}")
    return found


# -- the command -------------------------------------------------------------------------


def print_table(reports: list[Report]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="clawd under faults")
    for col in [
        "scenario",
        "tasks",
        "acked",
        "ok",
        "lost",
        "dup exec",
        "dup result",
        "unexpected",
        "in flight at fault",
        "redelivery max s",
        "worker restarts",
        "seconds",
        "verdict",
    ]:
        table.add_column(col, justify="left" if col == "scenario" else "right")
    for r in reports:
        table.add_row(
            r.scenario,
            str(r.tasks),
            str(r.acked),
            str(r.ok),
            str(r.lost),
            f"{r.dup_exec} ({r.extra_execs})",
            str(r.dup_results),
            str(r.unexpected),
            str(r.in_flight),
            "-" if r.redelivery_max is None else f"{r.redelivery_max:.2f}",
            str(r.worker_restarts),
            f"{r.seconds:.0f}",
            "[green]pass[/]" if r.passed else "[red]FAIL[/]",
        )
    console = Console(width=200)
    console.print(table)
    for r in reports:
        for kind, ids in r.examples.items():
            if ids:
                console.print(f"{r.scenario}: {kind}: {len(ids)}, e.g. {', '.join(ids[:5])}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.faults.harness",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), default=[])
    p.add_argument("--all", action="store_true", help="run every scenario")
    p.add_argument("--tasks", type=int, default=300, help="tasks per scenario")
    p.add_argument(
        "--down-seconds",
        type=float,
        default=30.0,
        help="how long broker-down keeps mosquitto stopped",
    )
    args = p.parse_args(argv)
    names = list(SCENARIOS) if args.all else args.scenario
    if not names:
        p.error("give --scenario NAME (repeatable) or --all")
    reports = []
    for name in names:
        print(f"running {name} ({SCENARIOS[name].doc}) with {args.tasks} tasks ...", flush=True)
        reports.append(run_scenario(name, args.tasks, down_seconds=args.down_seconds))
    print_table(reports)
    counts = Counter(r.passed for r in reports)
    return 0 if not counts[False] else 1


if __name__ == "__main__":
    sys.exit(main())
