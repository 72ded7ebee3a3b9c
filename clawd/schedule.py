"""Periodic schedules (``[schedules.<name>]``): when each fires, and the task it submits.

A schedule fires at *slots*: with ``every = N`` the epoch seconds that are multiples of
N (so ``every = 3600`` fires on the hour, UTC, whenever clawd was started), with
``cron = "..."`` the minutes the expression names (UTC, :mod:`clawd.cron`). The task of
slot S has the id ``schedule:<name>:<S>``: the distributor's id dedupe makes a firing
idempotent, so a restart, or the same slot looked at twice, never runs it twice.

``task`` is an envelope as producers publish it (``type``, ``input``, ``lane``,
``requires``, ``timeout``, ``max_attempts``, ``meta``, ``ttl``, ``cost``), without the
keys a schedule decides itself (``id``, ``delay``, ``not_before``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import msgspec

from clawd.cron import Cron, CronError
from clawd.envelope import Rejected, Task, encode, parse_envelope

#: a slot fired this many seconds late is still on time; one later than that was missed
#: (clawd was down) and follows ``catch_up``
GRACE = 30.0
#: envelope keys a schedule sets itself
RESERVED = ("id", "delay", "not_before")


class ScheduleConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[schedules.<name>]``: a task submitted periodically."""

    every: int | None = None
    cron: str | None = None
    task: dict[str, Any] = msgspec.field(default_factory=dict)
    catch_up: Literal["skip", "run_once"] = "skip"


def problems(sc: ScheduleConfig, *, lanes: Any, default_lane: str) -> list[tuple[str, str]]:
    """What is wrong with one schedule: (key, message) pairs."""
    out: list[tuple[str, str]] = []
    if (sc.every is None) == (sc.cron is None):
        out.append(("every", 'set exactly one of "every" (seconds) and "cron" (5 fields)'))
    if sc.every is not None and sc.every < 1:
        out.append(("every", f"must be >= 1 second, not {sc.every}"))
    if sc.cron is not None:
        try:
            Cron(sc.cron)
        except CronError as exc:
            out.append(("cron", str(exc)))
    if not sc.task:
        out.append(("task", 'expected a task envelope like {type = "compute", input = "1+1"}'))
        return out
    for key in RESERVED:
        if key in sc.task:
            out.append(("task", f'"{key}" cannot be set here: the schedule decides it'))
    if not out:
        try:
            build(sc, "check", 0.0, lanes=lanes, default_lane=default_lane)
        except Rejected as exc:
            out.append(("task", exc.error))
    return out


def build(sc: ScheduleConfig, name: str, slot: float, *, lanes: Any, default_lane: str) -> Task:
    """The task of ``slot``, checked like any submission (raises Rejected)."""
    env = {k: v for k, v in sc.task.items() if k not in RESERVED}
    lane = str(env.get("lane") or default_lane)
    env["id"] = slot_id(name, slot)
    task, _ = parse_envelope(["tasks", lane], encode(env), lanes=lanes, max_payload=1 << 30)
    return task


def slot_id(name: str, slot: float) -> str:
    return f"schedule:{name}:{int(slot)}"


def latest_slot(sc: ScheduleConfig, now: float, since: float | None) -> float | None:
    """The last slot at or before ``now`` (and after ``since``, when given)."""
    if sc.every is not None:
        slot = math.floor(now / sc.every) * sc.every
        return float(slot) if since is None or slot > since else None
    assert sc.cron is not None
    lower = since if since is not None else now - 367 * 86400.0
    return Cron(sc.cron).latest_at_or_before(now, since=lower)


def decide(sc: ScheduleConfig, now: float, last: float | None) -> tuple[float | None, bool]:
    """(slot to record, whether to fire it) for one look at the clock.

    A slot not later than the last one recorded is done. A slot that came due within
    :data:`GRACE` fires. One due longer ago was missed while clawd was down: ``skip``
    lets it pass, ``run_once`` fires it (only the latest missed slot, once). A schedule
    seen for the first time never fires a slot from before it existed."""
    slot = latest_slot(sc, now, last)
    if slot is None or (last is not None and slot <= last):
        return None, False
    on_time = now - slot <= GRACE
    if last is None:
        return slot, on_time
    return slot, on_time or sc.catch_up == "run_once"
