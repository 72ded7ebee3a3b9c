"""An in-memory MQTT broker with mosquitto's semantics where clawd depends on them.

Topic filters with ``+`` and ``#``; retained messages (an empty payload clears one, and a
subscription receives the matching ones); QoS 0 and 1 (a subscriber gets the lower of the
publish's and its subscription's QoS; a QoS 1 delivery stays in flight until the client
acknowledges it and is sent again, marked duplicate, when a persistent session comes back);
persistent sessions (``clean_start`` false and an expiry) that keep subscriptions and queue
QoS 1 messages while their client is away; Last Will on an unclean disconnect and on a
session takeover; keepalive (a client unheard for 1.5 keepalives is dropped). A restart
keeps retained messages and persistent sessions, as mosquitto with persistence does, and
drops the rest; the broker publishes no Last Will for connections its restart cut.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clawd.message import Message
from clawd.sim.clock import SimClock
from clawd.sim.faults import Faults
from clawd.sim.net import Connection, Net


@dataclass
class Packet:
    """An application message as the broker holds it."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    response_topic: str | None = None
    correlation: bytes | None = None


@dataclass
class Session:
    """What the broker keeps for one client id."""

    client_id: str
    persistent: bool
    will: Packet | None = None
    subs: dict[str, int] = field(default_factory=dict)
    #: QoS 1 deliveries sent and not acknowledged, by packet id
    inflight: dict[int, tuple[Packet, int]] = field(default_factory=dict)
    #: QoS 1 messages that arrived while the client was away
    queue: deque[tuple[Packet, int]] = field(default_factory=deque)
    conn: Connection | None = None
    last_mid: int = 0

    def next_mid(self) -> int:
        self.last_mid = self.last_mid % 65535 + 1
        while self.last_mid in self.inflight:
            self.last_mid = self.last_mid % 65535 + 1
        return self.last_mid


def matches(flt: str, topic: str) -> bool:
    """MQTT topic matching: ``+`` one level, ``#`` the rest (and the parent level)."""
    f, t = flt.split("/"), topic.split("/")
    for i, part in enumerate(f):
        if part == "#":
            return True
        if i >= len(t) or (part != "+" and part != t[i]):
            return False
    return len(f) == len(t)


#: ``tap(packet, client_id)``: every publish the broker accepts, with its publisher
Tap = Callable[[Packet, str], None]


class SimBroker:
    def __init__(self, clock: SimClock, faults: Faults, *, keepalive: float, tap: Tap) -> None:
        self.clock = clock
        self.faults = faults
        self.net = Net(clock, faults)
        self.keepalive = keepalive
        self.tap = tap
        #: told of every publish a client makes, when it makes it (tracing)
        self.on_send: Tap | None = None
        self.retained: dict[str, Packet] = {}
        self.sessions: dict[str, Session] = {}
        self.up = True
        self._conns = 0
        self.restarts = 0

    # -- connections ---------------------------------------------------------------------

    def connect(
        self, client: Any, client_id: str, *, clean_start: bool, expiry: int, will: Packet | None
    ) -> tuple[Connection, bool] | None:
        """A CONNECT arrived; None when the broker is down (the attempt fails)."""
        if not self.up:
            return None
        old = self.sessions.get(client_id)
        if old is not None and old.conn is not None:
            self._close(old.conn, will=True)  # session takeover
            old = self.sessions.get(client_id)
        present = old is not None and not clean_start
        if old is None or clean_start:
            session = self.sessions[client_id] = Session(client_id, persistent=expiry > 0)
        else:
            session = old
        session.persistent = expiry > 0
        session.will = will
        self._conns += 1
        conn = Connection(self._conns, client, session)
        conn.last_heard = self.clock.now
        session.conn = conn
        self.clock.after(self.keepalive / 2, lambda: self._watch(conn))
        return conn, present

    def resume(self, conn: Connection) -> None:
        """After CONNACK: a present session gets its unacknowledged and queued messages."""
        s = conn.session
        for mid, (pkt, qos) in sorted(s.inflight.items()):
            self._send(conn, pkt, qos, mid, retain=False)
        while s.queue and s.conn is conn:
            pkt, qos = s.queue.popleft()
            self._deliver(s, pkt, qos)

    def _watch(self, conn: Connection) -> None:
        """Keepalive: a client unheard for 1.5 keepalives is dropped (and its will sent)."""
        if not conn.open:
            return
        if self.clock.now - conn.last_heard > 1.5 * self.keepalive:
            self.drop(conn)
        else:
            self.clock.after(self.keepalive / 2, lambda: self._watch(conn))

    def drop(self, conn: Connection) -> None:
        """The broker loses a connection uncleanly: the will goes out."""
        if conn.open:
            self._close(conn, will=True)

    def disconnect(self, conn: Connection) -> None:
        """A client's DISCONNECT arrived: no will."""
        if conn.open:
            self._close(conn, will=False)

    def _close(self, conn: Connection, *, will: bool) -> None:
        conn.open = False
        s = conn.session
        if s.conn is conn:
            s.conn = None
            if not s.persistent and self.sessions.get(s.client_id) is s:
                del self.sessions[s.client_id]
        if will and s.will is not None and self.up:
            self.accept(s.will, s.client_id)
        client = conn.client
        if not conn.client_gone:
            # the client learns of it when the FIN or RST arrives
            self.clock.after(self.faults.latency(), lambda: client.lost(conn))

    def restart(self, downtime: float) -> None:
        """Stop (cutting every connection, sending no wills) and start after ``downtime``."""
        self.up = False
        self.restarts += 1
        for s in list(self.sessions.values()):
            if s.conn is not None:
                self._close(s.conn, will=False)
        self.sessions = {k: s for k, s in self.sessions.items() if s.persistent}
        self.clock.after(downtime, self._start)

    def _start(self) -> None:
        self.up = True

    # -- messages ------------------------------------------------------------------------

    def accept(self, pkt: Packet, publisher: str) -> None:
        """A publish the broker now owns: retain it, fan it out."""
        self.tap(pkt, publisher)
        if pkt.retain:
            if pkt.payload:
                self.retained[pkt.topic] = pkt
            else:
                self.retained.pop(pkt.topic, None)
        for s in list(self.sessions.values()):
            granted = max((q for f, q in s.subs.items() if matches(f, pkt.topic)), default=-1)
            if granted >= 0:
                self._deliver(s, pkt, min(granted, pkt.qos))

    def subscribe(self, conn: Connection, subs: list[tuple[str, int]]) -> None:
        s = conn.session
        for flt, qos in subs:
            s.subs[flt] = qos
            for topic in sorted(self.retained):
                if matches(flt, topic):
                    pkt = self.retained[topic]
                    self._deliver(s, pkt, min(qos, pkt.qos), retain=True)

    def puback(self, conn: Connection, mid: int) -> None:
        """The client acknowledged a delivery."""
        conn.session.inflight.pop(mid, None)

    def _deliver(self, s: Session, pkt: Packet, qos: int, *, retain: bool = False) -> None:
        conn = s.conn
        if conn is None:
            if s.persistent and qos > 0:
                s.queue.append((pkt, qos))
            return
        mid = 0
        if qos > 0:
            mid = s.next_mid()
            s.inflight[mid] = (pkt, qos)
        elif self.faults.lose_qos0():
            return
        self._send(conn, pkt, qos, mid, retain=retain)
        if qos > 0 and self.faults.duplicate(pkt):
            self._send(conn, pkt, qos, mid, retain=retain)

    def _send(self, conn: Connection, pkt: Packet, qos: int, mid: int, *, retain: bool) -> None:
        msg = Message(
            pkt.topic,
            pkt.payload,
            qos,
            retain,
            mid,
            pkt.response_topic,
            pkt.correlation,
        )
        client = conn.client
        self.net.send(conn, False, pkt.topic, lambda: client.arrive(conn, msg), what=pkt)
