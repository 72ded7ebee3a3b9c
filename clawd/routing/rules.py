"""Routing rules: retained documents on ``<prefix>/routes/<rule_id>``, in force until
deleted, expired (``ttl``) or out of scope (``scope``).

    {"match": "hash(task.id) % 3 == 0", "target": "worker-0", "priority": 500,
     "ttl": 600, "scope": "batch-7", "lanes": ["normal"], "types": ["resize"],
     "rate_limit": "10/s"}

At dispatch, the rules are tried from the highest priority down (ties by rule id). A rule
applies to a task when its ``lanes`` and ``types`` (if given) include the task's and its
``match`` condition (if given) holds. The first applying rule with at least one *able*
target (a worker its ``target`` names or glob matches that is online, serves the type
and lane, has the required capabilities and a closed breaker) decides: the task goes to
one of those targets, chosen by the configured strategy, and waits in its lane while
they are all busy (or while its ``rate_limit``, if any, has no token left: see
:mod:`clawd.distributor.rates`). A rule whose targets are all unable (gone, lacking the handler) is
passed over; when no rule decides, the strategy chooses among every candidate.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from clawd import clock
from clawd.routing.expr import Condition, ExprError, parse
from clawd.token_bucket import Rate, parse_rate
from clawd.wire import Unreadable

if TYPE_CHECKING:
    from clawd.distributor.breakers import Breakers
    from clawd.distributor.fleet import Fleet, WorkerState
    from clawd.envelope import Task
    from clawd.journal import Journal

log = logging.getLogger("clawd.routing")

#: a rule id is one topic level
RULE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")
#: a target: a worker id, or a glob of them (``*``, ``?``, ``[...]``)
TARGET = re.compile(r"[A-Za-z0-9._:*?\[\]!-]{1,128}\Z")
#: largest rule document, bytes
MAX_RULE = 16 * 1024
#: most targets in one rule
MAX_TARGETS = 64
#: most rules in force at once (each is tried for every task scanned at dispatch)
MAX_RULES = 1000

Names = Annotated[list[str], msgspec.Meta(max_length=256)]


class RuleDoc(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """A rule as published; every field but ``target`` is optional."""

    target: str | list[str]
    match: str | None = None
    priority: int = 0
    ttl: Annotated[float, msgspec.Meta(gt=0)] | None = None
    scope: str | None = None
    lanes: Names | None = None
    types: Names | None = None
    #: "N/s", "N/m" or "N/h": tasks this rule routes, across all its targets
    rate_limit: str | None = None


_decode = msgspec.json.Decoder(RuleDoc).decode


@dataclass
class Rule:
    """A rule in force."""

    id: str
    doc: RuleDoc
    condition: Condition | None
    targets: tuple[str, ...]
    raw: bytes
    #: wall-clock seconds when this version of the rule arrived
    added_at: float
    hits: int = 0
    #: the parsed ``rate_limit``
    rate: Rate | None = None

    @property
    def expires_at(self) -> float | None:
        return None if self.doc.ttl is None else self.added_at + self.doc.ttl

    def live(self, wall: float) -> bool:
        exp = self.expires_at
        return exp is None or wall < exp

    def applies(self, task: Task, view: dict[str, Any]) -> bool:
        d = self.doc
        if d.lanes is not None and task.lane not in d.lanes:
            return False
        if d.types is not None and task.type not in d.types:
            return False
        return self.condition is None or self.condition(view)

    def names(self, worker_id: str) -> bool:
        return any(fnmatch.fnmatchcase(worker_id, t) for t in self.targets)

    def describe(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"id": self.id, **msgspec.to_builtins(self.doc), "hits": self.hits}
        doc["priority"] = self.doc.priority
        if self.expires_at is not None:
            doc["expires_at"] = round(self.expires_at, 3)
        return doc


def decode(rule_id: str, payload: bytes, added_at: float) -> Rule:
    """A rule from its retained document, or :class:`Unreadable` naming what is wrong."""
    where = f"routing rule {rule_id!r}"
    if not RULE_ID.match(rule_id):
        raise Unreadable(f"{where}: a rule id is 1-128 characters of A-Z a-z 0-9 . _ : -")
    if len(payload) > MAX_RULE:
        raise Unreadable(f"{where}: {len(payload)} bytes (at most {MAX_RULE})")
    try:
        doc = _decode(payload)
        payload.decode("utf-8")
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise Unreadable(f"{where}: {exc}") from None
    except (RecursionError, UnicodeDecodeError):
        raise Unreadable(f"{where}: not valid UTF-8 JSON of a sane depth") from None
    targets = (doc.target,) if isinstance(doc.target, str) else tuple(doc.target)
    if not targets or len(targets) > MAX_TARGETS:
        raise Unreadable(f"{where}: target must name 1-{MAX_TARGETS} workers or globs")
    for t in targets:
        if not isinstance(t, str) or not TARGET.match(t):
            raise Unreadable(
                f"{where}: target {t!r} is not a worker id or glob "
                "(A-Z a-z 0-9 . _ : - and * ? [ ] !)"
            )
    if doc.scope is not None and not RULE_ID.match(doc.scope):
        raise Unreadable(f"{where}: scope {doc.scope!r} is not a task, group or workflow id")
    condition = None
    if doc.match is not None:
        try:
            condition = parse(doc.match)
        except ExprError as exc:
            raise Unreadable(f"{where}: match: {exc}") from None
    rate = None
    if doc.rate_limit is not None:
        try:
            rate = parse_rate(doc.rate_limit)
        except ValueError as exc:
            raise Unreadable(f"{where}: rate_limit: {exc}") from None
    return Rule(rule_id, doc, condition, targets, payload, added_at, rate=rate)


def task_view(task: Task) -> dict[str, Any]:
    """What a condition reads of a task (``task.<field>``)."""
    return {
        "id": task.id,
        "type": task.type,
        "lane": task.lane,
        "requires": list(task.requires),
        "meta": task.meta or {},
        "cost": task.cost,
        "attempt": task.attempt,
    }


class RuleTable:
    """The rules in force, journaled; ``clear`` publishes the empty retained payload that
    removes a rule the distributor ended (expired, out of scope) from the broker."""

    def __init__(self, journal: Journal, clear: Callable[[str], None]) -> None:
        self.journal = journal
        self.clear = clear
        self.rules: dict[str, Rule] = {}
        #: rules by (-priority, id): the order they are tried in
        self.order: list[Rule] = []
        #: bumped on every change (the metrics snapshot is republished soon after)
        self.version = 0

    def load(self) -> int:
        """The journaled rules (after a restart, whatever the broker still retains)."""
        for rule_id, body, added_at in self.journal.routes():
            try:
                self._put(decode(rule_id, body, added_at))
            except Unreadable as exc:  # written by a version that accepted more
                log.warning("journaled %s; dropped", exc.error)
                self.journal.delete_route(rule_id)
        return len(self.rules)

    def receive(self, rule_id: str, payload: bytes) -> None:
        """A retained message on ``routes/<rule_id>``: empty deletes, else add or replace.
        A rule that does not decode raises :class:`Unreadable`; whatever was in force
        under its id stays in force."""
        if not payload:
            self.remove(rule_id, "deleted")
            return
        old = self.rules.get(rule_id)
        if old is not None and old.raw == payload:
            return  # the broker's retained copy again (a reconnect): its TTL runs on
        try:
            rule = decode(rule_id, payload, clock.wall())
        except Unreadable as exc:
            kept = "; the rule in force under that id stays" if old is not None else ""
            raise Unreadable(f"{exc.error}{kept}") from None
        if old is None and len(self.rules) >= MAX_RULES:
            raise Unreadable(
                f"routing rule {rule_id!r}: {MAX_RULES} rules are in force already "
                "(delete some first)"
            )
        self.journal.save_route(rule_id, payload, rule.added_at)
        self._put(rule)
        log.info("routing rule %s %s", rule_id, "replaced" if old else "added")

    def remove(self, rule_id: str, why: str) -> bool:
        rule = self.rules.pop(rule_id, None)
        self.journal.delete_route(rule_id)
        if rule is None:
            return False
        self.order.remove(rule)
        self.version += 1
        log.info("routing rule %s %s", rule_id, why)
        return True

    def _put(self, rule: Rule) -> None:
        old = self.rules.get(rule.id)
        if old is not None:
            self.order.remove(old)
        self.rules[rule.id] = rule
        self.order.append(rule)
        self.order.sort(key=lambda r: (-r.doc.priority, r.id))
        self.version += 1

    def tick(self) -> None:
        """End the rules whose TTL ran out or whose scope ended, and clear them from the
        broker. A scope ends when the task (group, workflow) of that id has a result."""
        if not self.rules:
            return
        wall = clock.wall()
        ended = [(r.id, "expired") for r in self.order if not r.live(wall)]
        scopes = {r.doc.scope for r in self.order if r.doc.scope is not None}
        if scopes:
            done = self.journal.finished(sorted(scopes))
            ended += [(r.id, "out of scope") for r in self.order if r.doc.scope in done]
        for rule_id, why in ended:
            if self.remove(rule_id, why):
                self.clear(rule_id)

    # -- dispatch ------------------------------------------------------------------------

    def narrow(
        self,
        task: Task,
        candidates: list[WorkerState],
        fleet: Fleet,
        breakers: Breakers,
    ) -> tuple[list[WorkerState], Rule | None]:
        """The candidates a task may go to now, and the rule that decided (None: none
        did, every candidate stays)."""
        if not self.order:
            return candidates, None
        wall = clock.wall()
        view: dict[str, Any] | None = None
        able: list[WorkerState] | None = None
        for rule in self.order:
            if not rule.live(wall):
                continue
            if view is None:
                view = task_view(task)
            if not rule.applies(task, view):
                continue
            if able is None:
                able = _able(task, fleet, breakers)
            if any(rule.names(w.id) for w in able):
                return [w for w in candidates if rule.names(w.id)], rule
        return candidates, None

    def hit(self, rule: Rule) -> None:
        rule.hits += 1

    def snapshot(self) -> list[dict[str, Any]]:
        return [r.describe() for r in self.order]


def _able(task: Task, fleet: Fleet, breakers: Breakers) -> list[WorkerState]:
    """Workers that could take ``task`` but for a free slot."""
    return [
        w
        for w in fleet.workers.values()
        if w.online
        and task.type in w.handlers
        and (not w.lanes or task.lane in w.lanes)
        and (not task.requires or w.capabilities.issuperset(task.requires))
        and breakers.allows(w.id, task.type)
    ]
