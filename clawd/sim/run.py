"""One simulated run: a seed in, a report out.

The seed drives one ``random.Random`` for every decision of the simulator (workload,
latencies, faults) and also seeds the global ``random`` (the distributor's backoff
jitter); time is the simulated clock, installed with :func:`clawd.clock.use`. The run
submits the workload while faults hit, lets the faults end, runs until every acknowledged
submission has its result (or a generous limit passes), settles, and checks the invariants.
"""

from __future__ import annotations

import hashlib
import logging
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from clawd import clock as clawd_clock
from clawd.plugins import Plugins
from clawd.sim import flows, internals, invariants
from clawd.sim.broker import Packet, SimBroker
from clawd.sim.chaos import Chaos
from clawd.sim.clock import SimClock
from clawd.sim.config import FORGET, sim_config
from clawd.sim.faults import Faults, Profile
from clawd.sim.ha import HADistributorNode, SharedLock, schedule_leader_faults
from clawd.sim.ledger import Ledger
from clawd.sim.nodes import DistributorNode, ProducerNode, WorkerNode
from clawd.sim.operator import MeteredHandlers, Operator
from clawd.sim.transport import SimDelivery, SimTransport
from clawd.sim.workload import SimHandlers, Submission, draw
from clawd.strategies import builtin
from clawd.topics import Topics

#: simulated seconds each submission is spread over, per task
SUBMIT_EVERY = 0.05
#: simulated seconds without a new result after which a run stops waiting for the rest
DEADLINE = 120.0


@dataclass
class Report:
    seed: int
    tasks: int
    workers: int
    calm: bool = False
    plant: str | None = None
    #: two distributors on one shared journal (clawd.sim.ha)
    ha: bool = False
    acked: int = 0
    #: submissions made (some tasks are members of groups, not submissions of their own)
    submitted: int = 0
    results: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    executions: int = 0
    #: executions that began after one of the same task that succeeded, or never ended
    reruns_after_ok: int = 0
    reruns_after_unfinished: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    sim_seconds: float = 0.0
    wall_seconds: float = 0.0
    steps: int = 0
    violations: list[str] = field(default_factory=list)
    #: failed tasks whose dead letter was never published (a violation too)
    letters_unpublished: list[str] = field(default_factory=list)
    digest: str = ""

    @property
    def ok(self) -> bool:
        return not self.violations

    def command(self) -> str:
        """The one command that replays this run."""
        cmd = f"python -m clawd.sim --seed {self.seed} --tasks {self.tasks}"
        if self.workers != 3:
            cmd += f" --workers {self.workers}"
        if self.calm:
            cmd += " --calm"
        if self.ha and self.plant != "epoch":
            cmd += " --ha"
        if self.plant:
            cmd += f" --plant {self.plant}"
        return cmd


class Simulation:
    def __init__(
        self,
        seed: int,
        tasks: int,
        state_dir: Path,
        *,
        workers: int = 3,
        calm: bool = False,
        check_steps: bool = True,
        ha: bool = False,
    ) -> None:
        self.seed = seed
        self.tasks = tasks
        self.rng = rng = random.Random(seed)
        random.seed(seed)
        self.clock = SimClock()
        self.profile = Profile.draw(rng, calm=calm)
        self.faults = Faults(rng, self.profile)
        self.config = sim_config(rng, str(state_dir))
        self.operator = Operator(self, calm=calm, ha=ha)
        self.keepalive = 2.0
        self.check_steps = check_steps
        self.ledger = Ledger(Topics(self.config.broker.prefix))
        self.ledger.now = lambda: self.clock.elapsed
        self.broker = SimBroker(self.clock, self.faults, keepalive=self.keepalive, tap=self._tap)
        plugins = self.plugins = Plugins(self.config)
        plugins.register_object(SimHandlers(), "sim")
        plugins.register_object(MeteredHandlers(), "sim-metered")
        plugins.register_object(builtin, "strategies")
        plugins.collect()
        self.ha = ha
        self.lock: SharedLock | None = None
        self.distributor: DistributorNode = DistributorNode(self, state_dir / "journal.db")
        self.distributors = [self.distributor]
        if ha:
            lock = self.lock = SharedLock(self.clock)
            self.distributors = [
                HADistributorNode(self, f"d{i}", state_dir / "journal.db", lock) for i in (1, 2)
            ]
            self.distributor = self.distributors[0]
        self.workers = [WorkerNode(self, f"w{i + 1}") for i in range(workers)]
        self.window = max(5.0, tasks * SUBMIT_EVERY)
        poison = 0 if calm else rng.choice((0, 0, 1, 2))
        self.workload = draw(rng, tasks, self.window, poison=poison)
        self.operator.decorate(self.workload)
        self.producer = self._producer()
        self._pending: list[tuple[str, SimDelivery]] = []
        self._digest = hashlib.blake2b(digest_size=8)
        #: task ids whose every message and execution is printed (``--trace``)
        self.trace = self.ledger.trace
        self.chaos = Chaos(self)
        self.broker.on_send = self._sent

    # -- observation ---------------------------------------------------------------------

    def _tap(self, pkt: Packet, publisher: str) -> None:
        # worker statuses carry the host and pid: the topic is enough of them
        self._digest.update(pkt.topic.encode())
        if "/workers/" not in pkt.topic:
            self._digest.update(pkt.payload)
        self.ledger.tap(pkt, publisher)
        self.operator.tap(pkt)
        if self.trace:
            self._trace(pkt, publisher)

    def _trace(self, pkt: Packet, publisher: str, verb: str = "->") -> None:
        for task_id in self.trace:
            if task_id in pkt.topic or task_id.encode() in pkt.payload:
                text = pkt.payload[:300].decode("utf-8", "replace")
                print(f"{self.clock.elapsed:9.3f} {publisher} {verb} {pkt.topic}: {text}")
                return

    def _sent(self, pkt: Packet, publisher: str) -> None:
        self.operator.sent(pkt, publisher)
        if self.trace:
            self._trace(pkt, publisher, "sends")

    def fault(self, kind: str, target: str | None = None, lasts: float = 0.0) -> None:
        """Count a fault and expose the tasks it puts at risk (see :mod:`clawd.sim.chaos`)."""
        self.chaos.fault(kind, target, lasts)

    def worker(self, worker_id: str) -> WorkerNode:
        return next(n for n in self.workers if n.worker_id == worker_id)

    # -- the producer --------------------------------------------------------------------

    def _producer(self) -> SimTransport:
        t = ProducerNode(self, self._settle_acks).transport
        assert t is not None
        return t

    def submit(self, sub: Submission) -> None:
        topic = self.ledger.topics.tasks(sub.lane)
        envelope = self.operator.envelope(sub)
        delivery = self.producer.publish_tracked(topic, msgspec.json.encode(envelope))
        self._pending.append((sub.id, delivery))

    def _settle_acks(self) -> None:
        still = []
        for task_id, delivery in self._pending:
            if delivery.acknowledged:
                self.ledger.acked.add(task_id)
            else:
                still.append((task_id, delivery))
        self._pending = still

    # -- the run -------------------------------------------------------------------------

    def run(self) -> Report:
        clk = self.clock
        for d in self.distributors:
            d.start()
        for node in self.workers:
            node.start()
        # a submission made before the distributor's first subscription reaches nobody
        # (MQTT keeps nothing for a subscriber that does not exist yet): not a fault
        session = f"clawd-distributor-{self.config.broker.prefix}"
        while not getattr(self.broker.sessions.get(session), "subs", None):
            clk.run_until(clk.now + 0.1)
        self.operator.prepare()
        while not self.operator.ready():
            clk.run_until(clk.now + 0.1)
        start = clk.now + 1.0
        for sub in self.workload:
            clk.at(start + sub.at, self._submitter(sub))
        fault_end = start + self.window + 5.0
        self.chaos.schedule(fault_end - clk.now)
        self.operator.schedule(start, fault_end)
        if self.ha:
            schedule_leader_faults(self, fault_end - clk.now)
        clk.run_until(fault_end)
        self.faults.end()
        clk.run_until(max(fault_end, self.operator.quiet_at) + 10.0)
        # every acknowledged task must end: give up only when results stop coming
        stalled = clk.now + DEADLINE
        seen = self.ledger.results_published
        while clk.now < stalled and not self._all_done():
            clk.run_until(clk.now + 1.0)
            if self.ledger.results_published != seen:
                seen = self.ledger.results_published
                stalled = clk.now + DEADLINE
        # let leases, retained statuses and the outbox settle, and departed workers be
        # forgotten
        settle = 3 * self.config.distributor.liveness_timeout
        clk.run_until(clk.now + settle + float(FORGET.get("forget_after", 0.0)))
        # the checks judge a quiet system: every live process connected (a reconnect may be
        # waiting out a backoff or a late CONNACK), and its announcement through
        nodes = [self.distributor, *self.workers]
        quiet_by = clk.now + DEADLINE
        while clk.now < quiet_by and not all(
            n.transport is not None and n.transport.connected.is_set() for n in nodes if n.alive
        ):
            clk.run_until(clk.now + 0.5)
        clk.run_until(clk.now + self.config.distributor.liveness_timeout)
        return self._report()

    def _submitter(self, sub: Submission) -> Any:
        return lambda: self.submit(sub)

    def _all_done(self) -> bool:
        self._settle_acks()
        return (
            not self._pending
            and all(i in self.ledger.outcomes for i in self.ledger.acked)
            and not flows.pending_thens(self)
        )

    def _report(self) -> Report:
        led = self.ledger
        violations = list(dict.fromkeys(led.violations))
        violations += invariants.check(self)
        if self.lock is not None:
            violations += self.lock.violations()
        report = Report(seed=self.seed, tasks=self.tasks, workers=len(self.workers))
        report.ha = self.ha
        report.acked = len(led.acked)
        report.submitted = len(self.workload)
        report.results = led.results_published
        report.outcomes = Counter(docs[0]["status"] for docs in led.results.values())
        report.executions = sum(len(x) for x in led.executions.values())
        for runs in led.executions.values():
            for before in runs[:-1]:
                if before.status == "ok":
                    report.reruns_after_ok += 1
                elif not before.status:
                    report.reruns_after_unfinished += 1
        report.faults = Counter({k: v for k, v in self.faults.injected.items() if v})
        report.sim_seconds = round(self.clock.elapsed, 1)
        report.steps = self.clock.steps
        report.violations = violations
        report.letters_unpublished = invariants.unpublished_letters(self)
        report.digest = self._digest.hexdigest()
        return report


def simulate(
    seed: int,
    tasks: int = 200,
    *,
    workers: int = 3,
    calm: bool = False,
    plant: str | None = None,
    check_steps: bool = True,
    trace: tuple[str, ...] = (),
    ha: bool = False,
) -> Report:
    """Run one seed and check every invariant; the report says what happened.

    ``trace``: task ids whose messages, executions and faults are printed as they happen.
    ``ha``: two distributors on one shared journal, the leader stalled and crashed
    (:mod:`clawd.sim.ha`); the planted bug ``epoch`` implies it.
    """
    ha = ha or plant == "epoch"
    began = time.perf_counter()
    log = logging.getLogger("clawd")
    level = log.level
    errors = _ErrorLog()
    log.setLevel(logging.ERROR)
    log.addHandler(errors)
    try:
        with tempfile.TemporaryDirectory(prefix="clawd-sim-") as tmp:
            sim = Simulation(
                seed, tasks, Path(tmp), workers=workers, calm=calm, check_steps=check_steps, ha=ha
            )
            sim.trace.update(trace)
            clawd_clock.use(sim.clock.monotonic, sim.clock.wall)
            with internals.plant(plant):
                report = sim.run()
            for node in sim.distributors:
                if node.d is not None:
                    node.d.journal.db.close()
    finally:
        clawd_clock.reset()
        log.removeHandler(errors)
        log.setLevel(level)
    report.violations += errors.problems
    report.calm, report.plant = calm, plant
    report.wall_seconds = round(time.perf_counter() - began, 3)
    return report


class _ErrorLog(logging.Handler):
    """An exception logged by a loop is a bug the run must report."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.problems: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.problems.append(f"{record.name} logged an exception: {record.getMessage()}")
