"""Workflows in the simulation: some submissions become groups or chains, and what must
hold for them after every run.

A group takes the submissions that follow it as its members (so a run's task count
stays about the same) and gets a ``then``; some allow failures. A chain is a task with
a ``then``. After the run:

- a group's result is one logical outcome (checked with every result), its members'
  statuses are the ones their own results say, and it ended after every member did;
- its ``then`` was admitted only after every member had ended (the journal's times),
  never when a member failed without ``allow_failures`` (never dispatched, reported
  ``skipped``), and otherwise ran and decided the group's status and result;
- a chain's ``then`` ran only after its task succeeded, and always when it did;
- nothing of a group is left open once the run settled.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clawd.sim.run import Simulation
    from clawd.sim.workload import Submission

#: chance that a submission starts a group, or gets a then
GROUP_RATE, CHAIN_RATE = 0.04, 0.03
#: plan kinds that may be members or have a then (they end by themselves, on any worker)
SUITABLE = ("ok", "slow", "flaky", "fatal")


def shape(rng: random.Random, subs: list[Submission]) -> list[Submission]:
    """Turn some submissions (in time order) into groups and chains."""
    out: list[Submission] = []
    i = 0
    while i < len(subs):
        s = subs[i]
        i += 1
        if s.plan["kind"] not in SUITABLE or s.type != "sim":
            out.append(s)
            continue
        draw = rng.random()
        if draw < GROUP_RATE:
            members = [_member(s)]
            want = rng.randint(1, 3)
            while want and i < len(subs):
                nxt = subs[i]
                if nxt.plan["kind"] not in SUITABLE or nxt.type != "sim":
                    break
                members.append(_member(nxt))
                i += 1
                want -= 1
            env: dict[str, Any] = {
                "type": "group",
                "id": f"g{s.id}",
                "tasks": members,
                "then": {"type": "sim"},
            }
            if rng.random() < 0.4:
                env["allow_failures"] = True
            s.id, s.type, s.plan, s.envelope = env["id"], "group", {"kind": "group"}, env
        elif draw < GROUP_RATE + CHAIN_RATE:
            s.envelope["then"] = {"type": "sim"}
        out.append(s)
    return out


def _member(s: Submission) -> dict[str, Any]:
    env = dict(s.envelope)
    del env["id"]  # members take <group>.<index>
    return env


def groups(sim: Simulation) -> list[dict[str, Any]]:
    return [s.envelope for s in sim.workload if s.type == "group"]


def pending_thens(sim: Simulation) -> list[str]:
    """Then ids a run must still wait for: chains whose task succeeded."""
    led = sim.ledger
    out = []
    for s in sim.workload:
        if s.type == "group" or "then" not in s.envelope:
            continue
        docs = led.results.get(s.id)
        if docs and docs[0].get("status") == "ok" and f"{s.id}.then" not in led.outcomes:
            out.append(f"{s.id}.then")
    return out


def check(sim: Simulation) -> list[str]:
    led = sim.ledger
    d = sim.distributor.d
    times = _journal_times(sim)
    problems: list[str] = []
    for env in groups(sim):
        gid = env["id"]
        docs = led.results.get(gid)
        if not docs:
            continue  # reported as a missing result
        doc = docs[0]
        members = [f"{gid}.{i}" for i in range(len(env["tasks"]))]
        then_id = f"{gid}.then"
        said = [m.get("status") for m in doc.get("members") or ()]
        own = [(led.results.get(m) or [{}])[0].get("status") for m in members]
        if [m.get("id") for m in doc.get("members") or ()] != members:
            problems.append(f"group {gid}: its result names members {doc.get('members')}")
        elif said != own:
            problems.append(f"group {gid}: result says members {said}, their results say {own}")
        ended = [times.get(m, (None, None))[1] for m in members]
        if any(t is None for t in ended):
            problems.append(f"group {gid} ended while a member had not: {members}, {ended}")
            continue
        last = max(t for t in ended if t is not None)
        failed = any(s != "ok" for s in own)
        ran = then_id in led.dispatches or then_id in led.executions
        then = doc.get("then") or {}
        if failed and not env.get("allow_failures"):
            if ran or then_id in times:
                problems.append(f"group {gid}: its then ran although a member failed ({own})")
            if doc.get("status") != "failed" or then.get("status") != "skipped":
                problems.append(
                    f"group {gid}: a member failed, but it ended {doc.get('status')} "
                    f"with its then {then.get('status')}"
                )
            continue
        if then_id not in times:
            problems.append(f"group {gid}: every member ended ({own}) but its then never ran")
            continue
        if times[then_id][0] < last:
            problems.append(f"group {gid}: its then was admitted before every member ended")
        then_docs = led.results.get(then_id)
        if not then_docs:
            problems.append(f"group {gid} ended, but its then {then_id} has no result")
            continue
        want = then_docs[0].get("status")
        if then.get("status") != want or doc.get("status") != ("ok" if want == "ok" else "failed"):
            problems.append(
                f"group {gid}: ended {doc.get('status')} (then {then.get('status')}), "
                f"but its then's result is {want}"
            )
        elif want == "ok" and doc.get("result") != then_docs[0].get("result"):
            problems.append(f"group {gid}: its result is not its then's")
    for s in sim.workload:
        if s.type == "group" or "then" not in s.envelope:
            continue
        then_id = f"{s.id}.then"
        status = (led.results.get(s.id) or [{}])[0].get("status")
        if status != "ok" and (then_id in times or then_id in led.dispatches):
            problems.append(f"task {s.id} ended {status}, yet its then ran")
        if status == "ok":
            if then_id not in led.results:
                problems.append(f"task {s.id} succeeded, but its then {then_id} has no result")
            elif then_id in times and s.id in times and times[then_id][0] < (times[s.id][1] or 0):
                problems.append(f"task {s.id}: its then was admitted before it ended")
    if d is not None and sim.distributor.alive:
        if d.flows.open:
            problems.append(f"{len(d.flows.open)} group(s) still open: {sorted(d.flows.open)[:5]}")
        if d.journal.open_groups():
            problems.append("groups still open in the journal")
    return problems


def _journal_times(sim: Simulation) -> dict[str, tuple[float, float | None]]:
    """id -> (submitted_at, finished_at) of every task the journal has."""
    d = sim.distributor.d
    if d is None:
        return {}
    rows = d.journal.db.execute("SELECT id, submitted_at, finished_at FROM tasks")
    return {r[0]: (float(r[1]), r[2]) for r in rows}


def member_ids(sim: Simulation) -> set[str]:
    """Every group member's id."""
    return {f"{env['id']}.{i}" for env in groups(sim) for i in range(len(env["tasks"]))}
