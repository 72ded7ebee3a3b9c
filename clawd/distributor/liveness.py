"""Liveness: worker status, Last Wills, heartbeat reports, outcomes, leases and timers.

A worker is alive while the broker says so (retained status, Last Will) and while its
reports keep coming; each report renews the lease of every task it says it is running.
"""

from __future__ import annotations

import heapq
import logging
from typing import TYPE_CHECKING, Any

from clawd import clock, scaling
from clawd.distributor.entry import Entry, attempt_record
from clawd.distributor.registry import WorkerState
from clawd.envelope import decode

if TYPE_CHECKING:
    from clawd.distributor.core import Distributor

log = logging.getLogger("clawd.distributor")

#: the states a worker announces
STATES = ("online", "draining", "offline")


def worker_status(d: Distributor, worker_id: str, payload: bytes) -> None:
    if not payload:
        return  # a cleared retained status
    status = decode(payload)
    if not isinstance(status, dict) or status.get("state") not in STATES:
        # checked before anything changes: a garbled status never takes a worker offline
        raise ValueError('a worker status is a JSON object with "state": ' + ", ".join(STATES))
    w = d.registry.get(worker_id)
    state = status.get("state")
    session = status.get("session", "")
    w.update(status)  # raises on a field of the wrong type, before anything changed
    if w.online and session != w.session:
        # the worker restarted with the same id: what it ran before is gone
        lose_worker(d, w, "restarted", lost=True)
    d.refresh_types()
    w.session = session
    w.silent = False
    if state == "online":
        if not w.online:
            log.info("worker %s online (capacity %d)", worker_id, w.capacity)
        w.online = True
    elif state == "draining":
        w.online = False
    elif w.online or w.running:
        log.info("worker %s %s", worker_id, status.get("reason") or "offline")
        w.online = False
        lose_worker(d, w, status.get("reason") or "offline", lost=status.get("reason") == "lost")


def lose_worker(d: Distributor, w: WorkerState, why: str, *, lost: bool) -> None:
    for e in grants(d, w):
        if not lost:
            interrupt(d, w, e, "lost", f"worker {w.id} {why}")
            continue
        # the worker died under it: a failure of that worker, and a strike against the task
        e.history.append(attempt_record(e, w.id, "lost", f"worker {w.id} {why}"))
        d.breakers.record(w.id, e.task.type, False, 0.0)
        e.lost += 1
        if e.lost >= d._poison_after:
            d._dead(e, "poison", f"the worker running it was lost {e.lost} times")
        else:
            d._requeue(e, front=True)
    w.running.clear()


def interrupt(d: Distributor, w: WorkerState, e: Entry, status: str, why: str) -> None:
    """A dispatch ended with no outcome (lease expired, handed back, worker gone): the task
    goes back to the front of its lane, and the breakers get the call's slot back."""
    w.running.pop(e.task.id, None)
    e.history.append(attempt_record(e, w.id, status, why))
    d.breakers.cancelled(w.id, e.task.type)
    d._requeue(e, front=True)


def report(d: Distributor, worker_id: str, report: dict[str, Any]) -> None:
    w = d.registry.get(worker_id)
    w.last_seen = clock.monotonic()
    if w.silent and w.status.get("state") == "online":
        # it was only unheard (a partition, a broker restart): it is back
        log.info("worker %s heard again", worker_id)
        w.silent = False
        w.online = True
    lease = w.last_seen + d.config.distributor.liveness_timeout
    for task_id, attempt in report.get("running", ()):
        e = d.entries.get(task_id)
        if e is not None and e.attempt == attempt and e.worker == worker_id:
            e.lease_until = lease
    for o in report.get("outcomes", ()):
        outcome(d, w, o)
    handed = {task_id: attempt for task_id, attempt in report.get("handback", ())}
    for e in grants(d, w) if handed else ():
        if handed.get(e.task.id) == e.attempt:
            interrupt(d, w, e, "handback", "worker drained")
            e.attempt -= 1  # a hand-back is not a failed attempt
    for task_id, attempt in handed.items():  # the slot is free whatever became of the task
        if w.running.get(task_id) == attempt:
            del w.running[task_id]


def outcome(d: Distributor, w: WorkerState, o: dict[str, Any]) -> None:
    task_id, attempt = o["id"], o["attempt"]
    if w.running.get(task_id) == attempt:
        del w.running[task_id]
    e = d.entries.get(task_id)
    if e is not None and e.state == "queued" and e.attempt == attempt and e.worker is None:
        # the outcome of the latest attempt, which this distributor requeued (it restarted
        # or was cut off) but has not dispatched again: it stands, and saves a rerun
        lane = d.lanes.lanes[e.task.lane]
        if e in lane.queue:
            lane.queue.remove(e)
            e.state = "running"
            e.worker = w.id
    if e is None or e.state != "running" or e.attempt != attempt or e.worker != w.id:
        # fencing: an outcome of a superseded attempt never becomes a second result
        d.metrics.count("stale_outcomes")
        return
    seconds = o.get("ms", 0.0) / 1000.0
    # bad input is the task's fault, not the worker's: it does not trip a breaker
    healthy = o["status"] == "ok" or not o.get("retryable", True)
    d.breakers.record(w.id, e.task.type, healthy, seconds)
    w.observe(e.task.type, seconds)
    d.metrics.observe_task(e.task.lane, e.task.type, seconds)
    if o["status"] == "ok":
        e.history.append(attempt_record(e, w.id, "ok"))
        d._finish(e, "ok", result=o.get("result"), worker=w.id)
        return
    error = o.get("error") or "unknown error"
    code = o.get("code")
    e.history.append(attempt_record(e, w.id, code or "error", error))
    if not o.get("retryable", True):
        d._dead(e, "non_retryable", error, worker=w.id)
    elif e.attempt >= d._max_attempts(e.task):
        d._dead(e, "timeout" if code == "timeout" else "max_attempts", error, worker=w.id)
    else:
        d.metrics.count("retried")
        d._retry_later(e)


def tick(d: Distributor, now: float) -> None:
    while d.delayed and d.delayed[0][0] <= now:
        _, task_id = heapq.heappop(d.delayed)
        e = d.entries.get(task_id)
        if e is not None and e.state == "delayed":
            d._requeue(e)
    if not link_up(d, now):
        return
    silent = now - d.config.distributor.liveness_timeout
    for w in d.registry.online():
        if w.last_seen < silent:
            log.warning(
                "worker %s silent for %.0f s: requeueing its tasks", w.id, now - w.last_seen
            )
            w.online = False
            w.silent = True
            lose_worker(d, w, "silent", lost=True)
    for w in d.registry.workers.values():
        for e in grants(d, w):
            if e.lease_until < now:
                interrupt(d, w, e, "lease_expired", "lease expired")
    d.breakers.tick()
    snap = d.metrics.maybe_publish(d, now)
    if snap is not None:
        sc = d.config.scaler
        signals = scaling.signals(
            snap,
            target_utilisation=sc.target_utilisation,
            max_wait=sc.max_wait,
            worker_capacity=d.config.worker.concurrency,
        )
        d.plugins.notify("clawd_scale", signals=signals, config=d.config)


def link_up(d: Distributor, now: float) -> bool:
    """Whether the broker connection is up; after an outage, give everyone a fresh lease.

    While the distributor itself is cut off it hears no heartbeats, so silence says
    nothing about the workers: judging them then would requeue (and count as lost)
    every task in flight.
    """
    up = d.transport is None or d.transport.connected.is_set()
    if not up:
        d._was_down = True
        return False
    if d._was_down:
        d._was_down = False
        d._resend_outbox()
        grace = now + d.config.distributor.liveness_timeout
        for w in d.registry.online():
            w.last_seen = now
        for w in d.registry.workers.values():
            for e in grants(d, w):
                e.lease_until = max(e.lease_until, grace)
    return True


def grants(d: Distributor, w: WorkerState) -> list[Entry]:
    """The dispatches to ``w`` still in flight: what its leases, losses and hand-backs are
    about. Read from the worker's grants, not by scanning every open entry (a backlog holds
    tens of thousands of queued ones)."""
    out = []
    for task_id, attempt in w.running.items():
        e = d.entries.get(task_id)
        if e is not None and e.state == "running" and e.attempt == attempt and e.worker == w.id:
            out.append(e)
    return out
