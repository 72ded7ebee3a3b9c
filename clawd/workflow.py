"""Workflows on the wire: groups (members run in parallel, then one task with all their
results) and chains (a task's ``then`` runs with its result).

A group envelope is ``{"type": "group", "id": G, "tasks": [<envelopes>], "then"?,
"allow_failures"?}``; any task envelope may carry ``then``. Everything about one is
checked here, at submission, so that nothing can go wrong later for a reason the
producer could have been told at once: members, nested groups and every ``then`` down
the chain are parsed by the same parser as a submission.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import msgspec

from clawd import clock
from clawd.envelope import Envelope, Rejected, Task, check_id, encode, parse_item

#: most members one group may have (nested groups count as one member each)
MAX_MEMBERS = 1000
#: most groups and ``then`` envelopes one envelope may be nested in
MAX_DEPTH = 8
#: the type that makes an envelope a group
GROUP = "group"


@dataclass
class Group:
    """A parsed group: its members (tasks or groups), in order."""

    id: str
    lane: str
    members: list[Any]
    then: dict[str, Any] | None = None
    allow_failures: bool = False
    meta: dict[str, Any] | None = None
    submitted_at: float = 0.0
    #: ids of the members, in order (what the journal keeps)
    member_ids: list[str] = field(default_factory=list)

    def doc(self) -> dict[str, Any]:
        """What the journal keeps of an open group (its members are journaled apart)."""
        out: dict[str, Any] = {
            "id": self.id,
            "lane": self.lane,
            "members": self.member_ids,
            "allow_failures": self.allow_failures,
            "submitted_at": self.submitted_at,
        }
        if self.then is not None:
            out["then"] = self.then
        if self.meta:
            out["meta"] = self.meta
        return out

    @property
    def then_id(self) -> str | None:
        return None if self.then is None else str(self.then["id"])


def is_group(env: Envelope, topic_type: str | None) -> bool:
    """Whether an envelope is a group; group-only fields on a task are refused."""
    kind = env.type if env.type is not None else topic_type
    if kind == GROUP:
        return True
    if env.tasks is not msgspec.UNSET:
        raise Rejected('"tasks" belongs to a group envelope: give "type": "group"')
    if env.allow_failures is not None:
        raise Rejected('"allow_failures" belongs to a group envelope: give "type": "group"')
    return False


def build_group(
    env: Envelope,
    group_id: str,
    lane: str,
    topic_type: str | None,
    *,
    lanes: Any,
    now: float | None,
    known_types: AbstractSet[str] | None,
    depth: int,
) -> Group:
    """A group envelope, checked whole: members, nested groups, ``then``."""
    if depth >= MAX_DEPTH:
        raise Rejected(f"groups and thens are nested more than {MAX_DEPTH} deep")
    if topic_type not in (None, GROUP):
        raise Rejected(f"a group cannot be published on a task type's topic ({topic_type!r})")
    if env.lane is not None and env.lane != lane:
        raise Rejected(f"envelope lane {env.lane!r} does not match topic lane {lane!r}")
    if lane not in lanes:
        raise Rejected(f"unknown lane {lane!r} (configured lanes: {', '.join(sorted(lanes))})")
    for name, value in (("input", env.input), ("task", env.task)):
        if value is not msgspec.UNSET:
            raise Rejected(f'a group has no "{name}": its members carry their own')
    for name in ("requires", "timeout", "max_attempts", "ttl", "cost", "delay", "not_before"):
        if getattr(env, name) not in (None, []):
            raise Rejected(f'"{name}" is a task field: give it to the group\'s members')
    members = env.tasks
    if members is msgspec.UNSET or members is None:
        raise Rejected('a group needs "tasks": a list of task envelopes')
    if not isinstance(members, list):
        raise Rejected(f'a group\'s "tasks" must be a list of envelopes, not {_kind(members)}')
    if not members:
        raise Rejected('a group\'s "tasks" is empty: give at least one task envelope')
    if len(members) > MAX_MEMBERS:
        raise Rejected(f"a group has at most {MAX_MEMBERS} members, this one has {len(members)}")
    now = clock.wall() if now is None else now
    group = Group(
        id=group_id,
        lane=lane,
        members=[],
        allow_failures=bool(env.allow_failures),
        meta=env.meta,
        submitted_at=now,
    )
    seen: dict[str, int] = {}
    for index, member in enumerate(members):
        where = f"member {index}"
        if not isinstance(member, dict):
            raise Rejected(
                f"{where} of group {group_id}: expected a task envelope, not {_kind(member)}"
            )
        member = dict(member)
        member.setdefault("id", derived_id(group_id, str(index), where))
        where = f"member {index} ({str(member['id'])[:60]!r})"
        item = _parse_nested(
            member,
            member.get("lane") if isinstance(member.get("lane"), str) else lane,
            where,
            group_id,
            lanes=lanes,
            now=now,
            known_types=known_types,
            depth=depth + 1,
        )
        if item.id in seen:
            raise Rejected(
                f"{where} of group {group_id}: id {item.id!r} is also member {seen[item.id]}"
            )
        if item.id == group_id:
            raise Rejected(f"{where} of group {group_id}: a member cannot take the group's id")
        seen[item.id] = index
        group.members.append(item)
        group.member_ids.append(item.id)
    if env.then is not None:
        group.then = check_then(
            env.then, group_id, lane, lanes=lanes, known_types=known_types, depth=depth
        )
        if group.then["id"] in seen:
            raise Rejected(f"group {group_id}: its then's id {group.then['id']!r} is a member's")
    return group


def check_then(
    then: Any,
    parent_id: str,
    lane: str,
    *,
    lanes: Any,
    known_types: AbstractSet[str] | None,
    depth: int,
) -> dict[str, Any]:
    """A ``then`` envelope, checked as a submission would be; returned with its id
    (default ``<parent>.then``) and lane filled in, ready to run once its input is known."""
    where = f"the then of {parent_id}"
    if depth + 1 >= MAX_DEPTH:
        raise Rejected(f"{where}: groups and thens are nested more than {MAX_DEPTH} deep")
    if not isinstance(then, dict):
        raise Rejected(f"{where}: expected a task envelope, not {_kind(then)}")
    if then.get("type") == GROUP or "tasks" in then:
        raise Rejected(f"{where}: a then is a task, not a group")
    if "input" in then or "task" in then:
        raise Rejected(f'{where}: give no "input": a then\'s input is what came before it')
    doc = dict(then)
    doc.setdefault("id", derived_id(parent_id, "then", where))
    doc.setdefault("lane", lane)
    _parse_nested(
        doc,
        doc["lane"] if isinstance(doc["lane"], str) else lane,
        where,
        parent_id,
        lanes=lanes,
        now=None,
        known_types=known_types,
        depth=depth + 1,
    )
    return doc


def then_task(then: dict[str, Any], value: Any, *, lanes: Any) -> Task:
    """The task a ``then`` becomes once its input is known (Rejected when it no longer
    fits the configuration, e.g. its lane was removed by a reload)."""
    lane = str(then.get("lane"))
    item, _ = parse_item(
        ["tasks", lane], encode({**then, "input": value}), lanes=lanes, max_payload=1 << 62
    )
    assert isinstance(item, Task)
    return item


def derived_id(parent: str, suffix: str, where: str) -> str:
    """``<parent>.<suffix>``, refused when that is no valid id (too long)."""
    try:
        return check_id(f"{parent}.{suffix}")
    except Rejected:
        raise Rejected(
            f"{where}: its default id {parent}.{suffix} is longer than 128 characters; "
            'give it an "id"'
        ) from None


def _parse_nested(
    doc: dict[str, Any],
    lane: Any,
    where: str,
    parent: str,
    *,
    lanes: Any,
    now: float | None,
    known_types: AbstractSet[str] | None,
    depth: int,
) -> Any:
    try:
        item, _ = parse_item(
            ["tasks", str(lane)],
            encode(doc),
            lanes=lanes,
            max_payload=1 << 62,
            now=now,
            known_types=known_types,
            depth=depth,
        )
    except Rejected as exc:
        raise Rejected(f"{where} of {parent}: {exc.error}") from None
    except (TypeError, ValueError, OverflowError) as exc:  # not encodable back (a huge int)
        raise Rejected(f"{where} of {parent}: {exc}") from None
    return item


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else "null"
    )
