"""Rates (``"100/s"``, ``"10/m"``, ``"500/h"``) and the token bucket that enforces one.

A bucket holds up to ``burst`` tokens and gains ``per_second`` of them every second; a
dispatch takes one. Over any window of ``T`` seconds it lets through at most
``burst + per_second * T`` tasks, and it starts full. The burst is one second's worth of
the rate, at least one token: ``"100/s"`` lets 100 go at once and then one every 10 ms;
``"10/m"`` lets one go every 6 s. Time is whatever the caller passes (the distributor
passes :func:`clawd.clock.monotonic`, so a simulated clock drives it).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

#: seconds per unit of a rate
PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
HINT = 'a rate "<count>/s", "<count>/m" or "<count>/h", e.g. "100/s"'
_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*([A-Za-z]+)\s*\Z")
#: float slack: a bucket refilled to 0.999999999 of a token at its computed time is full
EPS = 1e-9
#: the largest count accepted: beyond it a limit limits nothing a distributor can reach
MAX_COUNT = 1_000_000


@dataclass(frozen=True)
class Rate:
    """``count`` tasks per ``unit`` (s, m or h), as written."""

    count: float
    unit: str

    @property
    def per_second(self) -> float:
        return self.count / PERIODS[self.unit]

    @property
    def burst(self) -> float:
        """Tokens the bucket holds when full: one second's worth, at least one."""
        return max(1.0, self.per_second)

    def __str__(self) -> str:
        count = int(self.count) if self.count == int(self.count) else self.count
        return f"{count}/{self.unit}"


def parse_rate(value: object) -> Rate:
    """The rate in ``value`` (``"100/s"``); raises ValueError saying what is allowed."""
    if not isinstance(value, str):
        raise ValueError(f"expected {HINT}, got {type(value).__name__}")
    m = _RATE.match(value)
    if m is None:
        raise ValueError(f"expected {HINT}, got {value!r}")
    count, unit = float(m.group(1)), m.group(2)
    if unit not in PERIODS:
        raise ValueError(
            f"expected {HINT}, got {value!r} (the unit after '/' is s, m or h, not {unit!r})"
        )
    if not math.isfinite(count) or count <= 0 or count > MAX_COUNT:
        raise ValueError(f"expected {HINT} with a count from 1 to {MAX_COUNT}, got {value!r}")
    return Rate(count, unit)


class TokenBucket:
    """Tokens for dispatches at ``rate``; refilled lazily from the time passed in."""

    __slots__ = ("rate", "tokens", "stamp")

    def __init__(self, rate: Rate, now: float, tokens: float | None = None) -> None:
        self.rate = rate
        self.tokens = rate.burst if tokens is None else min(rate.burst, max(0.0, tokens))
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            gained = (now - self.stamp) * self.rate.per_second
            self.tokens = min(self.rate.burst, self.tokens + gained)
            self.stamp = now

    def available(self, now: float) -> float:
        self._refill(now)
        return self.tokens

    def ready(self, now: float) -> bool:
        """Whether one dispatch may go now."""
        return self.available(now) >= 1.0 - EPS

    def take(self, now: float) -> None:
        """One dispatch went (call only when :meth:`ready`)."""
        self._refill(now)
        self.tokens -= 1.0

    def next_token(self, now: float) -> float:
        """When the bucket next holds a whole token (``now`` if it does)."""
        missing = 1.0 - self.available(now)
        return now if missing <= EPS else now + missing / self.rate.per_second
