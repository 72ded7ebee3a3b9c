"""``python -m bench.failover``: HA distributors on PostgreSQL, the leader killed or stalled.

Starts a private PostgreSQL (initdb + pg_ctl, unix socket only) and, per run, a private
mosquitto, two distributors over one journal and two workers (tests/faults/ha.py). Under
a load of sleep tasks the leader is killed (``kill -9``) or stopped (``SIGSTOP``, then
``SIGCONT`` once the standby leads); a third of the tasks is submitted right after the
fault, while no distributor leads; every acknowledged task is accounted for. Prints how
long the standby took to lead and to publish its first result.

    python -m bench.failover --tasks 400 --rounds 3 --lock-timeout 2
"""

from __future__ import annotations

import math
import shutil
import statistics
import tempfile
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from tests.faults.ha import run_failover
from tests.postgres import PgServer


@click.command()
@click.option("--tasks", default=400, show_default=True, help="sleep tasks (50 ms) per run")
@click.option("--rounds", default=3, show_default=True, help="runs per fault")
@click.option("--lock-timeout", default=2.0, show_default=True, help="[journal] lock_timeout")
@click.option(
    "--fault", "faults", multiple=True, default=["kill", "stall", "term"], show_default=True
)
def main(tasks: int, rounds: int, lock_timeout: float, faults: tuple[str, ...]) -> None:
    server = PgServer()
    server.start()
    table = Table(title=f"failover: {tasks} tasks per run, lock_timeout {lock_timeout:g} s")
    for col in [
        "fault",
        "run",
        "acked",
        "submitted during",
        "lost",
        "dup exec",
        "dup result",
        "unexpected",
        "in flight",
        "standby leads after s",
        "first result after s",
        "old leader",
        "stalled write ended",
    ]:
        table.add_column(col, justify="left" if col == "fault" else "right")
    led: dict[str, list[float]] = {}
    try:
        for fault in faults:
            for n in range(rounds):
                work = Path(tempfile.mkdtemp(prefix="clawd-failover-"))
                try:
                    r, tk = run_failover(
                        fault,
                        tasks,
                        workdir=work,
                        journal_url=server.new_database(),
                        lock_timeout=lock_timeout,
                    )
                finally:
                    shutil.rmtree(work, ignore_errors=True)
                led.setdefault(fault, []).append(tk.led_after)
                old = "killed" if tk.old_exit is None else f"exit {tk.old_exit}"
                first = tk.first_result_after
                table.add_row(
                    fault,
                    str(n + 1),
                    f"{r.acked}/{r.tasks}",
                    str(tk.submitted_during),
                    str(r.lost),
                    f"{r.dup_exec} ({r.extra_execs})",
                    str(r.dup_results),
                    str(r.unexpected),
                    str(r.in_flight),
                    f"{tk.led_after:.2f}",
                    "-" if math.isnan(first) else f"{first:.2f}",
                    old,
                    "yes" if tk.ended_write else "no",
                )
    finally:
        server.stop()
    Console(width=160).print(table)
    for fault, xs in led.items():
        med = statistics.median(xs)
        print(f"{fault}: standby leads after median {med:.2f} s, max {max(xs):.2f} s")


if __name__ == "__main__":
    main()
