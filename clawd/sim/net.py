"""The simulated network: connections that carry messages late but in order.

A message travels for the latency :class:`~clawd.sim.faults.Faults` draws, but never
overtakes an earlier one of the same connection, direction and topic (MQTT keeps the
order of one publisher's messages on one topic, and promises nothing else). A message
still on the wire when its connection closes is lost; while a client is partitioned off,
what travels to or from it waits for the partition to heal (TCP retransmits) or for the
connection to die of its keepalive (a message sent before the partition began arrives).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from clawd.sim.clock import SimClock
from clawd.sim.faults import Faults

if TYPE_CHECKING:
    from clawd.sim.broker import Session

#: a message longer than this on the wire (its own delay, or one it waits behind) is late
LATE = 0.25


class Connection:
    """One client's network connection to the broker."""

    def __init__(self, number: int, client: Any, session: Session) -> None:
        self.number = number
        self.client = client
        self.session = session
        #: the broker still has it open
        self.open = True
        #: the client's end died (a crash): what it had on the wire is lost
        self.client_gone = False
        #: simulated time the broker last heard anything on it (keepalive)
        self.last_heard = 0.0
        self._last: dict[tuple[bool, str], float] = {}
        self._latest: dict[bool, float] = {True: 0.0, False: 0.0}

    def __repr__(self) -> str:
        return f"<conn {self.number} {self.session.client_id}>"


class Net:
    """Schedules arrivals on the clock; knows nothing of MQTT."""

    def __init__(self, clock: SimClock, faults: Faults) -> None:
        self.clock = clock
        self.faults = faults

    def send(
        self,
        conn: Connection,
        up: bool,
        key: str,
        arrive: Callable[[], None],
        *,
        after_all: bool = False,
        what: Any = None,
    ) -> None:
        """Carry one message (``up``: client to broker) that ``arrive()`` delivers.

        ``key`` is what order is kept within (a topic); ``after_all`` keeps a message
        behind everything the connection sent before in that direction (a DISCONNECT);
        ``what`` (the packet) is told to the listener of late messages.
        """
        now = self.clock.now
        when = max(now, conn.client.partitioned_until) + self.faults.latency()
        # never before an earlier message on the same topic: it may inherit its delay
        when = max(when, conn._last.get((up, key), 0.0))
        if after_all:
            when = max(when, conn._latest[up])
        if when - now > LATE and self.faults.on_late is not None:
            self.faults.on_late(conn.session.client_id, what)
        conn._last[(up, key)] = when
        conn._latest[up] = max(conn._latest[up], when)
        self.clock.at(when, lambda: self._arrive(conn, up, key, arrive))

    def _arrive(self, conn: Connection, up: bool, key: str, arrive: Callable[[], None]) -> None:
        if not conn.open or (up and conn.client_gone):
            return  # the connection is gone, and what was on the wire with it
        if up:
            conn.last_heard = self.clock.now
        elif conn.client.conn is not conn:
            return  # the client already gave this connection up
        arrive()
