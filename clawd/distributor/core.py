"""The distributor's loop: submissions in, dispatch out, outcomes back, results out.

All state changes happen on one thread (``run_once``), which also drives the MQTT
connection: one turn reads what arrived (up to one 64 KiB read), handles every message,
commits the journal once (group commit), and only then acknowledges submissions and
publishes results, so nothing is promised before it is durable.
"""

from __future__ import annotations

import heapq
import logging
import random
from collections import deque
from typing import Any

import msgspec

from clawd import clock
from clawd.distributor import dispatch, liveness
from clawd.distributor.breakers import Breakers
from clawd.distributor.dispatch import WINDOW
from clawd.distributor.entry import Entry
from clawd.distributor.lanes import LaneScheduler
from clawd.distributor.metrics import Metrics
from clawd.distributor.registry import Registry, WorkerState
from clawd.envelope import Rejected, Task, decode, encode, excerpt, parse_submission, result_doc
from clawd.journal import Journal
from clawd.topics import Topics
from clawd.transport import Message

log = logging.getLogger("clawd.distributor")

#: MQTT session expiry for the distributor: submissions wait this long while it is down
SESSION_EXPIRY = 7 * 24 * 3600


class Distributor:
    """Owns task state. Construct, give it a transport (``attach``), call ``run_once``."""

    def __init__(self, config: Any, plugins: Any, journal: Journal) -> None:
        self.config = config
        self.plugins = plugins
        self.journal = journal
        self.topics = Topics(config.broker.prefix)
        self.inbox: deque[Message] = deque()
        self.registry = Registry()
        self.types: set[str] = set(plugins.handlers)
        self.lanes = LaneScheduler({n: lc.weight for n, lc in config.lanes.items()})
        self.entries: dict[str, Entry] = {}
        self.delayed: list[tuple[float, str]] = []
        self.strategy = plugins.make_strategy(
            config.distributor.strategy, dict(config.distributor.strategy_options)
        )
        self.metrics = Metrics()
        self.breakers = Breakers(config.breakers, on_change=self._breaker_changed)
        self.transport: Any = None
        self._acks: list[tuple[int, int]] = []
        #: the turn's valid submissions: (task, reply, id chosen by the producer)
        self._admitting: list[tuple[Task, list[Any] | None, bool]] = []
        self._out: list[tuple[str, bytes, dict[str, Any]]] = []
        #: tracked result publishes, in order, until the broker acknowledges them
        self._deliveries: deque[tuple[str, Any]] = deque()
        self._next_tick = 0.0
        self.draining = False
        self._poison_after = config.distributor.poison_after
        self.breakers.cfg = config.breakers
        self.pending_reload: tuple[Any, Any] | None = None
        self._was_down = False

    def _apply_reload(self, config: Any, plugins: Any) -> None:
        """Apply a reloaded config on this loop's thread: lanes, strategy, retries."""
        self.pending_reload = None
        self.config = config
        self.plugins = plugins
        self.refresh_types()
        self.lanes.configure({n: lc.weight for n, lc in config.lanes.items()})
        self.strategy = plugins.make_strategy(
            config.distributor.strategy, dict(config.distributor.strategy_options)
        )
        self._poison_after = config.distributor.poison_after

    # -- wiring --------------------------------------------------------------------------

    def subscriptions(self) -> list[tuple[str, int]]:
        t = self.topics
        return [
            (t.workers_filter, 1),
            (t.done_filter, 1),
            (t.tasks_filter, 1),
            (t.control, 1),
            (f"{t.prefix}/progress/+", 0),
        ]

    def attach(self, transport: Any) -> None:
        self.transport = transport

    def on_message(self, msg: Message) -> None:
        """Called from the transport's poll(), on this loop's thread."""
        self.inbox.append(msg)

    def recover(self) -> int:
        """Load every queued task from the journal (after a restart)."""
        n = 0
        for lane_name in self.journal.lanes_with_open():
            if lane_name not in self.lanes.lanes:
                self.lanes.configure({lane_name: 1})
            n += self._page_in(self.lanes.lanes[lane_name])
        if n:
            log.info("resumed %d open task(s) from the journal", n)
        self._resend_outbox()
        return n

    # -- the loop ------------------------------------------------------------------------

    def run_once(self, timeout: float = 0.2) -> int:
        """Handle what arrived (waiting up to ``timeout``), commit, acknowledge, dispatch."""
        if self.pending_reload is not None:
            self._apply_reload(*self.pending_reload)
        inbox = self.inbox
        self.transport.poll(0.0 if inbox else timeout)
        handled = len(inbox)
        while inbox:
            self._handle(inbox.popleft())
        if self._admitting:
            self._admit()
        now = clock.monotonic()
        if now >= self._next_tick:
            self._tick(now)
            self._next_tick = now + 0.5
        if not self.draining:
            self._dispatch()
        self._settle()
        self._flush()
        return handled

    def _flush(self) -> None:
        """Commit, then acknowledge and publish: nothing is promised before it is durable."""
        self.journal.commit()
        tr = self.transport
        for topic, payload, kw in self._out:
            task_id = kw.pop("track", None)
            if task_id is None:
                tr.publish(topic, payload, **kw)
            else:
                self._deliveries.append((task_id, tr.publish_tracked(topic, payload)))
        self._out.clear()
        for mid, qos in self._acks:
            tr.ack(mid, qos)
        self._acks.clear()
        tr.flush()

    def _publish(self, topic: str, payload: bytes, **kw: Any) -> None:
        self._out.append((topic, payload, kw))

    def _settle(self) -> None:
        """Results the broker acknowledged leave the outbox (PUBACKs come in order)."""
        d = self._deliveries
        while d and d[0][1].acknowledged:
            self.journal.published(d.popleft()[0])

    def _resend_outbox(self) -> int:
        """Publish again every result the broker never acknowledged (after a restart or an
        outage): a result is at-least-once, like the task."""
        self._deliveries.clear()
        rows = self.journal.outbox()
        for doc, reply in rows:
            self._publish_result(doc, reply)
        if rows:
            log.info("republishing %d result(s) the broker had not acknowledged", len(rows))
        return len(rows)

    def _handle(self, msg: Message) -> None:
        levels = self.topics.split(msg.topic)
        kind = levels[0]
        try:
            if kind == "tasks":
                self._submission(msg, levels)
                return
            if kind == "_" and len(levels) == 3 and levels[1] == "done":
                self._report(levels[2], decode(msg.payload))
            elif kind == "workers" and len(levels) == 2:
                self._worker_status(levels[1], msg.payload)
            elif kind == "progress" and len(levels) == 2:
                e = self.entries.get(levels[1])
                if e is not None and e.state == "running":
                    e.lease_until = clock.monotonic() + self.config.distributor.liveness_timeout
            elif kind == "_" and levels[1:] == ["control"]:
                self._control(decode(msg.payload))
        except (
            msgspec.DecodeError,
            msgspec.ValidationError,
            ValueError,
            TypeError,
            KeyError,
            AttributeError,
        ) as exc:
            self._error(f"unreadable message: {exc}", msg.topic, msg.payload)
        except Exception as exc:  # one message never ends the loop
            log.exception("handling a message on %s failed", msg.topic)
            self._error(f"message could not be handled: {exc!r}", msg.topic, msg.payload)
        finally:
            if kind != "tasks":
                self._acks.append((msg.mid, msg.qos))

    # -- submissions ---------------------------------------------------------------------

    def _submission(self, msg: Message, levels: list[str]) -> None:
        self._acks.append((msg.mid, msg.qos))
        try:
            task = parse_submission(
                levels,
                msg.payload,
                lanes=self.lanes.lanes,
                max_payload=self.config.daemon.max_payload,
                expiry=msg.expiry,
                known_types=self.types,
            )
        except Rejected as exc:
            self.metrics.count("rejected")
            self._error(exc.error, msg.topic, msg.payload, exc.task_id)
            if exc.task_id:
                self._publish(
                    self.topics.result(exc.task_id),
                    encode(_rejected_doc(exc.task_id, levels, exc.error)),
                )
            return
        reply = (
            [msg.response_topic, msg.correlation.hex() if msg.correlation else None]
            if msg.response_topic
            else None
        )
        # an id clawd generated is new by construction: only a producer's id is looked up
        self._admitting.append((task, reply, b'"id"' in msg.payload))

    def _admit(self) -> None:
        """Queue the turn's valid submissions, in order, with one journal lookup for all
        the producer-chosen ids: a known id is not run again."""
        subs, self._admitting = self._admitting, []
        entries = self.entries
        known = self.journal.lookup_many(
            [t.id for t, _, chosen in subs if chosen and t.id not in entries]
        )
        for task, reply, _ in subs:
            if task.id in entries:
                continue  # already open: it will produce its one result
            done = known.get(task.id)  # not pop: a copy of the same id may follow
            if done is not None:
                state, result = done
                if result is not None:  # idempotent: the stored outcome stands
                    self._publish_result(result, reply, track=False)
                continue
            self.journal.add(task, reply)
            self.metrics.count("submitted")
            lane = self.lanes.lanes[task.lane]
            if lane.spilled or len(lane.queue) >= WINDOW:
                # the journal holds it; it is paged back in order when the lane drains
                lane.spilled = True
                continue
            entry = Entry(task, reply)
            entries[task.id] = entry
            self.lanes.push(entry)

    def _breaker_changed(self, key: str, old: str, new: str) -> None:
        """A breaker changed state: retained on <prefix>/breakers/<key>, and the hook."""
        log.warning("breaker %s: %s -> %s", key, old, new)
        doc = {"key": key, "state": new, "previous": old, "at": clock.wall()}
        self._publish(f"{self.topics.prefix}/breakers/{key}", encode(doc), retain=True)
        self.plugins.notify("clawd_on_breaker_change", key=key, old=old, new=new)

    def refresh_types(self) -> None:
        """What local plugins serve, and what any worker ever announced (offline ones too);
        kept rather than rebuilt per submission: it changes only on announcements."""
        self.types = set(self.plugins.handlers) | self.registry.known_types()

    def _error(self, error: str, topic: str, payload: bytes, task_id: str | None = None) -> None:
        doc: dict[str, Any] = {"error": error, "topic": topic, "payload_excerpt": excerpt(payload)}
        if task_id:
            doc["id"] = task_id
        log.warning("rejected message on %s: %s", topic, error)
        self._publish(self.topics.errors, encode(doc))

    # -- state transitions ---------------------------------------------------------------

    def _max_attempts(self, task: Task) -> int:
        if task.max_attempts:
            return task.max_attempts
        hc = self.config.handler_config(task.type)
        return hc.max_attempts or self.config.retry.max_attempts

    def _retry_later(self, e: Entry) -> None:
        r = self.config.retry
        # capped exponential backoff with full jitter
        delay = random.uniform(0, min(r.backoff_cap, r.backoff_base * 2 ** (e.attempt - 1)))
        e.state = "delayed"
        e.worker = None
        heapq.heappush(self.delayed, (clock.monotonic() + delay, e.task.id))

    def _requeue(self, e: Entry, *, front: bool = False) -> None:
        e.state = "queued"
        e.worker = None
        e.enqueued_at = clock.monotonic()
        self.lanes.push(e, front=front)

    def _finish(
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
            attempts=e.attempt,
            result=result,
            error=error,
            worker=worker,
            started_at=e.dispatched_at or None,
        )
        self.journal.finish(e.task.id, status, doc, e.history)
        self.entries.pop(e.task.id, None)
        e.state = "done"
        self.metrics.count(status)
        self._publish_result(doc, e.reply)
        self.plugins.notify("clawd_task_finished", result=doc)
        return doc

    def _publish_result(
        self, doc: dict[str, Any], reply: list[Any] | None, *, track: bool = True
    ) -> None:
        """Publish a terminal result; tracked ones leave the journal's outbox on PUBACK."""
        payload = encode(doc)
        if track:
            self._publish(self.topics.result(doc["id"]), payload, track=doc["id"])
        else:
            self._publish(self.topics.result(doc["id"]), payload)
        if reply:
            corr = bytes.fromhex(reply[1]) if reply[1] else None
            self._publish(reply[0], payload, response_topic=None, correlation=corr)

    def _dead(self, e: Entry, reason: str, error: str, worker: str | None = None) -> None:
        self._finish(e, "failed", error=error, worker=worker)
        letter = {
            "id": e.task.id,
            "type": e.task.type,
            "lane": e.task.lane,
            "task": msgspec.to_builtins(e.task),
            "reason": reason,
            "error": error,
            "attempts": e.attempt,
            "history": e.history,
            "dead_at": clock.wall(),
        }
        self.journal.dead_letter(e.task.id, e.task.lane, reason, letter)
        self.metrics.count("dead")
        log.warning("task %s dead-lettered: %s (%s)", e.task.id, reason, error)
        self._publish(self.topics.dead(e.task.lane), encode(letter))
        self.plugins.notify("clawd_dead_letter", letter=letter)

    # -- the parts that live in their own modules ----------------------------------------

    def _dispatch(self) -> None:
        dispatch.run(self)

    def _page_in(self, lane: Any) -> int:
        return dispatch.page_in(self, lane)

    def _worker_status(self, worker_id: str, payload: bytes) -> None:
        liveness.worker_status(self, worker_id, payload)

    def _lose_worker(self, w: WorkerState, why: str, *, lost: bool) -> None:
        liveness.lose_worker(self, w, why, lost=lost)

    def _report(self, worker_id: str, report: dict[str, Any]) -> None:
        liveness.report(self, worker_id, report)

    def _tick(self, now: float) -> None:
        liveness.tick(self, now)

    # -- operator commands ---------------------------------------------------------------

    def _control(self, cmd: dict[str, Any]) -> None:
        op = cmd.get("cmd")
        if op == "replay":
            ids = cmd.get("ids") or [d["id"] for d in self.journal.dead_letters()]
            for task_id in ids:
                self.replay(task_id)
        elif op == "purge":
            self.journal.purge_dead()
        else:
            raise ValueError(f"unknown control command {op!r} (known: replay, purge)")

    def replay(self, task_id: str) -> bool:
        """Put a dead-lettered task back in its lane with fresh attempts."""
        letters = self.journal.dead_letters(task_id)
        if not letters or task_id in self.entries:
            return False
        task = msgspec.convert(letters[0]["task"], Task)
        task.attempt = 0
        self.journal.requeue(task_id)
        e = Entry(task, None)
        self.entries[task_id] = e
        self.lanes.push(e)
        log.info("replaying dead letter %s", task_id)
        return True

    # -- views ---------------------------------------------------------------------------

    def in_flight(self) -> int:
        return sum(len(w.running) for w in self.registry.workers.values())


def _rejected_doc(task_id: str, levels: list[str], error: str) -> dict[str, Any]:
    now = clock.wall()
    return {
        "id": task_id,
        "type": levels[2] if len(levels) > 2 else None,
        "lane": levels[1] if len(levels) > 1 else None,
        "status": "rejected",
        "error": error,
        "attempts": 0,
        "submitted_at": now,
        "finished_at": now,
        "duration_ms": 0.0,
    }
