"""``clawd task ID``: where one task is (queued, delayed, running where and since when,
attempts), or its result.

The running distributor is asked, with a ``task`` command on ``<prefix>/_/control`` and
an MQTT v5 response topic: only it knows whether an open task is queued, waiting out a
retry's backoff or running, and on which worker; the journal records only "open" or the
terminal result. When no distributor answers, the journal is read instead (read-only),
and the answer says so.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import click

from clawd.cli_common import config_of, fail

#: seconds to wait for the distributor's answer before reading the journal
ANSWER_WAIT = 3.0


@click.command("task")
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@click.option(
    "--timeout", default=ANSWER_WAIT, show_default=True, help="Seconds to wait for the answer."
)
@click.pass_context
def task_command(ctx: click.Context, task_id: str, as_json: bool, timeout: float) -> None:
    """Show where a task is: queued, delayed, running (on which worker, since when), or
    its result."""
    cfg = config_of(ctx)
    doc = _ask(cfg, task_id, timeout)
    if doc is None:
        doc = _from_journal(cfg, task_id)
    if doc is None or doc.get("state") == "unknown":
        fail(f"no task with id {task_id!r} (neither open nor finished in the journal)")
    click.echo(json.dumps(doc, indent=2) if as_json else describe(doc))


def _ask(cfg: Any, task_id: str, timeout: float) -> dict[str, Any] | None:
    """The distributor's answer, or None when it does not answer in time."""
    from clawd.client import ask_distributor
    from clawd.errors import BrokerError

    try:
        return ask_distributor(cfg, {"cmd": "task", "id": task_id}, timeout)  # type: ignore[no-any-return]
    except BrokerError:
        return None


def _from_journal(cfg: Any, task_id: str) -> dict[str, Any] | None:
    from clawd.errors import JournalError
    from clawd.journal import exists, location, open_readonly

    db = location(cfg)
    if not exists(db):
        fail(f"no distributor answered and there is no journal at {db}")
    try:
        journal = open_readonly(db)
        known = journal.lookup_many([task_id]).get(task_id)
        journal.close()
    except JournalError as exc:
        fail(str(exc))
    if known is None:
        return None
    state, result = known
    doc: dict[str, Any] = {"id": task_id, "source": "journal"}
    if result is None:
        doc["state"] = "queued"  # open: queued, delayed or running, the journal cannot tell
    else:
        doc.update(state="done", result=result)
    return doc


def _when(t: float | None) -> str:
    if not t:
        return "?"
    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def describe(doc: dict[str, Any]) -> str:
    """One line or two for people."""
    tid, state = doc["id"], doc["state"]
    counted = doc.get("attempts", 0)
    if doc.get("type") == "group" or (state == "done" and doc["result"].get("type") == "group"):
        return _describe_group(doc)
    if state == "done":
        r = doc["result"]
        line = f"{tid}: {r['status']} after {r.get('attempts', 0)} attempt(s)"
        if r.get("worker"):
            line += f" on {r['worker']}"
        line += f", finished {_when(r.get('finished_at'))}"
        shown = r.get("result", r.get("error"))
        return f"{line}\n{json.dumps(shown)}" if shown is not None else line
    if state == "running":
        return (
            f"{tid}: running on {doc.get('worker', '?')} since {_when(doc.get('since'))} "
            f"(attempt {doc.get('attempt')}, {counted} counted)"
        )
    if state == "delayed":
        return f"{tid}: delayed until {_when(doc.get('until'))} ({counted} attempt(s) so far)"
    if doc.get("source") == "journal":
        return f"{tid}: open (queued, delayed or running: no distributor answered)"
    return f"{tid}: queued ({counted} attempt(s) so far)"


def _describe_group(doc: dict[str, Any]) -> str:
    """An open group (how far its members are) or an ended one (its outcome)."""
    tid = doc["id"]
    r = doc["result"] if doc["state"] == "done" else doc
    members = r.get("members") or []
    counts: dict[str, int] = {}
    for m in members:
        counts[m["status"]] = counts.get(m["status"], 0) + 1
    shown = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    then = r.get("then")
    tail = f", then {then['id']} {then['status']}" if then else ""
    if doc["state"] == "done":
        line = f"{tid}: group {r['status']}, {len(members)} member(s) ({shown}){tail}"
        line += f", finished {_when(r.get('finished_at'))}"
        out = r.get("result", r.get("error"))
        return f"{line}\n{json.dumps(out)}" if out is not None else line
    return f"{tid}: group, {doc.get('done')}/{doc.get('total')} members done ({shown}){tail}"
