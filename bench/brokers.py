"""``python -m bench.brokers``: the broker matrix, every check against every standard broker
that installs here (mosquitto, RabbitMQ + MQTT plugin, ejabberd mod_mqtt, amqtt, aedes,
mqttools), each a private instance on free loopback ports. See docs/broker-matrix.md.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

# the broker launchers and checks live with the tests that run the fast half of them
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.brokers.matrix import CHECKS, FAST, SERVERS, Row, run_row  # noqa: E402

console = Console(width=160)
MARK = {
    "pass": "[green]pass[/green]",
    "fail": "[red]FAIL[/red]",
    "n/a": "[dim]n/a[/dim]",
    "limit": "[yellow]broker[/yellow]",
}


def render(rows: list[Row], checks: tuple[str, ...]) -> Table:
    t = Table(title="clawd against standard MQTT brokers")
    for col in ("broker", "version", "MQTT", *checks, "s"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            r.broker,
            r.version,
            r.protocols,
            *(MARK[r.checks[c].status] if c in r.checks else "" for c in checks),
            f"{r.seconds:.0f}",
        )
    return t


def reasons(rows: list[Row]) -> list[str]:
    return [
        f"{r.broker} {name}: {c.status}: {c.detail}"
        for r in rows
        for name, c in r.checks.items()
        if c.detail
    ]


@click.command()
@click.option("--broker", "brokers", multiple=True, type=click.Choice(list(SERVERS)))
@click.option("--fast", is_flag=True, help=f"Only the quick checks: {', '.join(FAST)}.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write rows here.")
@click.option("--keep", is_flag=True, help="Keep the brokers' and clawd's logs and data.")
def main(brokers: tuple[str, ...], fast: bool, json_out: str | None, keep: bool) -> None:
    """Run the broker matrix and print the table (and every reason)."""
    checks = FAST if fast else CHECKS
    workdir = Path(tempfile.mkdtemp(prefix="clawd-brokers-"))
    rows = []
    try:
        for name in brokers or tuple(SERVERS):
            console.print(f"[dim]{name} ...[/dim]")
            rows.append(run_row(name, workdir, checks))
    finally:
        if keep or os.environ.get("CLAWD_BENCH_KEEP"):
            console.print(f"logs and data kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    console.print(render(rows, checks))
    for line in reasons(rows):
        console.print(line, markup=False)
    if json_out:
        Path(json_out).write_text(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()
