"""Scale-out efficiency: ``python -m bench.scaleout --n 2,8,32,64``.

N worker processes x 1 slot, 50 tasks per worker submitted at once, timed from the first
submission to the last result. The tasks sleep in their handler (``busy`` from
bench/plugins), so CPU is not what limits them: the ideal is N tasks per task duration,
and efficiency = achieved tasks/s / ideal. Two workloads: ``uniform`` (every task 50 ms)
and ``mixed`` (every tenth task 500 ms, the rest 5 ms: where prefetching hoards).

clawd runs a distributor and N ``--role worker`` processes with ``[worker] concurrency =
1``; its distributor's CPU per dispatched task comes from ``/proc/<pid>/stat``. Celery
(prefork ``-c N``, ``-O fair``, prefetch multiplier 1, acks_late) and Dramatiq (``-p N
-t 1``) run the same tasks from the bench's own virtualenv on a private redis-server.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from bench import peer_bench
from bench.clawd_bench import Cluster
from bench.infra import Mosquitto, cpu_seconds, own_cpu, stop, workdir
from bench.mqtt_producer import Producer

DEFAULT_NS = (2, 8, 32, 64)
PER_WORKER = 50
#: seconds per task of each workload, by task number
MIXES: dict[str, Callable[[int], float]] = {
    "uniform": lambda i: 0.05,
    "mixed": lambda i: 0.5 if i % 10 == 0 else 0.005,
}
TOPIC = "clawd/tasks/normal"
SYSTEMS = ("clawd", *peer_bench.KINDS)
LABELS = {
    "clawd": "clawd",
    "celery": "Celery + Redis (fair, prefetch 1)",
    "celery-rabbitmq": "Celery + RabbitMQ (fair, prefetch 1)",
    "dramatiq": "Dramatiq",
    "rq": "RQ",
}


def ideal_seconds(tasks: int, workers: int, mix: str) -> float:
    """The time N perfectly used slots need for the work (total task time / N)."""
    return sum(MIXES[mix](i) for i in range(tasks)) / workers


def _index(task_id: str) -> int:
    return int(task_id.rsplit("-", 1)[1])


def clawd_producer(port: int, mix: str) -> Producer:
    seconds = MIXES[mix]
    return Producer(
        port,
        topic_for=lambda _id: TOPIC,
        payload_for=lambda task_id: (
            b'{"id":"%s","type":"busy","input":%r}' % (task_id.encode(), seconds(_index(task_id)))
        ),
        result_filter="clawd/results/+",
    )


def run_clawd(
    tmp: Path,
    port: int,
    n: int,
    runs: int,
    mixes: Sequence[str],
    log: Callable[[str], None],
    per_worker: int = PER_WORKER,
    broker_pid: int | None = None,
) -> dict[str, Any]:
    """Per workload: efficiency, the distributor's CPU µs per task and that of every
    process (distributor, workers, broker, producer), one value per run."""
    out: dict[str, Any] = {}
    cluster = Cluster(tmp, port, 1, tag=f"scale{n}-{int(time.time()) % 10000}", workers=n)
    try:
        d = cluster.start_distributor()
        cluster.start_workers()
        for mix in mixes:
            prod = clawd_producer(port, mix)
            try:
                prod.throughput(n * 2)  # warm up: every worker has run something
                row: dict[str, list[float]] = {
                    "efficiency": [],
                    "distributor_cpu_us": [],
                    "workers_cpu_us": [],
                    "total_cpu_us": [],
                }
                workers = [w.pid for w in cluster.workers]
                others = workers + ([broker_pid] if broker_pid else [])
                for i in range(runs):
                    tasks = n * per_worker
                    cpu, rest, mine = cpu_seconds(d.pid), _cpu(others), own_cpu()
                    ran = _cpu(workers)
                    rate = prod.throughput(tasks)
                    used = cpu_seconds(d.pid) - cpu
                    ran = _cpu(workers) - ran
                    total = used + _cpu(others) - rest + own_cpu() - mine
                    eff = ideal_seconds(tasks, n, mix) / (tasks / rate)
                    row["efficiency"].append(eff)
                    row["distributor_cpu_us"].append(used / tasks * 1e6)
                    row["workers_cpu_us"].append(ran / tasks * 1e6)
                    row["total_cpu_us"].append(total / tasks * 1e6)
                    log(
                        f"  clawd N={n} {mix} run {i + 1}/{runs}: efficiency {eff:.3f}, "
                        f"CPU µs/task: distributor {used / tasks * 1e6:.0f}, "
                        f"workers {ran / tasks * 1e6:.0f}, "
                        f"all {total / tasks * 1e6:.0f}"
                    )
                out[mix] = row
            finally:
                prod.close()
    finally:
        cluster.stop()
    return out


def _cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


PEER_WORKERS = {
    "celery": lambda n: [
        "-m", "celery", "-A", "celery_app", "worker", "--pool=prefork", "-c", str(n),
        "-O", "fair", "--prefetch-multiplier=1", "--loglevel=WARNING",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ],
    "dramatiq": lambda n: ["-m", "dramatiq", "dramatiq_app", "-p", str(n), "-t", "1"],
    "rq": lambda n: ["-m", "rq.cli", "worker-pool", "-n", str(n), "-l", "WARNING"],
}  # fmt: skip


def run_peer(
    which: str,
    tmp: Path,
    n: int,
    runs: int,
    mixes: Sequence[str],
    log: Callable[[str], None],
    per_worker: int = PER_WORKER,
) -> dict[str, Any]:
    side = peer_bench.KINDS[which][0]
    broker = peer_bench.PeerBroker(which, tmp / f"{which}-scale{n}")
    env = peer_bench.peer_env(broker, {"BENCH_ACKS_LATE": "1"})
    args = PEER_WORKERS[side](n)
    if side == "rq":
        args += ["-u", env["BENCH_REDIS_URL"]]
    wlog = open(tmp / f"{which}-scale{n}.log", "wb")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [str(peer_bench.python()), *args],
        cwd=peer_bench.PEERS,
        env=env,
        stdout=wlog,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    env["BENCH_CPU_PIDS"] = peer_bench.cpu_roles(broker, worker)
    out: dict[str, Any] = {}
    try:
        for mix in mixes:
            row: dict[str, list[float]] = {"efficiency": [], "total_cpu_us": []}
            for i in range(runs):
                tasks = n * per_worker
                r = subprocess.run(
                    [str(peer_bench.python()), "scale_client.py", side, str(tasks), mix],
                    cwd=peer_bench.PEERS,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=900,
                )
                if r.returncode != 0:
                    raise RuntimeError(f"{which} scale client failed:\n{r.stderr[-2000:]}")
                got = json.loads(r.stdout.strip().splitlines()[-1])
                eff = ideal_seconds(tasks, n, mix) / got["seconds"]
                row["efficiency"].append(eff)
                row["total_cpu_us"].append(got["cpu_us"]["total"])
                log(
                    f"  {which} N={n} {mix} run {i + 1}/{runs}: efficiency {eff:.3f}, "
                    f"CPU µs/task: all {got['cpu_us']['total']:.0f}"
                )
            out[mix] = row
    finally:
        stop(worker, timeout=30)  # type: ignore[arg-type]
        wlog.close()
        broker.stop()
    return out


def run_all(
    tmp: Path,
    broker: Mosquitto,
    ns: Sequence[int],
    runs: int,
    log: Callable[[str], None],
    peers: Sequence[str] = (),
    mixes: Sequence[str] = tuple(MIXES),
    per_worker: int = PER_WORKER,
) -> dict[str, Any]:
    """{system: {N: {mix: {"efficiency": [...], ...}}}}; a peer that cannot run is
    {"skipped": why}."""
    results: dict[str, Any] = {"clawd": {}}
    for n in ns:
        log(f"scale-out: clawd with {n} workers ...")
        results["clawd"][n] = run_clawd(tmp, broker.port, n, runs, mixes, log, per_worker)
    if peers:
        why = peer_bench.ensure_venv(log)
        for peer in peers:
            if why:
                results[peer] = {"skipped": why}
                continue
            results[peer] = {}
            for n in ns:
                log(f"scale-out: {peer} with {n} workers ...")
                try:
                    results[peer][n] = run_peer(peer, tmp, n, runs, mixes, log, per_worker)
                except Exception as exc:
                    log(traceback.format_exc())
                    results[peer] = {"skipped": f"failed: {str(exc).splitlines()[0]}"}
                    break
    return results


def _spread(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    return f"{min(values):{fmt}} / {statistics.median(values):{fmt}} / {max(values):{fmt}}"


def _cells(results: dict[str, Any], n: int, mix: str, key: str, fmt: str) -> list[str]:
    cells = []
    for system in SYSTEMS:
        if system not in results:
            continue
        r = results[system]
        if "skipped" in r:
            cells.append(f"skipped: {r['skipped']}"[:40])
            continue
        cell = r.get(n, {}).get(mix)
        cells.append(_spread(cell.get(key, []), fmt) if cell else "-")
    return cells


def render(console: Console, results: dict[str, Any]) -> None:
    mixes = [
        m
        for m in MIXES
        if any(m in row for row in results.get("clawd", {}).values() if isinstance(row, dict))
    ]
    for mix in mixes:
        what = "50 ms each" if mix == "uniform" else "10 % at 500 ms, 90 % at 5 ms"
        t = Table(
            title=f"scale-out, {mix} tasks ({what}), all submitted at once: "
            "efficiency = tasks/s / ideal; min / median / max"
        )
        c = Table(
            title=f"scale-out, {mix} tasks: CPU µs per task of every process (broker, "
            "workers, producer; clawd's distributor); min / median / max"
        )
        t.add_column("workers", justify="right")
        c.add_column("workers", justify="right")
        for system in SYSTEMS:
            if system in results:
                t.add_column(LABELS[system], justify="right")
                c.add_column(LABELS[system], justify="right")
        t.add_column("clawd distributor CPU µs/task", justify="right")
        for n, row in results["clawd"].items():
            cpu = row[mix]["distributor_cpu_us"]
            t.add_row(str(n), *_cells(results, n, mix, "efficiency", ".3f"), _spread(cpu, ".0f"))
            c.add_row(str(n), *_cells(results, n, mix, "total_cpu_us", ",.0f"))
        console.print(t)
        console.print(c)


@click.command()
@click.option("--n", "ns", default="2,8,32,64", show_default=True, help="Worker counts.")
@click.option("--runs", default=3, show_default=True)
@click.option("--mix", "mixes", default="uniform,mixed", show_default=True)
@click.option(
    "--peers", default="", help="Also: celery,celery-rabbitmq,dramatiq,rq (from bench/.venv)."
)
@click.option("--per-worker", default=PER_WORKER, show_default=True, help="Tasks per worker.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write results.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Also write a PNG (matplotlib).")
def main(
    ns: str,
    runs: int,
    mixes: str,
    peers: str,
    per_worker: int,
    json_out: str | None,
    plot: str | None,
) -> None:
    """Efficiency of N worker processes x 1 slot on sleeping tasks, clawd and peers."""
    counts = [int(x) for x in ns.split(",") if x.strip()]
    chosen_mixes = [m.strip() for m in mixes.split(",") if m.strip()]
    bad = sorted(set(chosen_mixes) - set(MIXES))
    if bad:
        raise click.BadParameter(f"unknown mix: {', '.join(bad)} (known: {', '.join(MIXES)})")
    console = Console(width=140)
    err = Console(stderr=True)
    tmp = workdir("clawd-scaleout-")
    broker = Mosquitto(tmp).start()
    try:
        results = run_all(
            tmp,
            broker,
            counts,
            runs,
            lambda m: err.print(f"[dim]{m}[/dim]"),
            peers=[p.strip() for p in peers.split(",") if p.strip()],
            mixes=chosen_mixes,
            per_worker=per_worker,
        )
    finally:
        broker.stop()
    render(console, results)
    if json_out:
        Path(json_out).write_text(json.dumps({"scaleout": results}, indent=2) + "\n")
    if plot:
        from bench.plot import plot_results

        plot_results({"scaleout": results}, Path(plot))


if __name__ == "__main__":
    main()
