"""The dispatch pass: which queued task goes to which worker, within the workers' credit.

Lanes are served in the scheduler's order; in a lane the first of the next ``SCAN`` tasks
that some worker can take goes (a task nobody can take now does not block the lane). A
task whose rate limit has no token is parked beside the lane and not counted in the
``SCAN``, so however many tasks of a limited type queue up, the others behind them go. A
worker never gets more than its free slots, and what one worker gets in a turn travels
in one message. Strategies see the fleet's live workers: a grant made earlier in the
same pass already counts in ``in_flight``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from clawd import clock
from clawd.distributor.breakers import Breakers
from clawd.distributor.entry import Entry
from clawd.distributor.fleet import Fleet, WorkerState
from clawd.distributor.lanes import Lane
from clawd.distributor.lifecycle import Lifecycle
from clawd.distributor.tasks import WINDOW, TaskTable
from clawd.envelope import Task, encode
from clawd.strategy import TaskView

if TYPE_CHECKING:
    from clawd.distributor.rates import RateLimits
    from clawd.routing.rules import Rule, RuleTable

log = logging.getLogger("clawd.distributor")

#: how many queued tasks of one lane are scanned for one that some worker can take
SCAN = 64

__all__ = ["SCAN", "WINDOW", "run"]


def run(
    tasks: TaskTable,
    fleet: Fleet,
    breakers: Breakers,
    strategy: Any,
    life: Lifecycle,
    routes: RuleTable | None = None,
    rates: RateLimits | None = None,
) -> None:
    """One pass: grant queued tasks to free workers; stage one dispatch message each.
    With ``routes``, the routing rule that applies to a task narrows its candidates; with
    ``rates``, a task whose type or rule has no token left is parked until it has."""
    free = fleet.free_slots()
    if not free:
        return
    now = clock.monotonic()
    if rates is not None:
        rates.release(tasks, routes, now)
    # the workers with a free slot, in the fleet's order: nothing in a pass frees a slot or
    # brings a worker online, so every task's candidates are among them (fleet.candidates
    # would scan every worker for every task)
    open_ = [w for w in fleet.workers.values() if w.online and w.in_flight < w.capacity]
    config = life.config
    lanes = tasks.lanes
    batches: dict[str, list[Task]] = defaultdict(list)
    blocked: set[str] = set()
    #: the worker kept free for a suspect this pass (at most one is held back)
    reserved: WorkerState | None = None
    wall = clock.wall()
    lease = now + config.distributor.liveness_timeout
    while True:
        lane = lanes.first(blocked)
        if lane is None:
            break
        picked: tuple[int, list[WorkerState] | None, str] | None = None
        rule: Rule | None = None
        queue = lane.queue
        i = 0
        while i < len(queue) and i < SCAN:
            e = queue[i]
            t = e.task
            if t.expires_at is not None and t.expires_at < wall:
                picked = (i, None, "expired")
                break
            if not breakers.type_allows(t.type):
                # the whole type is failing: hold its tasks rather than burn attempts
                if now - e.enqueued_at > config.breaker_config(t.type).hold_seconds:
                    picked = (i, None, "circuit_open")
                    break
                i += 1
                continue
            limited = rates.type_key(t.type, now) if rates is not None else None
            if limited is not None:
                _park(tasks, lane, i, limited, life)
                continue  # the next task moved up to index i
            cands = [
                w
                for w in open_
                if w.can_take(t.type, t.lane, t.requires) and breakers.allows(w.id, t.type)
            ]
            rule = None
            if cands and routes is not None and routes.order:
                # (no candidate at all: no rule can make one, and trying them costs)
                cands, rule = routes.narrow(t, cands, fleet, breakers)
            if e.lost:
                # a suspect of killing its worker runs alone, so that if it does it
                # again no innocent task beside it is blamed (and dead-lettered)
                alone = [w for w in cands if not w.grants]
                if cands and not alone and reserved is None:
                    # no idle worker: the least busy candidate gets nothing new until it
                    # is, so the suspect runs within one task time even under load that
                    # never lets a worker go idle by itself
                    reserved = min(cands, key=lambda w: len(w.grants))
                    open_.remove(reserved)
                cands = alone
            if cands and rates is not None:
                limited = rates.rule_key(rule, now)
                if limited is not None:
                    _park(tasks, lane, i, limited, life)
                    continue
            if cands:
                picked = (i, cands, "")
                break
            i += 1
        if picked is None:
            blocked.add(lane.name)
            continue
        i, found, why = picked
        e = tasks.take(lane, i)
        if found is None:
            _refuse(life, e, why)
            continue
        lanes.served(lane)
        w = _choose(strategy, e, found)
        tasks.start(e, lease, wall)
        fleet.grant(w, e)
        if w.in_flight >= w.capacity:
            open_.remove(w)
        breakers.dispatched(w.id, e.task.type)
        if rates is not None:
            rates.take(e.task.type, rule, now)
        if rule is not None and routes is not None:
            routes.hit(rule)
        batches[w.id].append(e.task)
        life.metrics.dispatched(e.task.lane, now - e.enqueued_at)
        if e.attempt == 1:
            life.metrics.distributed(wall - e.task.submitted_at)
        if lane.spilled and lane.waiting() < WINDOW // 2:
            tasks.page_in(lane)
        free -= 1  # a candidate always had a free slot: the fleet's total drops by one
        if not free:
            break
    dispatch = life.topics.dispatch
    for worker_id, granted in batches.items():
        doc = {"tasks": granted, "epoch": life.outbox.epoch}
        life.outbox.publish(dispatch(worker_id), encode(doc))


def _park(tasks: TaskTable, lane: Lane, index: int, key: str, life: Lifecycle) -> None:
    """A task whose rate limit has no token: parked beside its lane, counted."""
    tasks.park(lane, index, key)
    life.metrics.rate_limited(key)


def _choose(strategy: Any, e: Entry, found: list[WorkerState]) -> WorkerState:
    """The strategy's pick (it comes from ``Plugins.make_strategy``, guarded: one that
    raises or answers a non-candidate is named in the log and overruled)."""
    if len(found) == 1:
        return found[0]
    t = e.task
    view = TaskView(t.id, t.type, t.lane, tuple(t.requires), t.cost, t.meta or {})
    return strategy.choose(view, found)  # type: ignore[no-any-return]


def _refuse(life: Lifecycle, e: Entry, why: str) -> None:
    """A task that will not start: its time to live ran out, or its type's breaker
    stayed open past hold_seconds."""
    if why == "expired":
        life.dead(e, why, "the task's time to live ran out before it started")
    else:
        life.dead(
            e,
            why,
            f"the circuit breaker of type {e.task.type!r} stayed open longer than hold_seconds",
        )
