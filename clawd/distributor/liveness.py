"""Liveness: worker status, Last Wills, heartbeat reports, leases, and forgetting.

A worker is alive while the broker says so (retained status, Last Will) and while its
reports keep coming; each report renews the lease of every task it says it is running.
A worker offline for ``forget_after`` seconds is forgotten: its retained status and
breaker topics are cleared and its breakers and metrics series dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from clawd import clock
from clawd.distributor.entry import State
from clawd.distributor.fleet import Fleet
from clawd.distributor.lifecycle import Lifecycle
from clawd.envelope import encode
from clawd.wire import Report, WorkerStatus

log = logging.getLogger("clawd.distributor")


class Liveness:
    """Turns what workers say (and do not say) into fleet and task changes."""

    def __init__(self, fleet: Fleet, life: Lifecycle) -> None:
        self.fleet = fleet
        self.life = life

    @property
    def timeout(self) -> float:
        return float(self.life.config.distributor.liveness_timeout)

    def worker_status(self, worker_id: str, status: WorkerStatus) -> bool:
        """A status (retained, a Last Will, or riding on a heartbeat); True when it
        announced a task type not known before. One about an older incarnation than the
        live one is ignored."""
        w = self.fleet.get(worker_id)
        if self.stale(w, status):
            log.info(
                "worker %s: ignoring a %s status of an earlier run (session %s; the live one "
                "is %s)",
                worker_id,
                status.state,
                status.session,
                w.session,
            )
            return False
        if w.online and status.session != w.session:
            # the worker restarted with the same id: what it ran before is gone
            self.life.lose(w, "restarted", lost=True)
        prev = w.status
        back = prev is not None and prev.state != "draining" and status.session == w.session
        new_types = self.fleet.announce(w, status)
        w.session = status.session
        w.silent = False
        if status.state == "online" and back and not w.online:
            # the same process back after it was lost (a partition, a stall): its next
            # report reclaims what it still runs before anything is granted to it again;
            # it is alive, so the time to forget it counts from now
            w.silent = True
            w.offline_since = clock.monotonic()
        elif status.state == "online":
            if not w.online:
                log.info("worker %s online (capacity %d)", worker_id, w.capacity)
                self.reconcile_breakers(w.id, w.handlers)
            w.set_online(True)
        elif status.state == "draining":
            w.set_online(False)
        else:
            if w.online or w.grants:
                log.info("worker %s %s", worker_id, status.reason or "offline")
            # counted from now, not from the status's "since": a Last Will carries the
            # time its worker connected, not the time it died
            w.set_online(False)
            if w.grants:
                self.life.lose(w, status.reason or "offline", lost=status.reason == "lost")
        return new_types

    @staticmethod
    def stale(w: Any, status: WorkerStatus) -> bool:
        """True when ``status`` is about an earlier incarnation of the live worker ``w``
        (a broker replaying an old Last Will or retained status after a restart)."""
        if not w.session or status.session == w.session:
            return False
        live = w.status.boot if w.status is not None else 0.0
        if status.boot and live:
            return status.boot < live
        # without boot times (an older worker): only "offline" of another session while
        # the live one is online is known to be old news
        return status.state != "online" and bool(w.online)

    def reconcile_breakers(self, worker_id: str, types: Iterable[str]) -> None:
        """A worker comes online: the retained breaker topics about it and its types say
        what this distributor's breakers say, or are cleared where it has none (a state
        retained by a previous run of the distributor would otherwise stay). The
        distributor does not read those topics back: it republishes the few keys a
        worker can have instead, which is correct whatever is retained."""
        prefix = self.life.topics.prefix
        publish = self.life.outbox.publish
        for key, state in self.life.breakers.states(worker_id, types).items():
            topic = f"{prefix}/breakers/{key}"
            if state is None:
                publish(topic, b"", retain=True)
            else:
                doc = {"key": key, "state": state, "previous": state, "at": clock.wall()}
                publish(topic, encode(doc), retain=True)

    def report(self, worker_id: str, rep: Report) -> bool:
        """A heartbeat: renews leases, brings outcomes, and hands back on drain. True when
        the status it carries announced a task type not known before."""
        w = self.fleet.get(worker_id)
        new_types = False
        st = rep.status
        if st is not None and (
            w.status is None
            or st.session != w.session
            or (st.state != w.status.state and not (w.silent and st.state == "online"))
        ):
            # news the retained status did not bring (a broker without retained wildcard
            # delivery, a distributor that restarted, a state change it missed)
            new_types = self.worker_status(worker_id, st)
        w.last_seen = clock.monotonic()
        if w.silent and w.status is not None and w.status.state == "online":
            # it was only unheard (a partition, a broker restart): it is back
            log.info("worker %s heard again", worker_id)
            w.silent = False
            w.set_online(True)
            self.reconcile_breakers(w.id, w.handlers)
        if rep.running:
            lease = w.last_seen + self.timeout
            grants = w.grants
            for task_id, attempt in rep.running:
                e = grants.get(task_id)
                if e is not None and e.attempt == attempt:
                    e.lease_until = lease
                elif e is None:
                    # requeued here (a restart, a silence) while it ran on: reclaim it
                    self.life.adopt(w, task_id, attempt, lease)
        for o in rep.outcomes:
            self.life.outcome(w, o)
        for task_id, attempt in rep.handback:
            self.life.hand_back(w, task_id, attempt)
        return new_types

    def progress(self, task_id: str) -> None:
        """A handler reported progress: its task's lease is renewed."""
        e = self.life.tasks.get(task_id)
        if e is not None and e.state is State.RUNNING:
            e.lease_until = clock.monotonic() + self.timeout

    def tick(self, now: float) -> None:
        """Judge silence and leases (only while the link is up: see ``reconnected``)."""
        silent = now - self.timeout
        for w in self.fleet.online():
            if w.last_seen < silent:
                log.warning(
                    "worker %s silent for %.0f s: requeueing its tasks", w.id, now - w.last_seen
                )
                w.set_online(False)
                w.silent = True
                self.life.lose(w, "silent", lost=True)
        for w in list(self.fleet.workers.values()):
            for e in [e for e in w.grants.values() if e.lease_until < now]:
                self.life.interrupt(w, e, "lease_expired", "lease expired")

    def reconnected(self, now: float) -> None:
        """After the distributor's own outage: everyone gets a fresh lease.

        While it is cut off it hears no heartbeats, so silence says nothing about the
        workers: judging them then would requeue (and count as lost) every task in flight.
        """
        grace = now + self.timeout
        for w in self.fleet.online():
            w.last_seen = now
        for w in self.fleet.workers.values():
            for e in w.grants.values():
                e.lease_until = max(e.lease_until, grace)

    def forget_departed(self, now: float, outbox: Any, metrics: Any) -> list[str]:
        """Forget workers offline for ``forget_after``: clear their retained status and
        breaker topics, drop their breakers and metrics series."""
        gone = self.fleet.departed(now, self.life.config.distributor.forget_after)
        prefix = self.life.topics.prefix
        for worker_id in gone:
            keys = self.life.breakers.worker_keys(worker_id)
            # a previous incarnation of this distributor may have retained a breaker state
            # this one never saw: clear the topic of every type the worker announced
            announced = self.fleet.workers[worker_id].handlers
            keys += sorted({f"worker/{worker_id}/{t}" for t in announced} - set(keys))
            self.life.breakers.forget_worker(worker_id)
            self.fleet.forget(worker_id)
            metrics.forget_worker(worker_id)
            outbox.publish(self.life.topics.worker(worker_id), b"", retain=True)
            for key in keys:
                outbox.publish(f"{prefix}/breakers/{key}", b"", retain=True)
            log.info("worker %s forgotten (offline for a while)", worker_id)
        return gone
