"""The realistic path, beside the no-op microbenchmark: what users send.

Full envelopes ``{"id", "type": "compute", "input": "1+1"}`` on ``clawd/tasks/normal``
run by the built-in ``compute`` handler, the default config (no ``log_level`` tweak),
2 workers x ``[worker] concurrency = 8``. The producer is the same paho producer for
every system and keeps at most ``WINDOW`` tasks outstanding (submitted, result not yet
received); the raw pipeline beside it gets the same producer and window.

Each run gives tasks/s and the CPU each process used per task (``/proc/<pid>/stat``;
the producer is this process): producer, broker, distributor (the raw pipeline's
dispatcher) and workers, which add up to what a task costs the machine.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from bench import clawd_bench
from bench.infra import Mosquitto, cpu_seconds, own_cpu, workdir
from bench.mqtt_producer import Producer
from bench.raw_pipeline import RawPipeline

WINDOW = 500
CONCURRENCY = 8
TOPIC = "clawd/tasks/normal"
#: the processes of one system, in the order the CPU table shows them
ROLES = ("producer", "broker", "distributor", "workers")


def producer(port: int) -> Producer:
    return Producer(
        port,
        topic_for=lambda _id: TOPIC,
        payload_for=lambda task_id: (
            b'{"id":"%s","type":"compute","input":"1+1"}' % task_id.encode()
        ),
        result_filter="clawd/results/+",
    )


def cpu_run(
    prod: Producer, pids: dict[str, list[int]], tasks: int, window: int
) -> tuple[float, dict[str, float]]:
    """(tasks/s, CPU µs per task by role, and their total) for one throughput run."""
    before = {role: sum(cpu_seconds(p) for p in ps) for role, ps in pids.items()}
    mine = own_cpu()
    rate = prod.throughput(tasks, window=window)
    used = {role: sum(cpu_seconds(p) for p in ps) - before[role] for role, ps in pids.items()}
    used["producer"] = own_cpu() - mine
    us = {role: used.get(role, 0.0) / tasks * 1e6 for role in ROLES}
    us["total"] = sum(us.values())
    return rate, us


def measure(
    prod: Producer,
    pids: dict[str, list[int]],
    tasks: int,
    runs: int,
    window: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    prod.throughput(min(1000, tasks), window=window)  # warm up
    out: dict[str, Any] = {"throughput": [], "cpu_us": {}}
    for i in range(runs):
        rate, us = cpu_run(prod, pids, tasks, window)
        out["throughput"].append(rate)
        for role, v in us.items():
            out["cpu_us"].setdefault(role, []).append(v)
        log(f"  run {i + 1}/{runs}: {rate:,.0f} tasks/s, {us['total']:.0f} µs CPU per task")
    return out


def run_raw(port: int, broker_pid: int, tasks: int, runs: int, window: int, log: Any) -> Any:
    raw = RawPipeline(port)
    try:
        prod = raw.start()
        pids = {
            "broker": [broker_pid],
            "distributor": [raw.procs[0].pid],
            "workers": [p.pid for p in raw.procs[1:]],
        }
        try:
            return measure(prod, pids, tasks, runs, window, log)
        finally:
            prod.close()
    finally:
        raw.stop()


def run_clawd(
    workdir: Path, port: int, broker_pid: int, tasks: int, runs: int, window: int, log: Any
) -> Any:
    cluster = clawd_bench.Cluster(workdir, port, CONCURRENCY, tag="real", log_level=None)
    try:
        d = cluster.start_distributor()
        cluster.start_workers()
        prod = producer(port)
        pids = {
            "broker": [broker_pid],
            "distributor": [d.pid],
            "workers": [w.pid for w in cluster.workers],
        }
        try:
            return measure(prod, pids, tasks, runs, window, log)
        finally:
            prod.close()
    finally:
        cluster.stop()


@click.command()
@click.option("--path", type=click.Choice(["realistic", "noop"]), default="realistic")
@click.option("--window", default=WINDOW, show_default=True, help="0: all tasks at once.")
@click.option("--concurrency", default=CONCURRENCY, show_default=True)
@click.option("--tasks", default=10_000, show_default=True)
@click.option("--runs", default=2, show_default=True)
def main(path: str, window: int, concurrency: int, tasks: int, runs: int) -> None:
    """clawd's CPU per task by process with one setting changed at a time: the payload
    (``--path noop`` is the microbenchmark's), the window and the slots per worker."""
    tmp = workdir()
    broker = Mosquitto(tmp).start()
    cluster = clawd_bench.Cluster(tmp, broker.port, concurrency, tag="one", log_level=None)
    try:
        d = cluster.start_distributor()
        cluster.start_workers()
        prod = producer(broker.port) if path == "realistic" else clawd_bench.producer(broker.port)
        pids = {
            "broker": [broker.proc.pid],  # type: ignore[union-attr]
            "distributor": [d.pid],
            "workers": [w.pid for w in cluster.workers],
        }
        try:
            r = measure(prod, pids, tasks, runs, window, print)
        finally:
            prod.close()
    finally:
        cluster.stop()
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    means = {k: sum(v) / len(v) for k, v in r["cpu_us"].items()}
    print(
        f"{path}, window {window or 'none'}, {concurrency} slots: "
        + ", ".join(f"{k} {v:.0f}" for k, v in means.items())
        + " (CPU µs per task, mean of the runs)"
    )


if __name__ == "__main__":
    main()
