"""``clawd route``: routing rules (add, list, rm) as retained messages on
``<prefix>/routes/<rule_id>``; the same as ``mosquitto_pub -r``."""

from __future__ import annotations

import json
from typing import Any

import click

from clawd.cli_common import config_of, fail
from clawd.envelope import decode, encode


@click.group("route")
def route_group() -> None:
    """Routing rules: add, list, rm."""


def _topic(cfg: Any, rule_id: str) -> str:
    return f"{cfg.broker.prefix}/routes/{rule_id}"


def _publish(ctx: click.Context, rule_id: str, payload: bytes) -> None:
    from clawd.client import Client

    cfg = config_of(ctx)
    with Client(cfg) as c:
        sent = c.transport.publish_tracked(_topic(cfg, rule_id), payload, qos=1, retain=True)
        if not sent.wait(10):
            fail(f"the broker did not acknowledge rule {rule_id} within 10 s")


@route_group.command("add")
@click.argument("rule_id")
@click.option("--match", "match", help='Condition over the task, e.g. "hash(task.id) % 3 == 0".')
@click.option("--target", required=True, help="Worker id or glob (e.g. 'gpu-*').")
@click.option("--priority", type=int, default=0, show_default=True, help="Higher is tried first.")
@click.option("--ttl", type=float, help="Seconds until the rule expires.")
@click.option("--scope", help="Task, group or workflow id: the rule ends when it has a result.")
@click.option("--lane", "lanes", multiple=True, help="Only tasks of this lane (repeatable).")
@click.option("--type", "types", multiple=True, help="Only tasks of this type (repeatable).")
@click.option("--rate-limit", help='Most tasks this rule routes: "10/s", "N/m" or "N/h".')
@click.pass_context
def route_add(
    ctx: click.Context,
    rule_id: str,
    match: str | None,
    target: str,
    priority: int,
    ttl: float | None,
    scope: str | None,
    lanes: tuple[str, ...],
    types: tuple[str, ...],
    rate_limit: str | None,
) -> None:
    """Add or replace rule RULE_ID (checked here first: a bad rule is never published)."""
    from clawd.wire import Unreadable

    try:
        payload = rule_payload(
            rule_id,
            match=match,
            target=target,
            priority=priority,
            ttl=ttl,
            scope=scope,
            lanes=lanes,
            types=types,
            rate_limit=rate_limit,
        )
    except Unreadable as exc:
        fail(exc.error)
    _publish(ctx, rule_id, payload)
    click.echo(f"rule {rule_id} published")


def rule_payload(
    rule_id: str,
    *,
    match: str | None,
    target: str,
    priority: int,
    ttl: float | None,
    scope: str | None,
    lanes: tuple[str, ...],
    types: tuple[str, ...],
    rate_limit: str | None,
) -> bytes:
    """The retained document ``clawd route add`` publishes for these options, checked as
    the distributor will check it (raises :class:`clawd.wire.Unreadable`)."""
    from clawd.routing.rules import decode as decode_rule

    doc: dict[str, Any] = {"target": target, "priority": priority}
    if match is not None:
        doc["match"] = match
    if ttl is not None:
        doc["ttl"] = ttl
    if scope is not None:
        doc["scope"] = scope
    if lanes:
        doc["lanes"] = list(lanes)
    if types:
        doc["types"] = list(types)
    if rate_limit is not None:
        doc["rate_limit"] = rate_limit
    payload = encode(doc)
    decode_rule(rule_id, payload, 0.0)
    return payload


@route_group.command("rm")
@click.argument("rule_ids", nargs=-1, required=True)
@click.pass_context
def route_rm(ctx: click.Context, rule_ids: tuple[str, ...]) -> None:
    """Delete rules (an empty retained payload on their topics)."""
    for rule_id in rule_ids:
        _publish(ctx, rule_id, b"")
        click.echo(f"rule {rule_id} deleted")


@route_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def route_list(ctx: click.Context, as_json: bool) -> None:
    """The rules in force, as the distributor's last metrics snapshot shows them."""
    from clawd.client import Client
    from clawd.topics import Topics

    cfg = config_of(ctx)
    t = Topics(cfg.broker.prefix)
    with Client(cfg, [(t.metrics, 1)]) as c:
        msgs = [m for m in c.collect() if m.topic == t.metrics and m.payload]
    if not msgs:
        fail("no metrics snapshot on the broker: is a distributor running?")
    rules = decode(msgs[-1].payload).get("routes") or []
    if as_json:
        click.echo(json.dumps(rules, indent=2))
        return
    from rich.console import Console

    from clawd.status_view import routes_table

    Console().print(routes_table(rules))
