"""Global rate limits under load: ``python -m bench.rates``.

A distributor and 2 workers (4 slots each) on a private mosquitto, with
``[handlers.noop] rate_limit = "<R>/s"``; ``--seconds`` worth of tasks at the limit (plus
the burst) are published at once. From the results' ``started_at`` (the distributor's
time of each dispatch): the rate achieved beyond the first burst ((tasks - burst) over
the time from the first dispatch to the last), the largest window excess over
what the bucket allows (0 means the limit held), and the distributor's CPU per second
while it waited for tokens (it sleeps until the next token rather than polling). The
test suite checks the limit by counting dispatch times (tests/test_rates_e2e.py); the
figures are here.
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

from bench.clawd_bench import write_config
from bench.infra import ClawdProcess, Mosquitto, cpu_seconds, workdir
from clawd.client import Client
from clawd.config import load
from clawd.envelope import decode, encode
from clawd.token_bucket import parse_rate


def run(rate_text: str, seconds: float) -> dict[str, float]:
    rate = parse_rate(rate_text)
    total = int(rate.burst + rate.per_second * seconds)
    wd = workdir("clawd-rates-")
    broker = Mosquitto(wd).start()
    procs: list[ClawdProcess] = []
    try:
        cfg = write_config(wd, broker.port, "distributor", 4)
        with cfg.open("a") as f:
            f.write(f'\n[handlers.noop]\nrate_limit = "{rate_text}"\n')
        d = ClawdProcess(cfg, "distributor", "distributor", wd)
        d.wait_ready()
        procs.append(d)
        for i in (1, 2):
            wcfg = write_config(wd, broker.port, f"worker{i}", 4)
            w = ClawdProcess(wcfg, "worker", f"worker{i}", wd, worker_id=f"bench-w{i}")
            w.wait_ready()
            procs.append(w)
        started: list[float] = []
        with Client(load(str(cfg)), [("clawd/results/+", 1)]) as c:
            cpu0, t0 = cpu_seconds(d.pid), time.monotonic()
            for i in range(total):
                c.publish("clawd/tasks/normal", encode({"id": f"r{i}", "type": "noop"}), qos=1)
            end = time.monotonic() + seconds * 3 + 60
            while len(started) < total and time.monotonic() < end:
                m = c.next(1)
                if m is not None:
                    started.append(decode(m.payload)["started_at"])
            cpu = cpu_seconds(d.pid) - cpu0
            wall = time.monotonic() - t0
    finally:
        for p in reversed(procs):
            p.stop()
        broker.stop()
    started.sort()
    # past the first burst the bucket lets rate * T through: what it actually let through
    span = started[-1] - started[0] if len(started) > 1 else 0.0
    achieved = (len(started) - rate.burst) / span if span else 0.0
    excess = 0.0
    for i in range(len(started)):
        for j in range(i, len(started)):
            allowed = rate.burst + rate.per_second * (started[j] - started[i])
            excess = max(excess, (j - i + 1) - allowed)
    return {
        "tasks": float(len(started)),
        "achieved": achieved,
        "excess": excess,
        "cpu_per_s": cpu / wall if wall else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rates", default="20/s,100/s,500/s", help="comma-separated limits")
    ap.add_argument("--seconds", type=float, default=5.0, help="seconds of tasks at the limit")
    args = ap.parse_args()
    table = Table(
        "limit",
        "tasks",
        "achieved beyond the burst (/s)",
        "largest excess over the bucket (0: held)",
        "distributor CPU s per s",
        title=f"[handlers.noop] rate_limit, {args.seconds:g} s of tasks, 2 workers x 4 slots",
    )
    for text in args.rates.split(","):
        r = run(text.strip(), args.seconds)
        table.add_row(
            text,
            f"{r['tasks']:.0f}",
            f"{r['achieved']:.1f}",
            f"{r['excess']:.2f}",
            f"{r['cpu_per_s']:.3f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
