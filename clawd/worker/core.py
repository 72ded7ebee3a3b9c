"""The worker loop: announce, receive grants, run them, report outcomes and liveness.

The worker publishes a retained status on ``<prefix>/workers/<id>`` with a Last Will
that flips it to offline, so the distributor notices a dead worker within seconds. Its
reports (outcomes, plus the ids it is still running) go to ``<prefix>/_/done/<id>`` from
this loop, which also drives the MQTT connection: when the loop wedges, the reports and
keepalives stop, and the distributor requeues its tasks when their leases run out.
Handlers run on a pool; a finished one wakes the loop.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections import OrderedDict, deque
from typing import Any

from clawd import clock, wire
from clawd.connection import Will
from clawd.envelope import Task, encode, excerpt
from clawd.handler import TaskContext
from clawd.message import Message
from clawd.scaling import ConcurrencyScaler
from clawd.topics import Topics
from clawd.worker.pool import Outcome, Pool

log = logging.getLogger("clawd.worker")

#: how many finished (task id, attempt) pairs a worker remembers, with their outcomes
REMEMBER = 4096


class Worker:
    """One worker. Construct, give it a transport (``attach``), call ``run_once``."""

    def __init__(self, config: Any, plugins: Any, *, pool: Any = None) -> None:
        """``pool`` runs the handlers (default: a thread/process :class:`Pool`; a
        simulation passes one that runs them in simulated time)."""
        self.config = config
        self.plugins = plugins
        self.id: str = config.worker.id
        self.topics = Topics(config.broker.prefix)
        self.capacity: int = config.worker.concurrency
        low, high = config.worker.concurrency_limits
        #: scales ``capacity`` between the limits by backlog (off when they are equal)
        self.scaler = ConcurrencyScaler(low, high, initial=self.capacity)
        #: queued tasks in the lanes this worker serves, from the retained metrics
        self.backlog = 0
        self._next_scale = 0.0
        self._peak = 0
        self.session = uuid.uuid4().hex[:12]
        #: when this incarnation started: a status of an older one (a Last Will a broker
        #: replays late) is told apart from this one's
        self.boot = clock.wall()
        self._next_status = 0.0
        #: grants (Message) from poll(), finished tasks (tuples) from the pool's threads
        self.inbox: deque[Any] = deque()
        self.pool = Pool(high) if pool is None else pool
        #: task id -> (attempt, ctx, deadline or None)
        self.running: dict[str, tuple[int, TaskContext, float | None]] = {}
        self.transport: Any = None
        self.draining = False
        self.heartbeat = max(0.2, config.distributor.liveness_timeout / 4)
        self._next_report = 0.0
        self._outcomes: list[dict[str, Any]] = []
        self.completed = 0
        self.pending_reload: tuple[Any, Any] | None = None
        #: grants that arrived while draining: handed straight back
        self._refused: list[list[Any]] = []
        #: (task id, attempt, submitted_at) -> outcome of the latest finished runs: a grant
        #: delivered again after its run ended is answered with it, not run again (the
        #: submission time tells an id submitted again once forgotten from a redelivery)
        self._finished: OrderedDict[tuple[str, int, Any], dict[str, Any]] = OrderedDict()
        #: runs cancelled here, the same way: a grant of one delivered again (a QoS 1
        #: resend after a reconnect) is not run again
        self._cancelled: OrderedDict[tuple[str, int, Any], None] = OrderedDict()
        #: the newest distributor epoch a dispatch message came with (:mod:`clawd.leader`)
        self.epoch = 0

    # -- wiring --------------------------------------------------------------------------

    def subscriptions(self) -> list[tuple[str, int]]:
        # its own status too: the distributor may clear it (forgetting a departed worker)
        # just as this worker comes back, and the worker then announces itself again
        subs = [(self.topics.dispatch(self.id), 1), (self.topics.worker(self.id), 1)]
        if self.scaler.enabled:
            subs.append((self.topics.metrics, 0))
        return subs

    def status(self, state: str, reason: str | None = None) -> bytes:
        return encode(self.status_doc(state, reason))

    def status_doc(self, state: str, reason: str | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id,
            "state": state,
            "session": self.session,
            "boot": self.boot,
            "capacity": 0 if state != "online" else self.capacity,
            "in_flight": len(self.running),
            "handlers": sorted(self.plugins.handlers),
            "capabilities": sorted(self.config.worker.capabilities),
            "lanes": sorted(self.config.worker.lanes),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": clock.wall(),
        }
        if reason:
            doc["reason"] = reason
        return doc

    def will(self) -> Will:
        return Will(self.topics.worker(self.id), self.status("offline", "lost"))

    def attach(self, transport: Any) -> None:
        self.transport = transport

    def announce(self) -> None:
        """(Re)publish the retained online status: after every (re)connect."""
        self.transport.publish(self.topics.worker(self.id), self.status("online"), retain=True)

    def on_message(self, msg: Message) -> None:
        """Called from the transport's poll(), on this loop's thread."""
        self.inbox.append(msg)

    # -- the loop ------------------------------------------------------------------------

    def _apply_reload(self, config: Any, plugins: Any) -> None:
        """Take a reloaded config on this loop's thread: handlers, capabilities, lanes,
        concurrency and the heartbeat; the id and the broker need a restart."""
        self.pending_reload = None
        old = self.config.worker
        self.config, self.plugins = config, plugins
        self.heartbeat = max(0.2, config.distributor.liveness_timeout / 4)
        new = config.worker
        if (new.concurrency, new.concurrency_limits) != (old.concurrency, old.concurrency_limits):
            low, high = new.concurrency_limits
            self.scaler = ConcurrencyScaler(low, high, initial=new.concurrency)
            self.capacity = new.concurrency
            # running tasks finish on the old pool's threads; new ones go to a pool sized
            # for the new limit
            old_pool, self.pool = self.pool, Pool(high)
            old_pool.executor.shutdown()
            log.info("concurrency %d (between %d and %d) after reload", self.capacity, low, high)
        self.announce()  # handlers, capabilities, lanes and capacity may have changed

    def run_once(self, timeout: float = 0.2) -> int:
        if self.pending_reload is not None:
            self._apply_reload(*self.pending_reload)
        inbox = self.inbox
        if inbox:
            timeout = 0.0
        else:
            wait = self.pool.spill()  # jobs queued behind a slow one get threads
            if wait is not None:
                timeout = min(timeout, wait)
        self.transport.poll(timeout)
        handled = 0
        while inbox:
            item = inbox.popleft()
            handled += 1
            try:
                if isinstance(item, Message):
                    if item.topic == self.topics.metrics:
                        self._observe_backlog(item)
                    elif item.topic == self.topics.worker(self.id):
                        if not item.payload and not self.draining:
                            log.info("status cleared by the distributor: announcing again")
                            self.announce()
                    else:
                        self._grant(item)
                else:
                    self._done(*item)
            except Exception as exc:  # one message never ends the loop
                log.exception("handling %r failed", getattr(item, "topic", item))
                if isinstance(item, Message):
                    self._unreadable(item, f"message could not be handled: {exc!r}")
        now = clock.monotonic()
        self._expire(now)
        if self.scaler.enabled and now >= self._next_scale:
            self._next_scale = now + 1.0
            self._rescale()
        if self._outcomes or self._refused or now >= self._next_report:
            self._report(now)
        return handled

    def _unreadable(self, msg: Message, error: str) -> None:
        """A message this worker cannot read: one log line, and a report on <prefix>/errors
        (nothing a well-behaved clawd sends gets here)."""
        log.warning("rejected message on %s: %s", msg.topic, error)
        doc = {"error": error, "topic": msg.topic, "payload_excerpt": excerpt(msg.payload)}
        self.transport.publish(self.topics.errors, encode(doc))

    def _observe_backlog(self, msg: Message) -> None:
        try:
            lanes = wire.backlog(msg.payload).lanes
        except wire.Unreadable as exc:
            self._unreadable(msg, exc.error)
            return
        served = self.config.worker.lanes
        self.backlog = sum(ln.depth for name, ln in lanes.items() if not served or name in served)

    def _rescale(self) -> None:
        """Autoscaling: follow the backlog between min and max concurrency."""
        # the loop wakes when a task ends, so a sample of len(running) here would always see
        # a slot just freed: the peak over the interval says whether the slots stayed full
        busy, self._peak = self._peak, len(self.running)
        new = self.scaler.update(in_flight=busy, backlog=self.backlog)
        if new != self.capacity and not self.draining:
            log.info("concurrency %d -> %d (backlog %d)", self.capacity, new, self.backlog)
            self.capacity = new
            self.announce()  # the distributor's credit follows the announced capacity

    def _grant(self, msg: Message) -> None:
        try:
            grants = wire.dispatch(msg.payload)
        except wire.Unreadable as exc:
            self._unreadable(msg, exc.error)
            return
        if grants.epoch and grants.epoch < self.epoch:
            # a deposed distributor's, sent before it noticed: the leader decides now
            log.warning(
                "ignored a dispatch of epoch %d (the leading distributor's is %d)",
                grants.epoch,
                self.epoch,
            )
            return
        self.epoch = max(self.epoch, grants.epoch)  # 0: a distributor without a shared journal
        for task_id, attempt in grants.cancel:
            self._cancel(task_id, attempt)
        for task in grants.tasks:
            self._start(task)

    def _cancel(self, task_id: str, attempt: int) -> None:
        """Stop a cancelled dispatch: its slot is free at once and no outcome is reported;
        an exec command's process group is killed, an in-process handler's thread is
        abandoned (it may look at ``ctx.cancelled`` and stop early)."""
        current = self.running.get(task_id)
        if current is None or current[0] != attempt:
            return  # already ended here, or superseded
        del self.running[task_id]
        current[1].cancelled.set()
        self._cancelled[(task_id, attempt, current[1].submitted_at)] = None
        if len(self._cancelled) > REMEMBER:
            self._cancelled.popitem(last=False)
        log.info("task %s cancelled; stopping it", task_id)

    def _start(self, task: Task) -> None:
        prior = self.running.get(task.id)
        if prior is not None and prior[0] >= task.attempt:
            return  # a redelivered grant of something already running
        if (task.id, task.attempt, task.submitted_at) in self._cancelled:
            return  # a redelivered grant of a run cancelled here
        ended = self._finished.get((task.id, task.attempt, task.submitted_at))
        if ended is not None:
            # a redelivered grant of a run that ended: its outcome again, not a second run
            if not any(o is ended for o in self._outcomes):
                self._outcomes.append(ended)
            return
        if self.draining:
            # handed back, not failed: a refusal must not burn an attempt or trip a breaker
            self._refused.append([task.id, task.attempt])
            return
        spec = self.plugins.handlers.get(task.type)
        if spec is None:
            self._outcomes.append(
                {
                    "id": task.id,
                    "attempt": task.attempt,
                    "status": "error",
                    "error": f"no handler for type {task.type!r} here",
                    "retryable": True,
                    "ms": 0.0,
                }
            )
            return
        timeout = task.timeout or spec.timeout
        ctx = TaskContext(
            id=task.id,
            type=task.type,
            input=task.input,
            lane=task.lane,
            attempt=task.attempt,
            meta=task.meta or {},
            timeout=timeout,
            report=self._progress_reporter(task.id),
            submitted_at=task.submitted_at,
            worker=self.id,
        )
        deadline = None
        if timeout is not None and spec.isolation == "thread":
            # grace for handlers that enforce their own limit (exec kills its group)
            deadline = clock.monotonic() + timeout + 1.0
        self.running[task.id] = (task.attempt, ctx, deadline)
        self._peak = max(self._peak, len(self.running))

        def done(task_id: str, out: Outcome, seconds: float) -> None:
            self.inbox.append((task_id, task.attempt, out, seconds, ctx))
            self.transport.wake()

        def before() -> None:
            self.plugins.notify("clawd_before_task", task=ctx, worker_id=self.id)

        self.pool.submit(spec, ctx, done, before)

    def _progress_reporter(self, task_id: str) -> Any:
        topic = self.topics.progress(task_id)

        def report(fraction: float, message: str | None) -> None:
            doc: dict[str, Any] = {"id": task_id, "progress": fraction}
            if message is not None:
                doc["message"] = message
            self.transport.publish(topic, encode(doc), qos=0)

        return report

    def _done(self, task_id: str, attempt: int, out: Outcome, seconds: float, ctx: Any) -> None:
        current = self.running.get(task_id)
        if current is None or current[0] != attempt or current[1] is not ctx:
            return  # already reported (timed out), superseded, or an abandoned run
        del self.running[task_id]
        self._finish(task_id, attempt, out, seconds, ctx)

    def _finish(self, task_id: str, attempt: int, out: Outcome, seconds: float, ctx: Any) -> None:
        self.completed += 1
        ms = round(seconds * 1000, 3)
        rec = {"id": task_id, "attempt": attempt, "ms": ms, **out}
        self._outcomes.append(rec)
        finished = self._finished
        finished[(task_id, attempt, ctx.submitted_at)] = rec
        if len(finished) > REMEMBER:
            finished.popitem(last=False)
        outcome = {k: v for k, v in rec.items() if k not in ("id", "attempt")}
        outcome["duration_ms"] = outcome.pop("ms")
        if out["status"] != "ok":
            self.plugins.notify("clawd_task_error", task=ctx, error=RuntimeError(out.get("error")))
        self.plugins.notify("clawd_after_task", task=ctx, outcome=outcome)

    def _expire(self, now: float) -> None:
        for task_id, (attempt, ctx, deadline) in list(self.running.items()):
            if deadline is not None and now > deadline:
                del self.running[task_id]
                out = {
                    "status": "error",
                    "retryable": True,
                    "code": "timeout",
                    "error": f"handler {ctx.type!r} ran past its {ctx.timeout:g} s limit",
                }
                log.warning("task %s timed out; its thread is abandoned", task_id)
                self._finish(task_id, attempt, out, now - ctx.started, ctx)

    def _report(self, now: float, handback: list[list[Any]] | None = None) -> None:
        doc: dict[str, Any] = {
            "outcomes": self._outcomes,
            "running": [[tid, a] for tid, (a, _, _) in self.running.items()],
        }
        handback = (handback or []) + self._refused
        if handback:
            doc["handback"] = handback
        if now >= self._next_status:
            # the status rides on a heartbeat once per interval: the distributor finds
            # workers this way on a broker that delivers no retained status
            self._next_status = now + self.heartbeat
            st = self.status_doc("draining" if self.draining else "online")
            # what liveness needs; host, pid and since stay on the retained status
            doc["status"] = {k: v for k, v in st.items() if k not in ("host", "pid", "since")}
        self.transport.publish(self.topics.done(self.id), encode(doc))
        self._outcomes = []
        self._refused = []
        self._next_report = now + self.heartbeat

    # -- stopping ------------------------------------------------------------------------

    def drain(self, timeout: float) -> None:
        """Stop taking work, let running tasks finish up to ``timeout``, hand back the rest."""
        self.draining = True
        self.transport.publish(self.topics.worker(self.id), self.status("draining"), retain=True)
        end = clock.monotonic() + timeout
        while self.running and clock.monotonic() < end:
            self.run_once(0.05)
        handback = [[tid, a] for tid, (a, _, _) in self.running.items()]
        if handback or self._refused:
            log.info("handing back %d unfinished task(s)", len(handback) + len(self._refused))
        self.running.clear()
        self._report(clock.monotonic(), handback)
        self.transport.publish(
            self.topics.worker(self.id), self.status("offline", "stopped"), retain=True
        )
        self.pool.shutdown()
