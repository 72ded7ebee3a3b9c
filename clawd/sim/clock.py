"""Simulated time: a clock that only moves when the event queue says so.

Every action of the simulation (a message arriving, a handler finishing, a fault, a node's
loop turning) is an event at a simulated instant; events at the same instant run in the
order they were scheduled, so one seed always gives the same interleaving.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

#: where the simulated monotonic clock starts (any positive number; not 0, which some
#: code reads as "never")
START = 1000.0
#: the simulated epoch at START: wall() = EPOCH + (monotonic() - START)
EPOCH = 1_780_000_000.0


class SimClock:
    """A monotonic and a wall clock, and the queue of what happens next."""

    def __init__(self) -> None:
        self.now = START
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        #: events run so far
        self.steps = 0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return EPOCH + (self.now - START)

    @property
    def elapsed(self) -> float:
        """Simulated seconds since the start."""
        return self.now - START

    def at(self, when: float, action: Callable[[], None]) -> None:
        """Run ``action`` at simulated time ``when`` (now, if that is in the past)."""
        self._seq += 1
        heapq.heappush(self._queue, (max(when, self.now), self._seq, action))

    def after(self, delay: float, action: Callable[[], None]) -> None:
        self.at(self.now + delay, action)

    def run_until(self, end: float) -> None:
        """Run every event due up to simulated time ``end``, then stand at ``end``."""
        q = self._queue
        while q and q[0][0] <= end:
            when, _, action = heapq.heappop(q)
            self.now = when
            self.steps += 1
            action()
        self.now = max(self.now, end)
