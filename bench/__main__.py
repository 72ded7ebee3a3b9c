"""``python -m bench``: clawd against the raw MQTT limit, Celery and Dramatiq.

One private mosquitto for the whole run (and a private redis-server per peer), every
system measured the same way: throughput of N no-op tasks submitted at once, and the
submit-to-result round trip of tasks sent one at a time; then the realistic path (full
compute envelopes, a windowed producer, CPU per task by process, bench/realistic.py) and
the scale-out of single-slot workers (bench/scaleout.py). See docs/performance.md.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import time
import traceback
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from bench import clawd_bench, peer_bench, realistic, scaleout
from bench.infra import Mosquitto, mosquitto_version, workdir
from bench.mqtt_producer import Producer, percentile
from bench.raw_pipeline import RawPipeline

PEERS = tuple(peer_bench.KINDS)
SYSTEMS = ("raw", "clawd", *PEERS, "backlog", "realistic", "scaleout")
LABELS = {"raw": "raw paho 4-hop", "clawd": "clawd (journal on)", **peer_bench.LABELS}
#: the issue's targets
TARGETS = {"raw": 1.5, "celery": 8.0, "dramatiq": 2.5}
P50_MS, P99_MS, RSS_MB, DRAIN_WITHIN = 0.8, 2.0, 150.0, 0.20
#: realistic path: clawd / raw with the same windowed producer
REALISTIC_TARGET = 1.3

console = Console(width=120)
err = Console(stderr=True)


def note(message: str) -> None:
    err.print(f"[dim]{message}[/dim]")


def measure_mqtt(
    prod: Producer, tasks: int, rtt: int, runs: int, pids: dict[str, list[int]]
) -> list[dict[str, Any]]:
    """Throughput with the CPU per task of every process (``pids`` by role, the producer
    being this process), then the round trips; one dict per run."""
    prod.throughput(min(500, tasks))  # warm up connections, caches, worker pools
    out = []
    for i in range(runs):
        tput, cpu_us = realistic.cpu_run(prod, pids, tasks, window=0)
        times = prod.round_trips(rtt)
        out.append({"throughput": tput, "rtt": times, "cpu_us": cpu_us})
        note(f"  run {i + 1}/{runs}: {tput:,.0f} tasks/s")
    return out


def summarise(runs: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per metric, the values of every run (round trips in ms; CPU µs per task by role)."""
    out: dict[str, Any] = {
        "throughput": [r["throughput"] for r in runs],
        "p50_ms": [percentile(r["rtt"], 50) * 1000 for r in runs],
        "p99_ms": [percentile(r["rtt"], 99) * 1000 for r in runs],
    }
    if runs and all("cpu_us" in r for r in runs):
        roles = {role for r in runs for role in r["cpu_us"]}
        out["cpu_us"] = {role: [r["cpu_us"].get(role, 0.0) for r in runs] for role in roles}
    return out


def spread(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    lo, mid, hi = min(values), statistics.median(values), max(values)
    return f"{lo:{fmt}} / {mid:{fmt}} / {hi:{fmt}}"


def med(values: list[float] | None) -> float:
    return statistics.median(values) if values else 0.0


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "mosquitto": mosquitto_version(),
        "redis": shutil.which("redis-server") or "-",
    }


def render(results: dict[str, Any], params: dict[str, Any]) -> None:
    runs = params["runs"]
    t = Table(
        title=f"{params['tasks']:,} no-op tasks throughput, {params['rtt']:,} sequential round "
        f"trips; min / median / max over {runs} run(s)",
    )
    t.add_column("system")
    t.add_column("tasks/s", justify="right")
    t.add_column("round trip p50 ms", justify="right")
    t.add_column("round trip p99 ms", justify="right")
    for key, label in LABELS.items():
        r = results.get(key)
        if r is None:
            continue
        if "skipped" in r:
            t.add_row(label, f"skipped: {r['skipped']}", "", "")
            continue
        if r.get("tasks", params["tasks"]) != params["tasks"]:
            label += f" ({r['tasks']:,} tasks per run)"
        t.add_row(
            label,
            spread(r["throughput"], ",.0f"),
            spread(r["p50_ms"], ".2f"),
            spread(r["p99_ms"], ".2f"),
        )
    console.print(t)
    render_cpu(results, params)

    b = results.get("backlog")
    if b is not None:
        bt = Table(title=f"backlog of {params['backlog']:,} tasks queued with no worker running")
        cols = ("fill tasks/s", "drain tasks/s", "peak RSS filling MB", "peak RSS draining MB",
                "journal filled MB", "journal drained MB")  # fmt: skip
        for col in cols:
            bt.add_column(col, justify="right")
        if "skipped" in b:
            bt.add_row(f"skipped: {b['skipped']}", *[""] * (len(cols) - 1))
        else:
            bt.add_row(
                spread(b["fill_per_s"], ",.0f"),
                spread(b["drain_per_s"], ",.0f"),
                spread(b["fill_rss_mb"], ".0f"),
                spread(b["drain_rss_mb"], ".0f"),
                spread(b.get("journal_filled_mb", []), ",.0f"),
                spread(b.get("journal_drained_mb", []), ",.0f"),
            )
        console.print(bt)

    c = results.get("clawd")
    if c is None or "skipped" in c:
        return
    rt = Table(title="clawd against the targets (medians)")
    rt.add_column("measure")
    rt.add_column("measured", justify="right")
    rt.add_column("target", justify="right")
    rt.add_column("met", justify="center")
    ct = med(c["throughput"])
    for key, want in TARGETS.items():
        other = results.get(key)
        if other is None or "skipped" in other or not med(other["throughput"]):
            continue
        ratio = ct / med(other["throughput"])
        rt.add_row(f"throughput clawd/{key}", f"{ratio:.2f}x", f">= {want:g}x", _ok(ratio >= want))
    p50, p99 = med(c["p50_ms"]), med(c["p99_ms"])
    rt.add_row("round trip p50", f"{p50:.2f} ms", f"<= {P50_MS:g} ms", _ok(p50 <= P50_MS))
    rt.add_row("round trip p99", f"{p99:.2f} ms", f"<= {P99_MS:g} ms", _ok(p99 <= P99_MS))
    if b is not None and "skipped" not in b:
        rss = max(b["fill_rss_mb"] + b["drain_rss_mb"])
        rt.add_row("backlog peak RSS", f"{rss:.0f} MB", f"<= {RSS_MB:g} MB", _ok(rss <= RSS_MB))
        drain = med(b["drain_per_s"]) / ct
        rt.add_row(
            "backlog drain / empty-queue",
            f"{drain:.2f}x",
            f">= {1 - DRAIN_WITHIN:.2f}x",
            _ok(drain >= 1 - DRAIN_WITHIN),
        )
    console.print(rt)


def render_cpu(results: dict[str, Any], params: dict[str, Any]) -> None:
    """CPU µs per task of every process of each system, over its throughput runs."""
    rows = [(k, results[k]) for k in LABELS if "cpu_us" in results.get(k, {})]
    if not rows:
        return
    t = Table(
        title=f"CPU µs per task, all processes, over the {params['tasks']:,}-task throughput "
        f"runs; min / median / max over {params['runs']} run(s)"
    )
    t.add_column("system")
    t.add_column("tasks/s", justify="right")
    roles = (*realistic.ROLES, "total")
    for role in roles:
        t.add_column(role if role != "distributor" else "distributor / dispatcher", justify="right")
    for key, r in rows:
        cpu = r["cpu_us"]
        t.add_row(
            LABELS[key] + (f" ({r['tasks']:,} tasks)" if "tasks" in r else ""),
            spread(r["throughput"], ",.0f"),
            *(spread(cpu[role], ".0f") if role in cpu else "-" for role in roles),
        )
    console.print(t)


def render_realistic(r: dict[str, Any], params: dict[str, Any]) -> None:
    t = Table(
        title=f"realistic path: {params['tasks']:,} compute tasks, full envelopes, window "
        f"{realistic.WINDOW}, 2 workers x {realistic.CONCURRENCY}, default config; "
        f"CPU µs per task by process; min / median / max over {params['runs']} run(s)"
    )
    t.add_column("system")
    t.add_column("tasks/s", justify="right")
    for role in (*realistic.ROLES, "total"):
        t.add_column(role, justify="right")
    for key, label in (("raw", "raw paho 4-hop"), ("clawd", "clawd (compute)")):
        row = r.get(key)
        if row is None:
            continue
        cpu = row["cpu_us"]
        t.add_row(
            label,
            spread(row["throughput"], ",.0f"),
            *(spread(cpu[role], ".0f") for role in (*realistic.ROLES, "total")),
        )
    console.print(t)
    if "raw" in r and "clawd" in r:
        ratio = med(r["clawd"]["throughput"]) / med(r["raw"]["throughput"])
        cpu = med(r["clawd"]["cpu_us"]["total"]) / med(r["raw"]["cpu_us"]["total"])
        console.print(
            f"realistic clawd / raw: {ratio:.2f}x throughput (target >= "
            f"{REALISTIC_TARGET:g}x: {_ok(ratio >= REALISTIC_TARGET)}), {cpu:.2f}x CPU per "
            f"task (target <= 1: {_ok(cpu <= 1)})"
        )


def _ok(yes: bool) -> str:
    return "[green]yes[/green]" if yes else "[red]no[/red]"


@click.command()
@click.option("--runs", default=3, show_default=True, help="Repetitions per system.")
@click.option("--tasks", default=20_000, show_default=True, help="Tasks per throughput run.")
@click.option("--rtt", default=2_000, show_default=True, help="Sequential round trips per run.")
@click.option("--backlog", default=1_000_000, show_default=True, help="Backlog size.")
@click.option("--backlog-runs", default=1, show_default=True, help="Repetitions of the backlog.")
@click.option(
    "--concurrency", default=16, show_default=True, help="[worker] concurrency of clawd's workers."
)
@click.option(
    "--journal-sync",
    type=click.Choice(["normal", "full"]),
    default="normal",
    show_default=True,
    help="[daemon] journal_sync of the distributor (full: an fsync per commit).",
)
@click.option("--quick", is_flag=True, help="Small counts: a smoke run of the harness.")
@click.option(
    "--only",
    default=",".join(SYSTEMS),
    show_default=True,
    help="Comma-separated subset of: " + ", ".join(SYSTEMS),
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write results.")
@click.option("--keep", is_flag=True, help="Keep the temporary directory (logs, journals).")
@click.option(
    "--scale-n",
    default=",".join(map(str, scaleout.DEFAULT_NS)),
    show_default=True,
    help="Worker counts of the scale-out rows (with --only ...,scaleout).",
)
@click.option(
    "--scale-peers",
    default=None,
    help="The peers of the scale-out rows, if not every peer in --only (RQ forks a process "
    "per job: at 64 workers its scale-out alone takes most of half an hour).",
)
@click.option(
    "--plot",
    "plot_out",
    type=click.Path(dir_okay=False),
    help="Also write a PNG: scale-out throughput vs workers, CPU per task (matplotlib).",
)
def main(
    runs: int,
    tasks: int,
    rtt: int,
    backlog: int,
    backlog_runs: int,
    concurrency: int,
    journal_sync: str,
    quick: bool,
    only: str,
    json_out: str | None,
    keep: bool,
    scale_n: str,
    scale_peers: str | None,
    plot_out: str | None,
) -> None:
    """Benchmark clawd against raw paho, Celery, Dramatiq and RQ on private brokers."""
    clawd_bench.JOURNAL_SYNC = journal_sync
    chosen = [s.strip() for s in only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SYSTEMS))
    if unknown:
        raise click.BadParameter(f"unknown: {', '.join(unknown)} (known: {', '.join(SYSTEMS)})")
    if quick:
        tasks, rtt, backlog = min(tasks, 2_000), min(rtt, 200), min(backlog, 5_000)
    params = {"runs": runs, "tasks": tasks, "rtt": rtt, "backlog": backlog}
    info = machine()
    note(f"machine: {info['nproc']} cpu(s), {info['cpu']}; {info['mosquitto']}")
    tmp = workdir()
    broker = Mosquitto(tmp).start()
    results: dict[str, Any] = {}
    try:
        if "raw" in chosen:
            note("raw paho pipeline ...")
            raw = RawPipeline(broker.port)
            try:
                prod = raw.start()
                pids = {
                    "broker": [broker.proc.pid],  # type: ignore[union-attr]
                    "distributor": [raw.procs[0].pid],
                    "workers": [p.pid for p in raw.procs[1:]],
                }
                results["raw"] = summarise(measure_mqtt(prod, tasks, rtt, runs, pids))
                prod.close()
            finally:
                raw.stop()
        if "clawd" in chosen:
            note("clawd ...")
            cluster = clawd_bench.Cluster(tmp, broker.port, concurrency)
            try:
                d = cluster.start_distributor()
                cluster.start_workers()
                prod = clawd_bench.producer(broker.port)
                pids = {
                    "broker": [broker.proc.pid],  # type: ignore[union-attr]
                    "distributor": [d.pid],
                    "workers": [w.pid for w in cluster.workers],
                }
                results["clawd"] = summarise(measure_mqtt(prod, tasks, rtt, runs, pids))
                prod.close()
            finally:
                cluster.stop()
        peers = [p for p in PEERS if p in chosen]
        if peers:
            why = peer_bench.ensure_venv(note)
            for peer in peers:
                if why:
                    results[peer] = {"skipped": why}
                    continue
                # a peer too slow for the full count runs fewer tasks (the table says so)
                cap = peer_bench.MAX_TASKS.get(peer)
                n, r = (min(tasks, cap), min(rtt, 200)) if cap else (tasks, rtt)
                note(f"{peer} ({n:,} tasks, {r:,} round trips) ...")
                try:
                    results[peer] = summarise(peer_bench.run_peer(peer, tmp, n, r, runs, note))
                    results[peer]["tasks"] = n
                except Exception as exc:
                    err.print(traceback.format_exc())
                    results[peer] = {"skipped": f"failed: {str(exc).splitlines()[0]}"}
        if "realistic" in chosen:
            note("realistic path: raw pipeline with a window ...")
            port, bpid = broker.port, broker.proc.pid  # type: ignore[union-attr]
            real = {"raw": realistic.run_raw(port, bpid, tasks, runs, realistic.WINDOW, note)}
            note("realistic path: clawd ...")
            real["clawd"] = realistic.run_clawd(
                tmp, port, bpid, tasks, runs, realistic.WINDOW, note
            )
            results["realistic"] = real
        if "scaleout" in chosen:
            ns = [int(x) for x in scale_n.split(",") if x.strip()]
            results["scaleout"] = scaleout.run_all(
                tmp, broker, ns[:1] if quick else ns, runs, note,
                peers=[
                    p
                    for p in PEERS
                    if p in chosen and (scale_peers is None or p in scale_peers.split(","))
                ],
                per_worker=5 if quick else scaleout.PER_WORKER,
            )  # fmt: skip
        if "backlog" in chosen:
            rows: dict[str, list[float]] = {}
            for i in range(backlog_runs):
                note(f"backlog {i + 1}/{backlog_runs} of {backlog:,} tasks ...")
                r = clawd_bench.backlog(tmp, broker.port, backlog, concurrency, log=note)
                for k, v in r.items():
                    rows.setdefault(k, []).append(v)
            results["backlog"] = rows
    finally:
        broker.stop()
        if keep:
            note(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    render(results, params)
    if "realistic" in results:
        render_realistic(results["realistic"], params)
    if "scaleout" in results:
        scaleout.render(console, results["scaleout"])
    if plot_out:
        from bench import plot

        why = plot.available()
        if why:
            note(f"no plot: {why}")
        elif "scaleout" in results or "realistic" in results:
            note(f"plot written to {plot.plot_results(results, Path(plot_out))}")
        else:
            note("no plot: it shows the realistic and scale-out rows (--only realistic,scaleout)")
    if json_out:
        doc = {"params": params, "machine": info, "results": results, "at": time.time()}
        Path(json_out).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
