"""What must hold after every run, whatever the seed threw at the system.

- every acknowledged submission ends in a terminal result, and in only one: the same
  result published again is fine, two different outcomes for one id are not;
- a result comes from the attempt that was current: its fencing token and worker name a
  run that really ended that way, and no later attempt was ever dispatched;
- fencing tokens are never reused: two dispatches of one task never share an attempt;
- a task runs more than once only for a failed attempt or a fault it was in flight at,
  and a worker reports one outcome per attempt (the simulated handlers are deterministic);
- once settled, nothing is left open in memory, in the journal or in the outbox, and the
  journal's outcome is the published one;
- no ghosts: no retained "online" status, and no worker the distributor believes online,
  for a worker process that is gone; a worker gone for good leaves no retained status or
  breaker state once the distributor has forgotten it.

Checks made during the run (a task both queued and running, the journal and memory
disagreeing after a recovery) are in :mod:`clawd.sim.internals`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from clawd.sim import flows, internals
from clawd.sim.config import FORGET

if TYPE_CHECKING:
    from clawd.sim.run import Simulation

#: plan kinds whose executions may end without an outcome (timed out, took the worker down)
UNFINISHED_OK = ("hang", "poison")


def check(sim: Simulation) -> list[str]:
    return [
        *_results(sim),
        *_letters(sim),
        *_executions(sim),
        *_ghosts(sim),
        *_settled(sim),
        *flows.check(sim),
        *sim.operator.check(),
    ]


def _results(sim: Simulation) -> list[str]:
    led = sim.ledger
    kinds = {s.id: s.plan["kind"] for s in sim.workload}
    problems = []
    missing = sorted(i for i in led.acked if i not in led.outcomes)
    if missing:
        problems.append(
            f"{len(missing)} acknowledged task(s) never got a result: {', '.join(missing[:5])}"
        )
    for task_id, docs in sorted(led.results.items()):
        if len(docs) > 1:
            shown = "; ".join(
                f"{d.get('status')} attempt {d.get('attempts')} on {d.get('worker')}" for d in docs
            )
            problems.append(f"task {task_id} has {len(docs)} different results: {shown}")
        doc = docs[0]
        status, worker = doc.get("status"), doc.get("worker")
        if status in ("rejected", "cancelled") or doc.get("type") == "group":
            # a group's own checks are clawd.sim.flows; a cancel ends a task whatever its
            # attempt did (clawd.sim.operator)
            continue
        # the fencing token of the attempt that ended it: an ok result carries it in its
        # value (the handler returns its attempt), a dead letter in its history
        if status == "ok":
            token = int((doc.get("result") or {}).get("attempt") or 0)
        else:
            token = led.dead_token.get(task_id, 0) or _journal_token(sim, task_id)
        seen = led.dispatches.get(task_id, [])
        latest = max((a for a, _ in seen), default=0)
        if token < latest and (status == "ok" or worker is not None):
            problems.append(
                f"task {task_id}: result of attempt {token} but attempt {latest} was "
                "dispatched (a superseded attempt's result, or a dispatch after the result)"
            )
        if worker is None:
            continue  # dead-lettered without running (poison, circuit open, expired)
        ran = [x for x in led.executions[task_id] if x.attempt == token and x.worker == worker]
        ended = "ok" if status == "ok" else "error"
        # a hang's worker reports it timed out while its handler still runs
        hung = kinds.get(task_id) in UNFINISHED_OK and status != "ok"
        if not hung and not any(x.status == ended for x in ran):
            problems.append(
                f"task {task_id}: result {status} of attempt {token} on {worker}, which "
                f"never ended that way there (ran: {_runs(sim, task_id)})"
            )
    for task_id, seen in sorted(led.dispatches.items()):
        attempts_seen = [a for a, _ in seen]
        if len(set(attempts_seen)) != len(attempts_seen):
            problems.append(
                f"task {task_id}: two dispatches share an attempt (fencing token reused): "
                + ", ".join(f"attempt {a} to {w}" for a, w in seen)
            )
    return problems


def _journal_token(sim: Simulation, task_id: str) -> int:
    """The token a dead letter's history ends with, from the journal."""
    d = sim.distributor.d
    letters = d.journal.dead_letters(task_id) if d is not None else []
    history = letters[0].get("history") or [] if letters else []
    return max((int(r.get("attempt") or 0) for r in history), default=0)


def _letters(sim: Simulation) -> list[str]:
    """Every failed result's dead letter reached the broker (it is owed like the result)."""
    lost = unpublished_letters(sim)
    if not lost:
        return []
    return [f"{len(lost)} dead letter(s) never published: {', '.join(lost[:5])}"]


def unpublished_letters(sim: Simulation) -> list[str]:
    """Failed tasks whose dead letter the broker never got."""
    led = sim.ledger
    return sorted(
        task_id
        for task_id, docs in led.results.items()
        if docs[0].get("status") == "failed"
        and task_id not in led.dead
        and docs[0].get("type") != "group"  # a group's failed members have theirs
    )


def _runs(sim: Simulation, task_id: str) -> str:
    return ", ".join(
        f"{x.attempt}@{x.worker}:{x.status or 'unfinished'}" for x in sim.ledger.executions[task_id]
    )


def _executions(sim: Simulation) -> list[str]:
    led = sim.ledger
    kinds = {s.id: s.plan["kind"] for s in sim.workload}
    problems = []
    for (task_id, attempt, worker), said in sorted(led.reported.items()):
        # a simulated handler's outcome depends only on the task and the attempt (but for
        # a hang: timed out, or done when its worker's loop stalled past its end): one
        # worker reporting two for one attempt credited one run with another's end
        if len(said) > 1 and kinds.get(task_id) not in UNFINISHED_OK:
            problems.append(
                f"{worker} reported {len(said)} outcomes for attempt {attempt} of {task_id}: "
                f"{', '.join(sorted(said))} (ran: {_runs(sim, task_id)})"
            )
    for task_id, runs in sorted(led.executions.items()):
        allowed = 1 + led.exposure[task_id]
        allowed += sum(1 for x in runs if x.status == "error")
        if kinds.get(task_id) in UNFINISHED_OK:
            allowed = len(runs)  # every attempt times out, or takes its worker down
        if len(runs) > allowed:
            problems.append(
                f"task {task_id} ran {len(runs)} times, more than its failures and the "
                f"{led.exposure[task_id]} fault(s) it was in flight at allow "
                f"({_runs(sim, task_id)})"
            )
    return problems


def _ghosts(sim: Simulation) -> list[str]:
    prefix = sim.ledger.topics.worker("")
    alive = {n.worker_id: n.w.session for n in sim.workers if n.alive and n.w is not None}
    problems = []
    retired = {n.worker_id for n in sim.workers if n.retired}
    breakers = f"{sim.ledger.topics.prefix}/breakers/worker/"
    for topic, pkt in sorted(sim.broker.retained.items()):
        if (
            topic.startswith(breakers)
            and FORGET
            and topic[len(breakers) :].split("/")[0] in retired
        ):
            problems.append(f"retained breaker state {topic} outlived its worker")
        if not topic.startswith(prefix):
            continue
        doc = msgspec.json.decode(pkt.payload)
        worker_id = topic[len(prefix) :]
        if doc.get("state") == "online" and alive.get(worker_id) != doc.get("session"):
            problems.append(f"retained status says {worker_id} is online, but it is gone")
        elif FORGET and worker_id in retired:
            problems.append(f"retained status of {worker_id} outlived its forgetting")
    for worker_id, session in sorted(alive.items()):
        kept = sim.broker.retained.get(f"{prefix}{worker_id}")
        doc = msgspec.json.decode(kept.payload) if kept is not None else {}
        if (doc.get("state"), doc.get("session")) != ("online", session):
            problems.append(f"{worker_id} is up, but its retained status says {doc or 'nothing'}")
    d = sim.distributor.d
    if d is not None and sim.distributor.alive:
        # a live worker's retained breaker states are the distributor's, not stale ones
        # retained by a run before it: an open state it does not have is a ghost
        mine = f"{sim.ledger.topics.prefix}/breakers/"
        live = set(alive) & internals.online(d)
        for topic, pkt in sorted(sim.broker.retained.items()):
            if not topic.startswith(mine) or not pkt.payload:
                continue
            key = topic[len(mine) :]
            parts = key.split("/")
            if parts[0] not in ("worker", "eject") or parts[1] not in live:
                continue
            said = msgspec.json.decode(pkt.payload).get("state")
            if said in ("open", "half_open", "ejected") and said != internals.breaker_state(d, key):
                problems.append(f"retained breaker state {topic} says {said}, but it is not")
        for worker_id in sorted(internals.online(d) - set(alive)):
            problems.append(f"the distributor believes {worker_id} online, but it is gone")
    return problems


def _settled(sim: Simulation) -> list[str]:
    d = sim.distributor.d
    led = sim.ledger
    if d is None or not sim.distributor.alive:
        return ["the distributor is not running at the end of the run"]
    if any(i not in led.outcomes for i in led.acked):
        return []  # already reported as missing results
    problems = internals.settled(d)
    stored = internals.journal_results(d)
    for task_id, docs in sorted(led.results.items()):
        status = docs[0].get("status")
        if status == "rejected":
            continue
        state, result = stored.get(task_id, (None, None))
        if state != status:
            problems.append(f"task {task_id}: published {status}, journal says {state}")
        elif result is not None and msgspec.json.decode(result).get("attempts") != docs[0].get(
            "attempts"
        ):
            problems.append(f"task {task_id}: the journal's result is not the published one")
    return problems
