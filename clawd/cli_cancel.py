"""``clawd cancel ID...``: end open tasks with ``status: "cancelled"``.

The running distributor is asked with a ``cancel`` command on ``<prefix>/_/control`` and
an MQTT v5 response topic; it answers which ids it cancelled, which had already finished
and which it does not know. Exit status 0 when every id was cancelled, 1 otherwise (one
line on stderr per id that was not), 2 when no distributor answered.
"""

from __future__ import annotations

import json
from typing import Any

import click

from clawd.cli_common import config_of, fail

#: seconds to wait for the distributor's answer
ANSWER_WAIT = 5.0


@click.command("cancel")
@click.argument("ids", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@click.option(
    "--timeout", default=ANSWER_WAIT, show_default=True, help="Seconds to wait for the answer."
)
@click.pass_context
def cancel_command(ctx: click.Context, ids: tuple[str, ...], as_json: bool, timeout: float) -> None:
    """Cancel tasks: queued and delayed ones are dropped, running ones stopped; each
    ends with status "cancelled"."""
    cfg = config_of(ctx)
    answer = _ask(cfg, list(ids), timeout)
    if answer is None:
        fail(f"no distributor answered within {timeout:g} s; nothing was cancelled", 2)
    if as_json:
        click.echo(json.dumps(answer, indent=2))
    else:
        for task_id in answer.get("cancelled", []):
            click.echo(f"{task_id}: cancelled")
    missed = False
    for task_id, status in (answer.get("finished") or {}).items():
        click.echo(f"clawd: {task_id}: already finished ({status}), not cancelled", err=True)
        missed = True
    for task_id in answer.get("unknown") or []:
        click.echo(f"clawd: {task_id}: no such task (neither open nor finished)", err=True)
        missed = True
    if missed:
        ctx.exit(1)


def _ask(cfg: Any, ids: list[str], timeout: float) -> dict[str, Any] | None:
    """The distributor's answer, or None when it does not answer in time."""
    from clawd.client import ask_distributor
    from clawd.errors import BrokerError

    try:
        return ask_distributor(cfg, {"cmd": "cancel", "ids": ids}, timeout)  # type: ignore[no-any-return]
    except BrokerError as exc:
        fail(str(exc), 2)
