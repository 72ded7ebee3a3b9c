"""``python -m bench.partitions``: clawd across hosts under network faults, accounted for.

Each scenario builds its hosts afresh (network namespaces on this machine, joined by
veth pairs through a switch: see tests/netns.py and docs/multihost.md), starts a private
mosquitto on the broker host, a distributor, two workers and a producer each on their
own host, submits N tasks with unique ids, breaks the network, and classifies every
acknowledged id (tests/multihost.py): lost, duplicated executions against what was in
flight when the fault hit, distinct second results, unexpected outcomes, and how long
the system took to do its work again. Needs root (network namespaces) and iproute2.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from tests.multihost import ON_POSTGRES, SCENARIOS, Outcome, run_scenario
from tests.netns import available


def _postgres_installed() -> bool:
    from tests.postgres import _binary

    return _binary("initdb") is not None and _binary("pg_ctl") is not None


def print_table(outcomes: list[Outcome], console: Console) -> None:
    table = Table(title="clawd across hosts (network namespaces)")
    cols = [
        "scenario",
        "submitted",
        "completed",
        "lost",
        "duplicated",
        "in flight at fault",
        "2nd results",
        "fenced",
        "unexpected",
        "detect s",
        "recovery s",
        "seconds",
        "verdict",
    ]
    for col in cols:
        table.add_column(col, justify="left" if col == "scenario" else "right", no_wrap=True)
    for o in outcomes:
        table.add_row(
            o.scenario + (f" ({o.impairment})" if o.impairment else ""),
            str(o.acked if o.acked == o.submitted else f"{o.acked}/{o.submitted}"),
            str(o.completed),
            str(o.lost),
            str(o.duplicated),
            str(o.in_flight),
            str(o.dup_results),
            str(o.fenced),
            str(o.unexpected),
            "-" if o.detect is None else f"{o.detect:.2f}",
            "-" if o.recovery is None else f"{o.recovery:.2f}",
            f"{o.seconds:.0f}",
            "[green]pass[/]" if o.passed else "[red]FAIL[/]",
        )
    console.print(table)
    for o in outcomes:
        if o.old_leader_exit is not None:
            console.print(f"{o.scenario}: the old leader, healed, exited with {o.old_leader_exit}")
        if o.recovery_what:
            console.print(f"{o.scenario}: recovery = {o.recovery_what}")
        for kind, ids in o.examples.items():
            if ids and kind != "dup exec":
                console.print(f"{o.scenario}: {kind}: {len(ids)}, e.g. {', '.join(ids[:5])}")


@click.command(help=__doc__)
@click.option("--tasks", default=300, show_default=True, help="tasks per scenario")
@click.option(
    "--scenario",
    "names",
    multiple=True,
    type=click.Choice(sorted(SCENARIOS)),
    help="run only these (repeatable); default: all",
)
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="also write rows here")
def main(tasks: int, names: tuple[str, ...], json_out: Path | None) -> None:
    why = available()
    if why:
        raise click.ClickException(why)
    console = Console(width=200)
    outcomes = []
    for name in names or tuple(SCENARIOS):
        if name in ON_POSTGRES and not _postgres_installed():
            console.print(
                f"skipping {name}: PostgreSQL is not installed (apt-get install postgresql)"
            )
            continue
        console.print(f"running {name}: {SCENARIOS[name].doc} ({tasks} tasks) ...")
        outcomes.append(run_scenario(name, tasks))
    print_table(outcomes, console)
    if json_out is not None:
        json_out.write_text(json.dumps([asdict(o) for o in outcomes], indent=2) + "\n")
    sys.exit(0 if all(o.passed for o in outcomes) else 1)


if __name__ == "__main__":
    main()
