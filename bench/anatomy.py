"""``python -m bench.anatomy``: where the time goes, per process and per round-trip leg.

Two tables. **CPU per task**: during a throughput run, the CPU time each process used
(from ``/proc/<pid>/stat``; the producer is this process) divided by the tasks, for the
raw pipeline and for clawd. **Round-trip legs**: tasks sent one at a time; each result's
``started_at`` (dispatch) and ``finished_at`` (outcome handled) split the round trip into
submit -> dispatch, dispatch -> finish (the worker's two hops and its run) and finish ->
result received.
"""

from __future__ import annotations

import json
import queue
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from bench import clawd_bench
from bench.infra import Mosquitto, cpu_seconds, own_cpu, workdir
from bench.mqtt_producer import connect, percentile, subscribe
from bench.raw_pipeline import RawPipeline

console = Console(width=120)


def per_task(prod: Any, pids: dict[str, int], tasks: int) -> tuple[float, dict[str, float]]:
    """(tasks/s, µs of CPU per task by process) for one throughput run."""
    prod.throughput(min(1000, tasks))  # warm up
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    mine = own_cpu()
    rate = prod.throughput(tasks)
    used = {k: cpu_seconds(p) - before[k] for k, p in pids.items()}
    used["producer"] = own_cpu() - mine
    return rate, {k: v / tasks * 1e6 for k, v in used.items()}


def legs(port: int, n: int) -> dict[str, list[float]]:
    """Round trips split by the result's timestamps (ms), one task at a time."""
    got: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()
    c = connect(port, "anatomy", lambda cl, u, m: got.put((time.time(), m.payload)))
    subscribe(c, "clawd/results/+")
    out: dict[str, list[float]] = {k: [] for k in ("submit_dispatch", "worker", "result", "all")}
    for i in range(n + 100):
        start = time.time()
        c.publish(clawd_bench.TOPIC, b'{"id":"legs-%d"}' % i, qos=1)
        received, payload = got.get(timeout=10)
        if i < 100:
            continue  # warm-up
        doc = json.loads(payload)
        out["submit_dispatch"].append((doc["started_at"] - start) * 1000)
        out["worker"].append((doc["finished_at"] - doc["started_at"]) * 1000)
        out["result"].append((received - doc["finished_at"]) * 1000)
        out["all"].append((received - start) * 1000)
    c.disconnect()
    c.loop_stop()
    return out


@click.command()
@click.option("--tasks", default=20_000, show_default=True, help="Tasks per throughput run.")
@click.option("--rtt", default=2_000, show_default=True, help="Round trips split into legs.")
@click.option("--concurrency", default=16, show_default=True)
def main(tasks: int, rtt: int, concurrency: int) -> None:
    """Per-process CPU per task (raw pipeline and clawd), and clawd's round trip by leg."""
    tmp = workdir()
    broker = Mosquitto(tmp).start()
    rows: dict[str, tuple[float, dict[str, float]]] = {}
    try:
        raw = RawPipeline(broker.port)
        prod = raw.start()
        pids = {"dispatcher": raw.procs[0].pid}
        pids.update({f"worker {i + 1}": p.pid for i, p in enumerate(raw.procs[1:])})
        pids["mosquitto"] = broker.proc.pid  # type: ignore[union-attr]
        try:
            rows["raw paho 4-hop"] = per_task(prod, pids, tasks)
        finally:
            prod.close()
            raw.stop()
        cluster = clawd_bench.Cluster(tmp, broker.port, concurrency, tag="anatomy")
        try:
            d = cluster.start_distributor()
            cluster.start_workers()
            prod = clawd_bench.producer(broker.port)
            pids = {"dispatcher": d.pid}
            pids.update({f"worker {i + 1}": w.pid for i, w in enumerate(cluster.workers)})
            pids["mosquitto"] = broker.proc.pid  # type: ignore[union-attr]
            rows["clawd (journal on)"] = per_task(prod, pids, tasks)
            prod.close()
            split = legs(broker.port, rtt)
        finally:
            cluster.stop()
    finally:
        broker.stop()

    cols = ["dispatcher", "worker 1", "worker 2", "mosquitto", "producer"]
    t = Table(title=f"CPU µs per task, {tasks:,} no-op tasks (clawd's dispatcher: the distributor)")
    t.add_column("system")
    t.add_column("tasks/s", justify="right")
    for c in [*cols, "total"]:
        t.add_column(c, justify="right")
    for name, (rate, us) in rows.items():
        total = sum(us.values())
        t.add_row(name, f"{rate:,.0f}", *(f"{us.get(c, 0):.0f}" for c in cols), f"{total:.0f}")
    console.print(t)
    lt = Table(title=f"clawd round trip by leg, {rtt:,} tasks one at a time (ms)")
    for c in ("leg", "p50", "p90", "p99"):
        lt.add_column(c, justify="right" if c != "leg" else "left")
    names = {
        "submit_dispatch": "submit -> dispatched",
        "worker": "dispatched -> outcome handled",
        "result": "outcome handled -> result received",
        "all": "round trip",
    }
    for key, label in names.items():
        v = split[key]
        lt.add_row(label, *(f"{percentile(v, p):.2f}" for p in (50, 90, 99)))
    console.print(lt)


if __name__ == "__main__":
    main()
