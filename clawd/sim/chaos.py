"""Injecting the scheduled faults, and tracking which tasks each one put at risk.

A fault is counted and *exposes* the tasks in flight where it hits (one worker, or every
one): an extra execution of a task is allowed only for a fault it was exposed to. A
fault lasts until the node it hit is connected again (a reconnect may wait out a
backoff), and then the distributor takes up to a liveness timeout to judge what happened
meanwhile, so what was dispatched there until then is exposed too. Message faults (a
duplicate, a late message) expose the tasks they carry and, for a late one, those in
flight at its end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from clawd.sim import flows
from clawd.sim.broker import Packet
from clawd.sim.faults import SCHEDULED

#: times a "member_lost" fault looks for a worker running a group member (every 0.5 s)
MEMBER_TRIES = 40

if TYPE_CHECKING:
    from clawd.sim.nodes import Node, WorkerNode
    from clawd.sim.run import Simulation


class Chaos:
    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        sim.faults.on_dup = self._dup
        sim.faults.on_late = self._late
        self._members: set[str] | None = None
        #: when the scheduled faults end (a fault looked for later is not injected)
        self._until = 0.0

    # -- message faults ------------------------------------------------------------------

    def _dup(self, pkt: Packet) -> None:
        led = self.sim.ledger
        led.expose(led.dispatch_ids(pkt))

    def _late(self, client_id: str, pkt: Packet | None) -> None:
        led = self.sim.ledger
        if pkt is not None:
            led.expose(led.dispatch_ids(pkt))
        if client_id.startswith("clawd-worker-"):
            led.expose(led.in_flight(client_id.removeprefix("clawd-worker-")))
        elif client_id.startswith("clawd-distributor-"):
            led.expose(led.in_flight())

    # -- a fault's window ----------------------------------------------------------------

    def fault(
        self, kind: str, target: str | None = None, lasts: float = 0.0, *, now: bool = True
    ) -> None:
        """Count a fault and expose the tasks in flight where it hits (``target``: one
        worker; None: everywhere; not with ``now=False``), and those that get there while
        it ``lasts``."""
        sim = self.sim
        sim.faults.count(kind)
        exposed = set(sim.ledger.in_flight(target)) if now else set()
        sim.ledger.expose(sorted(exposed))
        self._told(kind, target, exposed)
        mark = len(sim.ledger.dispatch_log)
        if not now:
            mark = -1 - mark  # at its end too, only what was dispatched meanwhile
        sim.clock.after(lasts, lambda: self._ending(kind, target, exposed, mark))

    def _ending(self, kind: str, target: str | None, exposed: set[str], mark: int) -> None:
        sim = self.sim
        node = sim.distributor if target is None else sim.worker(target)
        t = node.transport
        if node.alive and not (t is not None and t.connected.is_set()):
            sim.clock.after(0.1, lambda: self._ending(kind, target, exposed, mark))
            return
        notice = sim.config.distributor.liveness_timeout
        sim.clock.after(notice, lambda: self._over(kind, target, exposed, mark))

    def _over(self, kind: str, target: str | None, exposed: set[str], mark: int) -> None:
        led = self.sim.ledger
        if mark < 0:
            more = set(led.dispatched_since(-1 - mark, target)) - exposed
        else:
            more = (set(led.in_flight(target)) | set(led.dispatched_since(mark, target))) - exposed
        led.expose(sorted(more))
        self._told(f"{kind} over", target, more)

    def _told(self, kind: str, target: str | None, exposed: set[str]) -> None:
        sim = self.sim
        if sim.trace:
            hit = sorted(sim.trace & exposed)
            print(f"{sim.clock.elapsed:9.3f} FAULT {kind} on {target or 'all'} (exposes {hit})")

    # -- the scheduled faults ------------------------------------------------------------

    def schedule(self, end: float) -> None:
        """Each scheduled fault, as many times as the profile says, within ``end`` s."""
        sim = self.sim
        self._until = sim.clock.now + end
        for kind in SCHEDULED:
            for _ in range(sim.profile.counts[kind]):
                sim.clock.at(sim.clock.now + sim.rng.uniform(1.0, end), self._injector(kind))

    def _injector(self, kind: str) -> Any:
        return lambda: self._inject(kind)

    def _inject(self, kind: str) -> None:
        sim = self.sim
        rng = sim.rng
        up = [n for n in sim.workers if n.alive]
        if kind == "worker_retire":
            if len(up) >= 2:
                gone = rng.choice(up)
                self.fault(kind, gone.worker_id)
                gone.retired = True
                gone.crash(reset=rng.random() < 0.5)
        elif kind == "distributor_crash":
            if sim.distributor.alive:
                down = rng.uniform(0.1, 3.0)
                # what is in flight on workers that stay up is reclaimed by their
                # reports, not run again: only what is dispatched meanwhile is at risk
                self.fault(kind, lasts=down, now=False)
                sim.distributor.crash()
                sim.clock.after(down, sim.distributor.start)
        elif kind == "broker_restart":
            if sim.broker.up:
                down = rng.uniform(0.3, 4.0)
                self.fault(kind, lasts=down)
                sim.broker.restart(down)
        elif kind == "resubmit":
            done = [s for s in sim.workload if s.id in sim.ledger.acked]
            if done:
                sim.faults.count(kind)
                sim.submit(rng.choice(done))
        elif kind == "member_lost":
            self._lose_member(MEMBER_TRIES)
        elif kind == "stale_will":
            # a broker delivers the Last Will of an earlier run of a live worker late (a
            # replay after its restart): nothing is exposed, since nothing may be lost
            # or run again for it
            w = rng.choice(up).w if up else None
            if w is not None:
                sim.faults.count(kind)
                doc = {"id": w.id, "state": "offline", "reason": "lost", "boot": w.boot - 1.0}
                doc["session"] = f"{w.session}.earlier"
                topic = w.topics.worker(w.id)
                sim.broker.accept(Packet(topic, msgspec.json.encode(doc)), "broker")
        elif kind == "client_drop":
            nodes: list[Node] = [n for n in (sim.distributor, *sim.workers) if n.alive]
            node = rng.choice(nodes) if nodes else None
            conn = node.transport.conn if node is not None and node.transport else None
            if node is not None and conn is not None:
                self.fault(kind, None if node is sim.distributor else node.name)
                sim.broker.drop(conn)
        elif up:
            self._hit_worker(kind, rng.choice(up))

    def _lose_member(self, tries: int) -> None:
        """A worker crashes while it runs a member of a group (looked for every half
        second, ``tries`` times, until one runs): the member must be redelivered and the
        group still end."""
        sim = self.sim
        if sim.clock.now >= self._until:
            return  # the faults are over: the run is settling
        if self._members is None:
            self._members = flows.member_ids(sim)
        running = [
            n
            for n in sim.workers
            if n.alive and self._members.intersection(sim.ledger.in_flight(n.worker_id))
        ]
        if not running:
            if tries > 1:
                sim.clock.after(0.5, lambda: self._lose_member(tries - 1))
            return
        node = sim.rng.choice(running)
        lasts = sim.rng.uniform(0.1, 3.0)
        self.fault("member_lost", node.worker_id, lasts)
        node.crash(reset=True)
        sim.clock.after(lasts, node.start)

    def _hit_worker(self, kind: str, node: WorkerNode) -> None:
        sim = self.sim
        rng = sim.rng
        if kind == "worker_drain" and node.w is not None and node.w.draining:
            return  # already stopping
        lasts = {
            "worker_crash": rng.uniform(0.1, 3.0),
            # a frozen host: the broker still holds the old connection when it comes back
            "worker_takeover": rng.uniform(0.05, 1.0),
            "worker_stall": rng.uniform(0.5, 8.0),
            "worker_partition": rng.uniform(0.5, 8.0),
            "worker_drain": rng.uniform(2.5, 5.0),
        }[kind]
        self.fault(kind, node.worker_id, lasts)
        if kind in ("worker_crash", "worker_takeover"):
            node.crash(reset=kind == "worker_crash")
            sim.clock.after(lasts, node.start)
        elif kind == "worker_stall":
            node.stalled_until = sim.clock.now + lasts
        elif kind == "worker_partition":
            assert node.transport is not None
            node.transport.partitioned_until = sim.clock.now + lasts
        elif kind == "worker_drain":
            node.begin_drain()
            sim.clock.after(rng.uniform(0.0, 2.0), node.finish_drain)
            sim.clock.after(lasts, node.start)
