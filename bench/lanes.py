"""Wait per lane under a mixed backlog: ``python -m bench.lanes``.

A distributor and 2 workers (4 slots each) on a private mosquitto; all tasks are
published at once (a backlog of every lane), each sleeps ``--task-ms``; the wait of a
task is ``started_at - submitted_at`` from its result.
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


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))] if xs else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--task-ms", type=float, default=5.0)
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


if __name__ == "__main__":
    main()
