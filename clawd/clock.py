"""The clocks the distributor and the worker read: the system's, or a simulated one.

Task state never reads ``time`` directly: it calls :func:`monotonic` (leases, timers,
ages) and :func:`wall` (timestamps in results and records) through this module, so a
deterministic simulation can run the same code against a clock it advances itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: seconds on a clock that never goes back (leases, backoff, ages)
monotonic: Callable[[], float] = time.monotonic
#: seconds since the epoch (what results and records show)
wall: Callable[[], float] = time.time


def use(monotonic_fn: Callable[[], float], wall_fn: Callable[[], float]) -> None:
    """Read time from these functions from now on (a simulator's clock)."""
    global monotonic, wall
    monotonic, wall = monotonic_fn, wall_fn


def reset() -> None:
    """Back to the system's clocks."""
    use(time.monotonic, time.time)
