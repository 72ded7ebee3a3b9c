"""The task table: every open task, its state, and the only code that changes that state.

An entry moves ``QUEUED -> RUNNING -> (DONE | DELAYED | QUEUED)`` and ``DELAYED ->
QUEUED``; a task whose envelope put off its start (``delay``, ``not_before``) is admitted
(and recovered after a restart) DELAYED until then; a cancel moves any open state to DONE.

A QUEUED entry whose rate limit has no token is parked beside its lane's queue (still
QUEUED, holding no worker slot) until the limit's bucket refills (``park``, ``unpark``).

Each dispatch takes a new fencing token (``Entry.attempt``), which only goes
up, across hand-backs, restarts and dead-letter replays: an outcome carrying an older
token is about a dispatch that no longer counts. What the journal records (admission,
each token, a hand-back, the terminal result, a replay) is staged here in the same call
that changes memory, so the two cannot disagree after a restart.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Any

import msgspec

from clawd import clock
from clawd.distributor.entry import Entry, State, attempt_record
from clawd.distributor.lanes import Lane, LaneScheduler
from clawd.envelope import Task
from clawd.journal import Journal

#: a lane keeps at most this many tasks in memory; the rest are paged from the journal
WINDOW = 20_000


class TaskTable:
    """Open tasks by id, the lanes' queues of them, and the delayed ones by due time."""

    def __init__(self, journal: Journal, lanes: LaneScheduler) -> None:
        self.journal = journal
        self.lanes = lanes
        self.entries: dict[str, Entry] = {}
        #: (due, task id) of DELAYED entries, a heap
        self.delayed: list[tuple[float, str]] = []
        #: ids of backlog tasks cancelled while still only in the journal: never paged in
        self.dropped: set[str] = set()

    def get(self, task_id: str) -> Entry | None:
        return self.entries.get(task_id)

    # -- in --------------------------------------------------------------------------------

    def admit(self, task: Task, reply: list[Any] | None) -> None:
        """A new task: journaled, and queued unless its lane's backlog lives in the journal."""
        self.journal.add(task, reply)
        lane = self.lanes.lanes[task.lane]
        if lane.spilled or lane.waiting() >= WINDOW:
            # the journal holds it; it is paged back in order when the lane drains
            lane.spilled = True
            return
        e = self.entries[task.id] = Entry(task, reply)
        self._place(e)

    def _place(self, e: Entry) -> None:
        """Queue a new or recovered entry, or hold it DELAYED until its ``not_before``."""
        wait = (e.task.not_before or 0.0) - clock.wall()
        if wait > 0:
            self.delay(e, wait)
        else:
            self.lanes.push(e)

    def page_in(self, lane: Lane) -> int:
        """Load the next page of a spilled lane from the journal."""
        # a task that ended this turn is still queued in the journal until the turn's
        # commit; written first, it is not read back (and run again) as queued
        self.journal.commit()
        rows = self.journal.open_tasks(lane.name, after=lane.cursor, limit=WINDOW // 2)
        for seq, task, attempts, reply, history in rows:
            lane.cursor = seq
            if task.id in self.entries or task.id in self.dropped:
                continue
            e = self.entries[task.id] = Entry(task, reply, attempts, history, seq)
            self._place(e)
        lane.spilled = len(rows) >= WINDOW // 2
        return len(rows)

    def recover(self) -> int:
        """Load every open task from the journal (after a restart): all are QUEUED."""
        n = 0
        for name in self.journal.lanes_with_open():
            if name not in self.lanes.lanes:
                self.lanes.configure({name: 1})
            n += self.page_in(self.lanes.lanes[name])
        return n

    def replay(self, letter: dict[str, Any]) -> Entry | None:
        """A dead letter back in its lane with fresh attempts; its fencing token goes on
        from the highest one it ever had, so no outcome of its old life can count."""
        task_id = letter["id"]
        if task_id in self.entries:
            return None
        task = msgspec.convert(letter["task"], Task)
        fence = max((int(r.get("attempt") or 0) for r in letter.get("history") or ()), default=0)
        e = Entry(task, None, fence)
        e.history.append(attempt_record(e, None, "replayed"))
        e.spent = 0
        task.attempt = fence
        self.journal.requeue(task_id, fence, e.history)
        self.entries[task_id] = e
        self.lanes.push(e)
        return e

    # -- transitions -----------------------------------------------------------------------

    def take(self, lane: Lane, index: int) -> Entry:
        """Remove the ``index``-th queued entry of a lane, about to start or end."""
        e = lane.queue[index]
        del lane.queue[index]
        return e

    def start(self, e: Entry, lease_until: float, wall: float) -> int:
        """QUEUED (taken from its lane) -> RUNNING: a new dispatch, a new fencing token."""
        e.attempt += 1
        e.spent += 1
        e.state = State.RUNNING
        e.lease_until = lease_until
        e.dispatched_at = wall
        e.task.attempt = e.attempt
        self.journal.dispatched(e.task.id, e.attempt)
        return e.attempt

    def hold(self, seconds: float) -> int:
        """After a restart: every recovered task whose latest dispatch did not end in the
        journal waits ``seconds`` (DELAYED, ``held``) before it is dispatched again, so
        that the report of a worker still running it can reclaim it instead."""
        n = 0
        for lane in self.lanes.lanes.values():
            held = [e for e in lane.queue if _may_run(e)]
            if held:
                ids = {e.task.id for e in held}
                lane.queue = deque(e for e in lane.queue if e.task.id not in ids)
            for e in held:
                e.held = True
                self.delay(e, seconds)
            n += len(held)
        return n

    def reclaim(self, e: Entry) -> bool:
        """QUEUED (or held after a restart) -> RUNNING without a new dispatch: its latest
        attempt is still running, or its outcome came after this distributor requeued it
        (a restart, an outage, a silence), and that saves a rerun."""
        if e.state is State.DELAYED and e.held:
            e.held = False
            self.delayed = [d for d in self.delayed if d[1] != e.task.id]
            heapq.heapify(self.delayed)
            e.state = State.RUNNING
            return True
        if e.state is not State.QUEUED or not self._unqueue(e):
            return False
        e.state = State.RUNNING
        return True

    def requeue(self, e: Entry, *, front: bool = False) -> None:
        """RUNNING or DELAYED -> QUEUED."""
        e.state = State.QUEUED
        e.held = False
        e.enqueued_at = clock.monotonic()
        self.lanes.push(e, front=front)

    def hand_back(self, e: Entry, record: dict[str, Any]) -> None:
        """RUNNING -> QUEUED at the front, the attempt not counted: its worker stopped
        before it ran it to an end. The token stays: the next dispatch takes a higher one."""
        e.spent = max(0, e.spent - 1)
        e.history.append(record)
        self.journal.handed_back(e.task.id, e.history)
        self.requeue(e, front=True)

    def delay(self, e: Entry, seconds: float) -> None:
        """RUNNING -> DELAYED for ``seconds`` (a retry's backoff), or a new or recovered
        entry held until its ``not_before``."""
        e.state = State.DELAYED
        e.ready_at = clock.monotonic() + seconds
        heapq.heappush(self.delayed, (e.ready_at, e.task.id))

    def promote_due(self, now: float) -> None:
        """DELAYED -> QUEUED for every entry whose backoff has run out."""
        delayed = self.delayed
        while delayed and delayed[0][0] <= now:
            _, task_id = heapq.heappop(delayed)
            e = self.entries.get(task_id)
            if e is None or e.state is not State.DELAYED:
                continue
            early = (e.task.not_before or 0.0) - clock.wall()
            if early > 0:
                # the wall clock is behind the monotonic one: never start before not_before
                e.ready_at = now + early
                heapq.heappush(delayed, (e.ready_at, task_id))
                continue
            self.requeue(e)

    def withdraw(self, e: Entry) -> None:
        """QUEUED or DELAYED -> out of its queue, about to end (a cancel). A DELAYED one
        leaves its heap entry behind: :meth:`promote_due` skips entries that left."""
        if e.state is State.QUEUED:
            self._unqueue(e)

    def _unqueue(self, e: Entry) -> bool:
        """Take a QUEUED entry out of its lane's queue or the parking beside it."""
        lane = self.lanes.lanes[e.task.lane]
        if e in lane.queue:
            lane.queue.remove(e)
            return True
        for key, parked in lane.parked.items():
            if e in parked:
                parked.remove(e)
                if not parked:
                    del lane.parked[key]
                return True
        return False

    def park(self, lane: Lane, index: int, key: str) -> Entry:
        """QUEUED, in the lane's queue -> QUEUED, parked under rate limit ``key``: out of
        the dispatch scan's way (the tasks behind it are not held up) until the limit's
        bucket has a token again."""
        e = lane.queue[index]
        del lane.queue[index]
        parked = lane.parked.get(key)
        if parked is None:
            parked = lane.parked[key] = deque()
        parked.append(e)
        return e

    def unpark(self, lane: Lane, key: str, n: int) -> int:
        """Up to ``n`` of the tasks parked under ``key`` back to the front of their lane's
        queue, oldest first (all of them when ``n`` is negative); returns how many."""
        parked = lane.parked.get(key)
        if parked is None:
            return 0
        back = [parked.popleft() for _ in range(len(parked) if n < 0 else min(n, len(parked)))]
        if not parked:
            del lane.parked[key]
        if back and not lane.queue and not lane.spilled:
            lane.pass_ = max(lane.pass_, self.lanes.vtime)  # as a push into an idle lane
        lane.queue.extendleft(reversed(back))
        return len(back)

    def load_open(self, task_id: str) -> Entry | None:
        """An open task still only in the journal (a spilled backlog) as an entry that
        can be ended; it will not be paged in again."""
        task = self.journal.open_task(task_id)
        if task is None:
            return None
        self.dropped.add(task_id)
        return Entry(task)

    def finish(self, e: Entry, status: str, doc: dict[str, Any]) -> None:
        """Any state -> DONE: the terminal result is journaled and the entry leaves."""
        self.journal.finish(e.task.id, status, doc, e.history)
        self.entries.pop(e.task.id, None)
        e.state = State.DONE

    # -- views -----------------------------------------------------------------------------

    def describe(self, e: Entry) -> dict[str, Any]:
        """Where an open task is, for ``clawd task``."""
        doc: dict[str, Any] = {
            "id": e.task.id,
            "type": e.task.type,
            "lane": e.task.lane,
            "state": e.state.value,
            "attempts": e.spent,
            "attempt": e.attempt,
            "submitted_at": e.task.submitted_at,
        }
        if e.task.not_before is not None:
            doc["not_before"] = e.task.not_before
        if e.state is State.DELAYED:
            doc["until"] = round(clock.wall() + max(0.0, e.ready_at - clock.monotonic()), 3)
        if e.state is State.RUNNING:
            doc["since"] = e.dispatched_at
        if e.history:
            doc["history"] = e.history
        return doc


def _may_run(e: Entry) -> bool:
    """Whether the latest dispatch of a recovered entry may still be running: it had
    one, and the journal does not say how it ended (a hand-back)."""
    last = e.history[-1] if e.history else None
    return e.attempt > 0 and (last is None or last.get("attempt") != e.attempt)
