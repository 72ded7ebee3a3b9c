"""The outbox: commit, then acknowledge, then publish; results stay owed until PUBACK.

Everything the distributor sends during a turn is staged here and leaves in
:meth:`Outbox.flush` after the journal commit, so nothing is promised before it is
durable. A terminal result is *tracked*: it stays in the journal's outbox until the
broker acknowledges it, in order. A dead letter is tracked with its result: it is
published just before it, so the result leaves the outbox only once the broker has both.
A publish made while the link is down is pending, not an error; after a reconnect (or a
restart) every result still owed is published again, its dead letter first.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from clawd.envelope import encode, excerpt
from clawd.journal import Journal
from clawd.topics import Topics

log = logging.getLogger("clawd.distributor")


class Outbox:
    """Staged publishes and acknowledgements, and the tracked results in flight."""

    def __init__(self, journal: Journal, topics: Topics) -> None:
        self.journal = journal
        self.topics = topics
        self._out: list[tuple[str, bytes, dict[str, Any]]] = []
        self._acks: list[tuple[int, int]] = []
        #: (task id, Delivery) of tracked publishes, in publish order, until acknowledged;
        #: a dead letter's task id is None (its result, just after it, settles the task)
        self._deliveries: deque[tuple[str | None, Any]] = deque()
        #: the epoch this distributor leads a shared journal in (0: a journal of its own),
        #: carried by every dispatch message
        self.epoch = 0

    def publish(self, topic: str, payload: bytes, **kw: Any) -> None:
        """Stage a publish (``track=<task id>`` makes it a tracked result)."""
        self._out.append((topic, payload, kw))

    def error(self, error: str, topic: str, payload: bytes, task_id: str | None = None) -> None:
        """Report a message that could not be used on ``<prefix>/errors`` (and the log)."""
        doc: dict[str, Any] = {"error": error, "topic": topic, "payload_excerpt": excerpt(payload)}
        if task_id:
            doc["id"] = task_id
        log.warning("rejected message on %s: %s", topic, error)
        self._out.append((self.topics.errors, encode(doc), {}))

    def ack(self, mid: int, qos: int) -> None:
        """Stage the acknowledgement of an inbound message."""
        self._acks.append((mid, qos))

    def dead_letter(self, letter: dict[str, Any]) -> None:
        """Stage a dead letter on ``dead/<lane>``, tracked: stage it before its result."""
        self._out.append((self.topics.dead(letter["lane"]), encode(letter), {"track": None}))

    def result(self, doc: dict[str, Any], reply: list[Any] | None, *, track: bool = True) -> None:
        """Stage a terminal result on ``results/<id>`` and the producer's reply topic."""
        payload = encode(doc)
        topic = self.topics.result(doc["id"])
        if track:
            self._out.append((topic, payload, {"track": doc["id"]}))
        else:
            self._out.append((topic, payload, {}))
        if reply:
            corr = bytes.fromhex(reply[1]) if reply[1] else None
            self._out.append((reply[0], payload, {"response_topic": None, "correlation": corr}))

    def flush(self, transport: Any) -> None:
        """Commit the journal, then send what the turn staged, then acknowledge."""
        self.journal.commit()
        tr = transport
        for topic, payload, kw in self._out:
            if "track" not in kw:
                tr.publish(topic, payload, **kw)
            else:
                self._deliveries.append((kw["track"], tr.publish_tracked(topic, payload)))
        self._out.clear()
        for mid, qos in self._acks:
            tr.ack(mid, qos)
        self._acks.clear()
        tr.flush()

    def settle(self) -> None:
        """Results the broker acknowledged leave the journal's outbox (PUBACKs come in
        order, so the first one still pending stops the walk: a result after its
        unacknowledged dead letter waits for it)."""
        d = self._deliveries
        while d and d[0][1].acknowledged:
            task_id = d.popleft()[0]
            if task_id is not None:
                self.journal.published(task_id)

    def owed(self) -> int:
        """Tracked results and dead letters published and not yet acknowledged."""
        return len(self._deliveries)

    def resend(self) -> int:
        """Stage again every result the broker never acknowledged (after a restart or an
        outage), a failed one's dead letter first: both are at-least-once, like the task."""
        self._deliveries.clear()
        rows = self.journal.outbox()
        for doc, reply in rows:
            if doc.get("status") == "failed":
                for letter in self.journal.dead_letters(doc["id"]):
                    self.dead_letter(letter)
            self.result(doc, reply)
        if rows:
            log.info("republishing %d result(s) the broker had not acknowledged", len(rows))
        return len(rows)
