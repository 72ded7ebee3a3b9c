"""How a dispatch ends: a result, a retry after backoff, a dead letter, or a requeue.

Each function here ends a grant in the fleet and moves the entry in the task table in
one step, so a task is RUNNING exactly while a worker holds its grant.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import msgspec

from clawd import clock
from clawd.distributor.breakers import Breakers
from clawd.distributor.entry import Entry, attempt_record
from clawd.distributor.fleet import Fleet, WorkerState
from clawd.distributor.metrics import Metrics
from clawd.distributor.outbox import Outbox
from clawd.distributor.tasks import TaskTable
from clawd.envelope import result_doc
from clawd.topics import Topics
from clawd.wire import Outcome

log = logging.getLogger("clawd.distributor")


class Lifecycle:
    """Ends dispatches. ``config`` and ``plugins`` are replaced on a reload."""

    def __init__(
        self,
        config: Any,
        plugins: Any,
        *,
        tasks: TaskTable,
        fleet: Fleet,
        breakers: Breakers,
        outbox: Outbox,
        metrics: Metrics,
        topics: Topics,
    ) -> None:
        self.config = config
        self.plugins = plugins
        self.tasks = tasks
        self.fleet = fleet
        self.breakers = breakers
        self.outbox = outbox
        self.metrics = metrics
        self.topics = topics
        #: the group table (clawd.distributor.groups), told of every end; set by the core
        self.flows: Any = None

    def max_attempts(self, e: Entry) -> int:
        if e.task.max_attempts:
            return e.task.max_attempts
        hc = self.config.handler_config(e.task.type)
        return int(hc.max_attempts or self.config.retry.max_attempts)

    # -- terminal --------------------------------------------------------------------------

    def finish(
        self,
        e: Entry,
        status: str,
        *,
        result: Any = msgspec.UNSET,
        error: str | None = None,
        worker: str | None = None,
    ) -> dict[str, Any]:
        doc = result_doc(
            e.task,
            status,
            attempts=e.spent,
            result=result,
            error=error,
            worker=worker,
            started_at=e.dispatched_at or None,
        )
        self.tasks.finish(e, status, doc)
        self.metrics.count(status)
        self.outbox.result(doc, e.reply)
        if self.flows is not None:
            self.flows.finished(e.task, status, doc)
        self.plugins.notify("clawd_task_finished", result=doc)
        return doc

    def dead(self, e: Entry, reason: str, error: str, worker: str | None = None) -> None:
        """A failed result and its dead letter, journaled together; the letter is staged
        first, so the result stays owed until the broker has both (at-least-once)."""
        letter = {
            "id": e.task.id,
            "type": e.task.type,
            "lane": e.task.lane,
            "task": msgspec.to_builtins(e.task),
            "reason": reason,
            "error": error,
            "attempts": e.spent,
            "history": e.history,
            "dead_at": clock.wall(),
        }
        self.tasks.journal.dead_letter(e.task.id, e.task.lane, reason, letter)
        self.metrics.count("dead")
        log.warning("task %s dead-lettered: %s (%s)", e.task.id, reason, error)
        self.outbox.dead_letter(letter)
        self.finish(e, "failed", error=error, worker=worker)
        self.plugins.notify("clawd_dead_letter", letter=letter)

    # -- a dispatch ends without an outcome ------------------------------------------------

    def interrupt(self, w: WorkerState, e: Entry, status: str, why: str) -> None:
        """The grant ended with no outcome (lease expired, worker gone): the task goes back
        to the front of its lane, and the breakers get the call's slot back."""
        self.fleet.release(w, e.task.id, e.attempt)
        e.history.append(attempt_record(e, w.id, status, why))
        self.breakers.cancelled(w.id, e.task.type)
        self.tasks.requeue(e, front=True)

    def hand_back(self, w: WorkerState, task_id: str, attempt: int) -> None:
        """The worker drained before running it to an end: requeued, not counted."""
        e = self.fleet.release(w, task_id, attempt)
        if e is None:
            return
        self.breakers.cancelled(w.id, e.task.type)
        self.tasks.hand_back(e, attempt_record(e, w.id, "handback", "worker drained"))

    def adopt(self, w: WorkerState, task_id: str, attempt: int, lease: float) -> None:
        """``w`` reports it is running the latest attempt of a task this distributor has
        requeued (after a restart, a silence, a partition) and not dispatched again: the
        grant is ``w``'s again, leased, rather than the task run twice. An attempt that
        was dispatched again meanwhile is superseded: the newer token wins."""
        e = self.tasks.get(task_id)
        if e is None or e.attempt != attempt or not w.online or not self.tasks.reclaim(e):
            return
        self.fleet.grant(w, e)
        self.breakers.dispatched(w.id, e.task.type)
        e.lease_until = lease
        self.metrics.count("reclaimed")
        log.info("task %s: attempt %d still running on %s, reclaimed", task_id, attempt, w.id)

    def lose(self, w: WorkerState, why: str, *, lost: bool) -> None:
        """Every grant of ``w`` ends: it stopped (``lost=False``) or died under them."""
        w.solo = None
        for e in self.fleet.release_all(w):
            if not lost:
                e.history.append(attempt_record(e, w.id, "lost", f"worker {w.id} {why}"))
                self.breakers.cancelled(w.id, e.task.type)
                self.tasks.requeue(e, front=True)
                continue
            # the worker died under it: a failure of that worker, and a strike against it
            e.history.append(attempt_record(e, w.id, "lost", f"worker {w.id} {why}"))
            self.breakers.record(w.id, e.task.type, False, 0.0)
            e.lost += 1
            if e.lost >= self.config.distributor.poison_after:
                self.dead(e, "poison", f"the worker running it was lost {e.lost} times")
            else:
                self.tasks.requeue(e, front=True)

    # -- an outcome ------------------------------------------------------------------------

    def outcome(self, w: WorkerState, o: Outcome) -> None:
        e = self.fleet.release(w, o.id, o.attempt)
        if e is None:
            late = self.tasks.get(o.id)
            if late is None or late.attempt != o.attempt or not self.tasks.reclaim(late):
                # fencing: an outcome of a superseded attempt never becomes a second result
                self.metrics.count("stale_outcomes")
                return
            e = late
        seconds = o.ms / 1000.0
        # bad input is the task's fault, not the worker's: it does not trip a breaker
        healthy = o.status == "ok" or not o.retryable
        self.breakers.record(w.id, e.task.type, healthy, seconds)
        w.observe(e.task.type, seconds)
        self.metrics.observe_task(e.task.lane, e.task.type, seconds)
        if o.status == "ok":
            e.history.append(attempt_record(e, w.id, "ok"))
            result = None if o.result is msgspec.UNSET else o.result
            self.finish(e, "ok", result=result, worker=w.id)
            return
        error = o.error or "unknown error"
        e.history.append(attempt_record(e, w.id, o.code or "error", error))
        if not o.retryable:
            self.dead(e, "non_retryable", error, worker=w.id)
        elif e.spent >= self.max_attempts(e):
            self.dead(e, "timeout" if o.code == "timeout" else "max_attempts", error, worker=w.id)
        else:
            self.metrics.count("retried")
            r = self.config.retry
            # capped exponential backoff with full jitter
            cap = min(r.backoff_cap, r.backoff_base * 2 ** (max(1, e.spent) - 1))
            self.tasks.delay(e, random.uniform(0, cap))
