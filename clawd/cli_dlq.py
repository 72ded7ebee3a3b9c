"""``clawd dlq``: dead letters (list, show, replay, purge)."""

from __future__ import annotations

import json
from typing import Any

import click

from clawd.cli_common import config_of, fail
from clawd.envelope import encode

# -- dead letters ----------------------------------------------------------------------


@click.group("dlq")
def dlq_group() -> None:
    """Dead letters: list, show, replay, purge."""


def _journal(ctx: click.Context) -> Any:
    from clawd.journal import exists, location, open_readonly

    cfg = config_of(ctx)
    db = location(cfg)
    if not exists(db):
        fail(f"no journal at {db} (is the distributor running with this state dir?)")
    return open_readonly(db)


@dlq_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def dlq_list(ctx: click.Context, as_json: bool) -> None:
    """List dead letters."""
    letters = _journal(ctx).dead_letters()
    if as_json:
        click.echo(json.dumps(letters, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "lane", "type", "reason", "attempts", "error")
    for d in letters:
        table.add_row(
            d["id"],
            d["lane"],
            d["type"],
            d["reason"],
            str(d["attempts"]),
            str(d.get("error", ""))[:60],
        )
    Console().print(table)


@dlq_group.command("show")
@click.argument("task_id")
@click.pass_context
def dlq_show(ctx: click.Context, task_id: str) -> None:
    """Show one dead letter with its attempt history."""
    letters = _journal(ctx).dead_letters(task_id)
    if not letters:
        fail(f"no dead letter with id {task_id}")
    click.echo(json.dumps(letters[0], indent=2))


def _control(ctx: click.Context, cmd: dict[str, Any]) -> None:
    from clawd.client import Client
    from clawd.topics import Topics

    cfg = config_of(ctx)
    with Client(cfg) as c:
        c.publish_acked(Topics(cfg.broker.prefix).control, encode(cmd))


def _check_dead(ctx: click.Context, ids: tuple[str, ...]) -> None:
    """Fail, naming them, when some of ``ids`` are not dead letters."""
    journal = _journal(ctx)
    unknown = [i for i in ids if not journal.dead_letters(i)]
    journal.db.close()
    if unknown:
        fail(f"no dead letter with id {', '.join(unknown)} (clawd dlq list shows them)")


@dlq_group.command("replay")
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Replay every dead letter.")
@click.pass_context
def dlq_replay(ctx: click.Context, ids: tuple[str, ...], all_: bool) -> None:
    """Put dead-lettered tasks back in their lanes with fresh attempts."""
    if not ids and not all_:
        raise click.UsageError("give task ids or --all")
    _check_dead(ctx, ids)
    _control(ctx, {"cmd": "replay", "ids": list(ids)} if ids else {"cmd": "replay"})
    click.echo(f"replay requested for {', '.join(ids) if ids else 'all dead letters'}")


@dlq_group.command("purge")
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Delete every dead letter.")
@click.pass_context
def dlq_purge(ctx: click.Context, ids: tuple[str, ...], all_: bool) -> None:
    """Delete dead letters: the given ids, or every one (no ids, or --all)."""
    _check_dead(ctx, ids)
    _control(ctx, {"cmd": "purge", "ids": list(ids)} if ids else {"cmd": "purge"})
    click.echo(f"purge requested for {', '.join(ids) if ids else 'all dead letters'}")
