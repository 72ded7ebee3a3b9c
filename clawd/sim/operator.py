"""What an operator does to a simulated run besides faults, and what must hold after it.

Drawn from the seed, on top of the workload and the faults:

- **rate limits**: a task type ``metered`` with ``[handlers.metered] rate_limit``, and a
  routing rule ``rl`` with a ``rate_limit`` for the tasks whose ``meta.rl`` is true;
- **delayed tasks**: some submissions carry ``delay`` or ``not_before`` (stamped when
  published), across whatever crashes the seed brings;
- **routing rules** published, replaced and deleted mid-run (retained, as
  ``mosquitto_pub -r`` does): rules pinning a share of the tasks to one worker with a
  short TTL, rules scoped to a task of the workload, rules for one lane;
- **cancels** of tasks queued, delayed or in flight (racing their completion);
- **a schedule** (``[schedules.tick]``), its catch-up policy drawn; in some seeds the
  distributor is down for longer than the schedule's grace across one of its slots.

Invariants checked at the end (:meth:`Operator.check`), from what was published:

- no window of dispatches of a limited type (or of the tasks a limited rule routes), in
  one distributor's life, holds more than its bucket allows (``burst + rate * T``);
- no dispatch of a delayed task was sent before its time;
- a cancelled result was asked for, and no dispatch of the task was sent after it;
- each schedule slot fired at most once (the generic checks: one result per id), a slot
  missed while the distributor was down fired only under ``catch_up = "run_once"``, and
  then exactly once;
- once settled, the rules in force (in the distributor and retained on the broker) are
  exactly those that should be: expired, scope-ended and deleted ones are gone.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import msgspec

from clawd import hookimpl
from clawd.config import HandlerConfig
from clawd.schedule import GRACE, ScheduleConfig
from clawd.sim import flows
from clawd.sim.broker import Packet
from clawd.sim.workload import Submission, run_plan
from clawd.token_bucket import parse_rate

if TYPE_CHECKING:
    from clawd.sim.run import Simulation

METERED = "metered"
SCHEDULE = "tick"
#: the rule that limits the tasks with meta.rl
RL_RULE = "rl"
#: the period of the schedule in seeds with a long distributor outage
LONG_EVERY = 40


class MeteredHandlers:
    """The plugin registering the rate-limited simulated type."""

    @hookimpl
    def clawd_register_handlers(self, register: Any) -> None:
        register(METERED, run_plan, description="simulated work under a rate limit")


class Operator:
    def __init__(self, sim: Simulation, *, calm: bool = False, ha: bool = False) -> None:
        self.sim = sim
        rng = sim.rng
        self.metered_rate = f"{rng.choice((2, 4, 8))}/s"
        self.rule_rate = f"{rng.choice((2, 5))}/s"
        #: a distributor outage longer than the schedule's grace, across one of its slots
        self.outage = rng.random() < 0.15
        self.every = LONG_EVERY if self.outage else rng.choice((1, 2, 3))
        self.catch_up = rng.choice(("skip", "run_once"))
        self.n_rules = rng.randint(1, 6)
        self.n_cancels = rng.randint(0, 5)
        #: a calm run: limits and delays only (nothing that ends or adds tasks, no outage)
        self.calm = calm
        if calm:
            self.outage, self.n_rules, self.n_cancels = False, 0, 0
        #: with two distributors (``--ha``) the leader faults are the outages, and the
        #: dispatches of a deposed leader and of its successor share one client id: the
        #: rate windows (per distributor life) are not told apart, so they are not checked
        self.ha = ha
        if ha:
            self.outage = False
            self.every = rng.choice((1, 2, 3))
        #: id -> seconds after its publication before which it must not be dispatched
        self.delays: dict[str, float] = {}
        #: ids whose not_before is stamped when published (the others carry ``delay``)
        self.absolute: set[str] = set()
        #: id -> wall time it was first published
        self.published: dict[str, float] = {}
        #: id -> the not_before it was published with (of the ``absolute`` ones)
        self.not_before: dict[str, float] = {}
        #: every dispatch the distributor sent: (wall, incarnation, id, type, meta.rl)
        self.sends: list[tuple[float, int, str, str, bool]] = []
        #: id -> wall time its first cancelled result reached the broker
        self.cancelled_at: dict[str, float] = {}
        self.cancel_asked: set[str] = set()
        #: rule id -> its document as last published by the operator (None: deleted)
        self.rules: dict[str, dict[str, Any] | None] = {}
        #: simulated time until which the operator still acts (the run waits for it)
        self.quiet_at = 0.0
        handlers = dict(sim.config.handlers)
        handlers[METERED] = HandlerConfig(rate_limit=self.metered_rate)
        schedules = {
            SCHEDULE: ScheduleConfig(
                every=self.every,
                task={"type": "sim", "input": {"kind": "ok", "ms": 5.0}},
                catch_up=self.catch_up,  # type: ignore[arg-type]
            )
        }
        if calm:
            schedules = {}
        sim.config = msgspec.structs.replace(sim.config, handlers=handlers, schedules=schedules)

    # -- the workload --------------------------------------------------------------------

    def decorate(self, workload: list[Submission]) -> None:
        """Make some submissions metered, rate-limited by rule, or delayed."""
        rng = self.sim.rng
        for sub in workload:
            env = sub.envelope
            if sub.type == "group":
                continue  # groups are clawd.sim.flows' (their members keep their envelopes)
            if env["type"] == "sim" and rng.random() < 0.12:
                env["type"] = sub.type = METERED
            if rng.random() < 0.1:
                env["meta"] = {"rl": True}
            if rng.random() < 0.08:
                d = self.delays[sub.id] = round(rng.uniform(0.5, 6.0), 3)
                if rng.random() < 0.5:
                    env["delay"] = d
                else:
                    self.absolute.add(sub.id)

    def envelope(self, sub: Submission) -> dict[str, Any]:
        """The envelope as published now (a ``not_before`` is stamped at publication)."""
        wall = self.sim.clock.wall()
        first = self.published.setdefault(sub.id, wall)
        if sub.id in self.absolute:
            # the time as sent is the one to keep (rounded: it may be a little before
            # first + delay)
            nb = self.not_before.setdefault(sub.id, round(first + self.delays[sub.id], 3))
            return {**sub.envelope, "not_before": nb}
        return sub.envelope

    # -- the actions ---------------------------------------------------------------------

    def schedule(self, start: float, fault_end: float) -> None:
        """Plan the rule changes, cancels and the outage between ``start`` and
        ``fault_end`` (simulated monotonic times)."""
        sim = self.sim
        rng = sim.rng
        clk = sim.clock
        for n in range(self.n_rules):
            clk.at(rng.uniform(start, fault_end - 2.0), self._rule_change(f"op{n % 3}"))
        for _ in range(self.n_cancels):
            clk.at(rng.uniform(start, fault_end), self._cancel)
        self.quiet_at = fault_end
        if self.outage:
            # down from just before a slot until past the grace after it
            slot = (int(clk.wall() // self.every) + 1) * self.every
            begin = clk.now + (slot - clk.wall()) - rng.uniform(0.5, 3.0)
            down = GRACE + rng.uniform(5.0, 9.0)
            clk.at(begin, lambda: self._outage(down))
            self.quiet_at = max(fault_end, begin + down + 2.0)
        clk.at(self.quiet_at, self._end_schedule)

    def prepare(self) -> None:
        """Before the workload: the rule that limits the ``meta.rl`` tasks (the run waits
        until the distributor has it, see :meth:`ready`, so every such task is routed by
        it)."""
        rl = {"target": "*", "match": "task.meta.rl == true", "priority": 1000}
        self._rule(RL_RULE, {**rl, "rate_limit": self.rule_rate})

    def ready(self) -> bool:
        from clawd.sim import internals

        d = self.sim.distributor.d
        return d is not None and RL_RULE in internals.rules(d)

    def _publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.sim.producer.publish(topic, payload, qos=1, retain=retain)

    def _rule(self, rule_id: str, doc: dict[str, Any] | None) -> None:
        self.rules[rule_id] = doc
        payload = b"" if doc is None else json.dumps(doc).encode()
        self._publish(f"{self.sim.config.broker.prefix}/routes/{rule_id}", payload, retain=True)

    def _rule_change(self, rule_id: str) -> Any:
        return lambda: self._change(rule_id)

    def _change(self, rule_id: str) -> None:
        sim = self.sim
        rng = sim.rng
        sim.faults.count("rule_change")
        kind = rng.choice(("pin", "pin", "scoped", "lane", "delete"))
        workers = [n.worker_id for n in sim.workers]
        ttl = round(rng.uniform(0.5, 10.0), 2)
        doc: dict[str, Any] | None
        if kind == "pin":
            m = rng.choice((2, 3, 4))
            doc = {
                "target": rng.choice(workers),
                "match": f"hash(task.id) % {m} == {rng.randrange(m)}",
                "ttl": ttl,
                "priority": rng.randint(1, 100),
            }
        elif kind == "scoped":
            scope = rng.choice(sim.workload).id
            doc = {"target": rng.choice(("w[12]", "w*", workers[0])), "scope": scope, "ttl": 12}
        elif kind == "lane":
            doc = {"lanes": [rng.choice(("high", "normal", "low"))], "target": rng.choice(workers)}
            doc["ttl"] = ttl
        else:
            doc = None
        self._rule(rule_id, doc)

    def _cancel(self) -> None:
        sim = self.sim
        rng = sim.rng
        led = sim.ledger
        # tasks of a workflow (a group, its members, a then) are left to clawd.sim.flows
        flow = {s.id for s in sim.workload if s.type == "group"} | flows.member_ids(sim)
        running = [i for i in led.in_flight() if i not in flow and not i.endswith(".then")]
        waiting = sorted(
            i for i in led.acked if i not in led.outcomes and i not in running and i not in flow
        )
        pool = running if running and rng.random() < 0.7 else waiting or running
        if not pool:
            return
        ids = rng.sample(sorted(pool), min(len(pool), rng.randint(1, 3)))
        sim.faults.count("cancel")
        self.cancel_asked.update(ids)
        doc = {"cmd": "cancel", "ids": ids}
        self._publish(led.topics.control, json.dumps(doc).encode())

    def _outage(self, down: float) -> None:
        sim = self.sim
        if not sim.distributor.alive:
            return
        sim.chaos.fault("distributor_outage", lasts=down, now=False)
        sim.distributor.crash()
        sim.clock.after(down, sim.distributor.start)

    def _end_schedule(self) -> None:
        """The schedule is removed by a reload, so the run can settle with nothing open."""
        sim = self.sim
        sim.config = msgspec.structs.replace(sim.config, schedules={})
        d = sim.distributor.d
        if d is not None and sim.distributor.alive:
            d.pending_reload = (sim.config, sim.plugins)

    # -- observation ---------------------------------------------------------------------

    def sent(self, pkt: Packet, publisher: str) -> None:
        """A client handed a message to its connection (before the broker has it)."""
        if not publisher.startswith("clawd-distributor-"):
            return
        levels = self.sim.ledger.topics.split(pkt.topic)
        if not (levels[0] == "_" and len(levels) == 4 and levels[1] == "w"):
            return
        wall = self.sim.clock.wall()
        gen = self.sim.distributor.incarnation
        for t in msgspec.json.decode(pkt.payload)["tasks"]:
            rl = bool((t.get("meta") or {}).get("rl"))
            self.sends.append((wall, gen, t["id"], t["type"], rl))

    def tap(self, pkt: Packet) -> None:
        """A publish the broker accepted."""
        if b'"cancelled"' not in pkt.payload:
            return
        levels = self.sim.ledger.topics.split(pkt.topic)
        if levels[0] != "results" or len(levels) != 2:
            return
        if msgspec.json.decode(pkt.payload).get("status") == "cancelled":
            self.cancelled_at.setdefault(levels[1], self.sim.clock.wall())

    # -- invariants ----------------------------------------------------------------------

    def check(self) -> list[str]:
        return [
            *self._rates(),
            *self._delays(),
            *self._cancels(),
            *self._schedule(),
            *self._rules_left(),
        ]

    def _rates(self) -> list[str]:
        if self.ha:
            return []
        problems = []
        limits = (
            (f"type {METERED}", self.metered_rate, lambda s: s[3] == METERED),
            (f"rule {RL_RULE}", self.rule_rate, lambda s: s[4]),
        )
        for what, text, pick in limits:
            rate = parse_rate(text)
            lives: dict[int, list[float]] = defaultdict(list)
            for s in self.sends:
                if pick(s):
                    lives[s[1]].append(s[0])
            for gen, times in sorted(lives.items()):
                times.sort()
                for i in range(len(times)):
                    for j in range(i, len(times)):
                        span = times[j] - times[i]
                        if j - i + 1 > rate.burst + rate.per_second * span + 1e-6:
                            problems.append(
                                f"{what} ({text}): {j - i + 1} dispatches in {span:.3f} s "
                                f"from t={times[i]:.3f} (distributor life {gen})"
                            )
                            break
                    else:
                        continue
                    break
        return problems

    def _delays(self) -> list[str]:
        problems = []
        for wall, _, task_id, _, _ in self.sends:
            d = self.delays.get(task_id)
            if d is None or task_id not in self.published:
                continue
            due = self.not_before.get(task_id, self.published[task_id] + d)
            if wall < due - 1e-6:
                problems.append(
                    f"delayed task {task_id} dispatched at {wall:.3f}, {due - wall:.3f} s "
                    "before its time"
                )
        return problems

    def _cancels(self) -> list[str]:
        problems = []
        for task_id, at in sorted(self.cancelled_at.items()):
            if task_id not in self.cancel_asked:
                problems.append(f"task {task_id} was cancelled, but nobody asked")
            late = [w for w, _, i, _, _ in self.sends if i == task_id and w > at]
            if late:
                problems.append(f"task {task_id} was dispatched after its cancelled result")
        return problems

    def _schedule(self) -> list[str]:
        led = self.sim.ledger
        prefix = f"schedule:{SCHEDULE}:"
        fired = {
            int(task_id[len(prefix) :]): docs[0]
            for task_id, docs in led.results.items()
            if task_id.startswith(prefix)
        }
        if not fired and not self.calm:
            return [f"schedule {SCHEDULE} (every {self.every} s) never fired"]
        late = sorted(s for s, doc in fired.items() if doc.get("submitted_at", 0) - s > GRACE)
        problems = []
        if self.catch_up == "skip" and late:
            problems.append(f"schedule {SCHEDULE} (catch_up skip) fired missed slot(s) {late}")
        if self.catch_up == "run_once":
            outages = self.sim.faults.injected.get("distributor_outage", 0)
            if len(late) > outages:
                problems.append(
                    f"schedule {SCHEDULE} (catch_up run_once) fired {len(late)} missed slots "
                    f"after {outages} outage(s): {late}"
                )
            elif outages and not late:
                problems.append(
                    f"schedule {SCHEDULE} (catch_up run_once): the slot missed during the "
                    "outage never fired"
                )
        return problems

    def _rules_left(self) -> list[str]:
        from clawd.sim import internals

        sim = self.sim
        d = sim.distributor.d
        if d is None or not sim.distributor.alive:
            return []
        want = {RL_RULE}
        problems = []
        inside = internals.rules(d)
        if inside != want:
            problems.append(f"rules in force at the end: {sorted(inside)}, not {sorted(want)}")
        prefix = f"{sim.config.broker.prefix}/routes/"
        kept = {t[len(prefix) :] for t, p in sim.broker.retained.items() if t.startswith(prefix)}
        kept = {k for k in kept if sim.broker.retained[prefix + k].payload}
        if kept != want:
            problems.append(f"rules retained on the broker at the end: {sorted(kept)}")
        return problems
