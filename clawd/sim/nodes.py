"""The simulated processes: a distributor and workers, each a real clawd object.

A node turns its object's loop (``run_once``) when a message arrives for it, when its
pool finishes a task, and on a timer; it can crash (and come back with the same id, as
systemd would restart it), stall (its loop stops turning for a while) and, for workers,
drain. Crashing never closes anything cleanly: the next incarnation starts from what the
journal and the broker kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from clawd.distributor.core import SESSION_EXPIRY, Distributor
from clawd.journal import Journal
from clawd.sim import internals
from clawd.sim.pool import SimPool
from clawd.sim.transport import SimTransport
from clawd.worker.core import Worker

if TYPE_CHECKING:
    from clawd.sim.run import Simulation

#: a node's loop turns at least this often (simulated seconds)
TICK = 0.25


class Node:
    def __init__(self, sim: Simulation, name: str) -> None:
        self.sim = sim
        self.name = name
        self.alive = False
        self.incarnation = 0
        self.stalled_until = 0.0
        self.transport: SimTransport | None = None
        self._due = False

    def kick(self) -> None:
        """Turn the loop soon (a message or a finished task is waiting)."""
        if self.alive and not self._due:
            self._due = True
            gen = self.incarnation
            self.sim.clock.after(0.0, lambda: self._turn(gen))

    def _timer(self, gen: int) -> None:
        if gen != self.incarnation or not self.alive:
            return
        self.kick()
        self.sim.clock.after(TICK, lambda: self._timer(gen))

    def _turn(self, gen: int) -> None:
        if gen != self.incarnation or not self.alive:
            return
        self._due = False
        now = self.sim.clock.now
        if now < self.stalled_until:
            self._due = True
            self.sim.clock.at(self.stalled_until, lambda: self._turn(gen))
            return
        self.step()

    def boot(self) -> None:
        self.incarnation += 1
        self.alive = True
        self._due = False
        self.stalled_until = 0.0
        gen = self.incarnation
        self.sim.clock.after(TICK, lambda: self._timer(gen))
        self.kick()

    def step(self) -> None:
        raise NotImplementedError

    def transport_for(self, client_id: str, on_message: Any, **kw: Any) -> SimTransport:
        s = self.sim
        return SimTransport(
            s.clock,
            s.broker,
            s.rng,
            client_id,
            on_message,
            keepalive=s.keepalive,
            on_wake=self.kick,
            **kw,
        )


class ProducerNode(Node):
    """A client that only publishes; each turn polls its connection and calls ``on_turn``."""

    def __init__(self, sim: Simulation, on_turn: Any) -> None:
        super().__init__(sim, "producer")
        self.on_turn = on_turn
        self.transport = self.transport_for(
            "producer", lambda msg: None, clean_start=False, session_expiry=3600
        )
        self.boot()

    def step(self) -> None:
        assert self.transport is not None
        self.transport.poll(0.0)
        self.on_turn()


class DistributorNode(Node):
    def __init__(self, sim: Simulation, journal_path: Path) -> None:
        super().__init__(sim, "distributor")
        self.journal_path = journal_path
        self.d: Distributor | None = None
        #: the instant a turn is already set for, for a rate limit's refill
        self.wake = 0.0

    def start(self) -> None:
        self.wake = 0.0
        self.run_on(Journal(self.journal_path, fsync=False))

    def run_on(self, journal: Journal, epoch: int = 0) -> Distributor:
        """A distributor on ``journal`` (its dispatches marked ``epoch``): recovered
        (checked against what the ledger saw dispatched), connected with its persistent
        session, booted."""
        s = self.sim
        d = self.d = Distributor(s.config, s.plugins, journal)
        d.outbox.epoch = epoch
        d.recover()
        dispatched = {
            task_id: max(a for a, _ in seen) for task_id, seen in s.ledger.dispatches.items()
        }
        for problem in internals.recovery(d, dispatched):
            s.ledger.violation(problem)
        t = self.transport = self.transport_for(
            f"clawd-distributor-{s.config.broker.prefix}",
            d.on_message,
            subscriptions=d.subscriptions(),
            clean_start=False,
            session_expiry=SESSION_EXPIRY,
            manual_ack=True,
        )
        d.attach(t)
        self.boot()
        return d

    def step(self) -> None:
        assert self.d is not None
        self.d.run_once(0.0)
        wake = self.d.wake_at()
        if wake is not None and wake != self.wake:
            # a rate limit's bucket refills then: turn the loop at that instant, as the
            # daemon's loop sleeps until it
            self.wake = wake
            gen = self.incarnation
            self.sim.clock.at(wake, lambda: self._turn(gen) if not self._due else None)
        if self.sim.check_steps:
            for problem in internals.consistency(self.d):
                self.sim.ledger.violation(problem)

    def crash(self) -> None:
        self.alive = False
        if self.transport is not None:
            self.transport.crash()
        if self.d is not None:
            internals.crash(self.d)


class WorkerNode(Node):
    def __init__(self, sim: Simulation, worker_id: str) -> None:
        super().__init__(sim, worker_id)
        self.worker_id = worker_id
        self.w: Worker | None = None
        self.pool: SimPool | None = None
        #: gone for good: nothing restarts it
        self.retired = False

    def start(self) -> None:
        if self.retired or self.alive:
            return  # gone for good, or already restarted (two faults scheduled a restart)
        s = self.sim
        cfg = msgspec.structs.replace(
            s.config, worker=msgspec.structs.replace(s.config.worker, id=self.worker_id)
        )
        self.pool = SimPool(s.clock, self.worker_id, s.ledger, self.poisoned)
        w = self.w = Worker(cfg, s.plugins, pool=self.pool)
        w.session = f"{self.worker_id}.{self.incarnation + 1}"
        t = self.transport = self.transport_for(
            f"clawd-worker-{self.worker_id}",
            w.on_message,
            subscriptions=w.subscriptions(),
            will=w.will(),
            on_state=lambda up, why: w.announce() if up else None,
        )
        w.attach(t)
        self.boot()

    def step(self) -> None:
        assert self.w is not None
        self.w.run_once(0.0)

    def crash(self, *, reset: bool = True) -> None:
        self.alive = False
        if self.transport is not None:
            self.transport.crash(reset=reset)
        if self.pool is not None:
            self.pool.shutdown()

    def poisoned(self) -> None:
        """A poison task took the process down; systemd restarts it."""
        if self.alive:
            down = self.sim.rng.uniform(0.2, 1.5)
            self.sim.fault("poison_crash", self.worker_id, down)
            self.crash()
            self.sim.clock.after(down, self.start)

    def begin_drain(self) -> None:
        """SIGTERM: stop taking work (grants that still arrive are handed back)."""
        w = self.w
        assert w is not None and self.transport is not None
        w.draining = True
        self.transport.publish(w.topics.worker(w.id), w.status("draining"), retain=True)

    def finish_drain(self) -> None:
        """The drain timeout is over: hand back what still runs, say offline, disconnect."""
        w = self.w
        if not self.alive or w is None or self.transport is None:
            return
        w.drain(0.0)
        self.transport.close()
        self.alive = False
