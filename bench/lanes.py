"""Wait per lane under a mixed backlog: ``python -m bench.lanes``.

A distributor and 2 workers (4 slots each) on a private mosquitto; all tasks are
published at once (a backlog of every lane), each sleeps ``--task-ms``; the wait of a
task is ``started_at - submitted_at`` from its result.

A second table, "high under a low backlog": ``--low`` low tasks queued at once, then
``--high`` high tasks published one after another (each once the previous one's result
arrived). A high task should wait about one free slot, never for the backlog. The
test suite checks the same by counting (tests/test_scheduling.py); the times are here.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from rich.console import Console
from rich.table import Table

from bench.clawd_bench import Cluster
from bench.infra import Mosquitto, workdir
from clawd.client import Client
from clawd.config import load
from clawd.envelope import decode, encode

MIX = {"high": 0.1, "normal": 0.3, "low": 0.6}


def run(total: int, task_ms: float, seed: int = 1) -> dict[str, list[float]]:
    wd = workdir("clawd-lanes-")
    broker = Mosquitto(wd).start()
    cluster = Cluster(wd, broker.port, concurrency=4, tag="lanes")
    try:
        cluster.start_distributor()
        cluster.start_workers()
        cfg = load(str(wd / "lanes-distributor.toml"))
        rng = random.Random(seed)
        lanes = rng.choices(list(MIX), weights=list(MIX.values()), k=total)
        waits: dict[str, list[float]] = {lane: [] for lane in MIX}
        with Client(cfg, [("clawd/results/+", 1)]) as c:
            for i, lane in enumerate(lanes):
                env = {"id": f"t{i}", "type": "busy", "input": task_ms / 1000}
                c.publish(f"clawd/tasks/{lane}", encode(env), qos=1)
            end = time.monotonic() + 600
            seen = 0
            while seen < total and time.monotonic() < end:
                m = c.next(1)
                if m is None:
                    continue
                r = decode(m.payload)
                seen += 1
                waits[r["lane"]].append(r["started_at"] - r["submitted_at"])
        return waits
    finally:
        cluster.stop()
        broker.stop()


def run_high_under_low(low: int, high: int, task_ms: float) -> dict[str, list[float]]:
    wd = workdir("clawd-lanes-")
    broker = Mosquitto(wd).start()
    cluster = Cluster(wd, broker.port, concurrency=4, tag="lanes")
    waits: dict[str, list[float]] = {"high": [], "low": []}
    try:
        cluster.start_distributor()
        cluster.start_workers()
        cfg = load(str(wd / "lanes-distributor.toml"))
        with Client(cfg, [("clawd/results/+", 1)]) as c:

            def take(until: str | None) -> None:
                end = time.monotonic() + 600
                while time.monotonic() < end:
                    m = c.next(1)
                    if m is None:
                        continue
                    r = decode(m.payload)
                    waits[r["lane"]].append(r["started_at"] - r["submitted_at"])
                    if until is None or r["id"] == until:
                        return

            for i in range(low):
                env = {"id": f"low-{i}", "type": "busy", "input": task_ms / 1000}
                c.publish("clawd/tasks/low", encode(env), qos=1)
            take(None)
            for i in range(high):
                env = {"id": f"high-{i}", "type": "busy", "input": task_ms / 1000}
                c.publish("clawd/tasks/high", encode(env), qos=1)
                take(f"high-{i}")
            while len(waits["low"]) < low:
                take(None)
        return waits
    finally:
        cluster.stop()
        broker.stop()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))] if xs else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--task-ms", type=float, default=5.0)
    ap.add_argument("--low", type=int, default=2000, help="low backlog of the second table")
    ap.add_argument("--high", type=int, default=50, help="high tasks of the second table")
    args = ap.parse_args()
    waits = run(args.tasks, args.task_ms)
    table = Table(
        "lane",
        "weight",
        "tasks",
        "p50 wait ms",
        "p99 wait ms",
        "max wait ms",
        title=f"wait per lane: {args.tasks} tasks of {args.task_ms:g} ms queued at once, "
        "2 workers x 4 slots",
    )
    for lane, weight in (("high", 8), ("normal", 4), ("low", 1)):
        w = waits[lane]
        table.add_row(
            lane,
            str(weight),
            str(len(w)),
            f"{1000 * statistics.median(w):.1f}",
            f"{1000 * pct(w, 0.99):.1f}",
            f"{1000 * max(w):.1f}",
        )
    Console().print(table)
    waits = run_high_under_low(args.low, args.high, args.task_ms)
    table = Table(
        "lane",
        "tasks",
        "p50 wait ms",
        "p99 wait ms",
        "max wait ms",
        title=f"high under a low backlog: {args.low} low tasks queued, then {args.high} high "
        f"tasks one at a time; {args.task_ms:g} ms each, 2 workers x 4 slots",
    )
    for lane in ("high", "low"):
        w = waits[lane]
        table.add_row(
            lane,
            str(len(w)),
            f"{1000 * statistics.median(w):.1f}",
            f"{1000 * pct(w, 0.99):.1f}",
            f"{1000 * max(w):.1f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
