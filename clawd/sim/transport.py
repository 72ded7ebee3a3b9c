"""The client side of the simulated broker, with the interface of clawd's Transport.

:class:`SimTransport` is what the distributor and the workers ``attach``: ``poll``,
``publish``, ``publish_tracked``, ``ack``, ``flush``, ``wake`` and a ``connected`` event,
behaving as clawd's paho transport does in driven mode: QoS 1 publishes wait in the client
until the broker acknowledges them and are sent again after a reconnect (so they may
arrive twice), QoS 0 publishes made while disconnected are dropped, a lost connection is
retried after a jittered delay and then with a doubling backoff, subscriptions are made
again on every connect, and the owner's ``on_state`` hears of every connect and loss.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Callable

from clawd.connection import Will
from clawd.message import Message
from clawd.sim.broker import Packet, SimBroker
from clawd.sim.clock import SimClock
from clawd.sim.net import Connection

#: the real transport's cap on the reconnect backoff, seconds
MAX_BACKOFF = 30.0


class SimDelivery:
    """A tracked publish: ``acknowledged`` once the broker's PUBACK came back."""

    __slots__ = ("acknowledged",)

    def __init__(self) -> None:
        self.acknowledged = False


class SimTransport:
    def __init__(
        self,
        clock: SimClock,
        broker: SimBroker,
        rng: random.Random,
        client_id: str,
        on_message: Callable[[Message], None],
        *,
        subscriptions: list[tuple[str, int]] = (),  # type: ignore[assignment]
        clean_start: bool = True,
        session_expiry: int = 0,
        will: Will | None = None,
        manual_ack: bool = False,
        keepalive: float = 2.0,
        on_state: Callable[[bool, str], None] | None = None,
        on_wake: Callable[[], None] | None = None,
    ) -> None:
        self.clock = clock
        self.broker = broker
        self.net = broker.net
        self.rng = rng
        self.client_id = client_id
        self.on_message = on_message
        self.subscriptions = list(subscriptions)
        self.clean_start = clean_start
        self.session_expiry = session_expiry
        self.will = (
            None if will is None else Packet(will.topic, will.payload, will.qos, will.retain)
        )
        self.manual_ack = manual_ack
        self.keepalive = keepalive
        self.on_state = on_state
        self.on_wake = on_wake
        self.connected = threading.Event()
        self.conn: Connection | None = None
        #: set while a partition cuts this client off (read by the network)
        self.partitioned_until = 0.0
        self.alive = True
        self._arrived: deque[tuple[Connection, Message]] = deque()
        #: outgoing QoS 1 publishes the broker has not acknowledged, by packet id
        self._unacked: dict[int, tuple[Packet, SimDelivery | None]] = {}
        self._mid = 0
        self._connecting = False
        self._next_attempt = clock.now
        self._backoff = 0.0
        self._last_sent = 0.0
        self._last_heard = 0.0

    # -- connection ----------------------------------------------------------------------

    def _attempt(self) -> None:
        self._connecting = True
        self.clock.after(self.net.faults.latency(), self._at_broker)

    def _at_broker(self) -> None:
        if not self.alive:
            return
        got = None
        if self.partitioned_until <= self.clock.now:
            got = self.broker.connect(
                self,
                self.client_id,
                clean_start=self.clean_start,
                expiry=self.session_expiry,
                will=self.will,
            )
        if got is None:
            self.clock.after(self.net.faults.latency(), self._failed)
            return
        conn, _present = got
        self.clock.after(self.net.faults.latency(), lambda: self._connack(conn))

    def _failed(self) -> None:
        self._connecting = False
        self._backoff = min(MAX_BACKOFF, max(1.0, self._backoff * 2))
        self._next_attempt = self.clock.now + self._backoff

    def _connack(self, conn: Connection) -> None:
        self._connecting = False
        if not self.alive or not conn.open:
            if self.alive:
                self._failed()
            return
        self.conn = conn
        self._backoff = 0.0
        self._last_heard = self._last_sent = self.clock.now
        self.connected.set()
        self.broker.resume(conn)
        subs = list(self.subscriptions)
        if subs:
            self.net.send(conn, True, "$ctl", lambda: self.broker.subscribe(conn, subs))
        faults = self.net.faults
        for mid in sorted(self._unacked):
            if faults.on_dup is not None:
                faults.on_dup(self._unacked[mid][0])  # the broker may have it already
            self._send(mid)
        if self.on_state is not None:
            self.on_state(True, "connected")
        self._wake()

    def lost(self, conn: Connection) -> None:
        """The broker closed ``conn`` (its FIN or RST arrived)."""
        if self.conn is conn:
            self._lose("connection closed by the broker")

    def _lose(self, why: str) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.client_gone = True  # this end is closed: whatever it still sends is lost
        self.connected.clear()
        # jitter the first retry, as the real transport does
        self._backoff = self.rng.uniform(0.2, 1.0)
        self._next_attempt = self.clock.now + self._backoff
        if self.on_state is not None and self.alive:
            self.on_state(False, why)

    def crash(self, *, reset: bool = True) -> None:
        """The process dies. ``reset``: its kernel resets the connection, and the broker
        notices at once; otherwise (a frozen host) only the keepalive will tell."""
        self.alive = False
        conn, self.conn = self.conn, None
        self.connected.clear()
        if conn is not None:
            conn.client_gone = True
            if reset:
                broker = self.broker
                self.clock.after(self.net.faults.latency(), lambda: broker.drop(conn))

    def close(self) -> None:
        """A clean DISCONNECT, behind everything already sent: no will."""
        conn = self.conn
        if conn is not None:
            broker = self.broker
            self.net.send(conn, True, "$ctl", lambda: broker.disconnect(conn), after_all=True)
        self.alive = False
        self.conn = None
        self.connected.clear()

    # -- the driven loop -----------------------------------------------------------------

    def poll(self, timeout: float = 0.0) -> None:
        """Reconnect when due, keep the connection alive, hand over what arrived."""
        if not self.alive:
            return
        now = self.clock.now
        if self.conn is None:
            if not self._connecting and now >= self._next_attempt:
                self._attempt()
        elif now - self._last_heard > 2 * self.keepalive:
            self._lose("keepalive timeout")
        elif now - self._last_sent >= self.keepalive:
            self._ping(self.conn)
        arrived = self._arrived
        while arrived:
            conn, msg = arrived.popleft()
            self.on_message(msg)
            if not self.manual_ack and msg.qos > 0 and conn is self.conn:
                self._puback(conn, msg.mid)

    def _ping(self, conn: Connection) -> None:
        self._last_sent = self.clock.now
        self.net.send(conn, True, "$ping", lambda: self.net.send(conn, False, "$ping", self._heard))

    def _heard(self) -> None:
        self._last_heard = self.clock.now

    def arrive(self, conn: Connection, msg: Message) -> None:
        """A message from the broker is in (read at the next poll)."""
        self._heard()
        self._arrived.append((conn, msg))
        self._wake()

    def _wake(self) -> None:
        if self.on_wake is not None:
            self.on_wake()

    def wake(self) -> None:
        self._wake()

    def flush(self) -> None:
        pass

    # -- publishing ----------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 1,
        retain: bool = False,
        *,
        response_topic: str | None = None,
        correlation: bytes | None = None,
        expiry: int | None = None,
    ) -> bool:
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        self._publish(Packet(topic, data, qos, retain, response_topic, correlation), None)
        return True

    def publish_tracked(
        self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False
    ) -> SimDelivery:
        delivery = SimDelivery()
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        self._publish(Packet(topic, data, qos, retain), delivery)
        return delivery

    def _publish(self, pkt: Packet, delivery: SimDelivery | None) -> None:
        if not self.alive:
            return
        if self.broker.on_send is not None:
            self.broker.on_send(pkt, self.client_id)
        conn = self.conn
        if pkt.qos == 0:
            if conn is not None and not self.net.faults.lose_qos0():
                self._last_sent = self.clock.now
                broker, who = self.broker, self.client_id
                self.net.send(conn, True, pkt.topic, lambda: broker.accept(pkt, who))
            return
        self._mid += 1
        self._unacked[self._mid] = (pkt, delivery)
        if conn is not None:
            self._send(self._mid)

    def _send(self, mid: int) -> None:
        conn = self.conn
        assert conn is not None
        pkt = self._unacked[mid][0]
        broker, who = self.broker, self.client_id

        def arrive() -> None:
            broker.accept(pkt, who)
            self.net.send(conn, False, "$ack", lambda: self._acked(mid))

        self._last_sent = self.clock.now
        self.net.send(conn, True, pkt.topic, arrive, what=pkt)
        if self.net.faults.duplicate(pkt):
            self.net.send(conn, True, pkt.topic, arrive, what=pkt)

    def _acked(self, mid: int) -> None:
        self._heard()
        got = self._unacked.pop(mid, None)
        if got is not None and got[1] is not None:
            got[1].acknowledged = True

    def ack(self, mid: int, qos: int) -> None:
        """Acknowledge a delivery (manual_ack): the broker forgets it."""
        if qos > 0 and self.conn is not None:
            self._puback(self.conn, mid)

    def _puback(self, conn: Connection, mid: int) -> None:
        broker = self.broker
        self.net.send(conn, True, "$ack", lambda: broker.puback(conn, mid))
