"""Durations in config files: a number of seconds, or text such as ``"7d"``, ``"1h30m"``."""

from __future__ import annotations

import math
import re

#: seconds per unit
UNITS = {"w": 604_800.0, "d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|w|d|h|m|s)")
HINT = 'seconds, or a duration such as "7d", "12h", "1h30m", "90s"'


def parse_duration(value: object) -> float:
    """Seconds in ``value``: an int or float of seconds, or ``<number><unit>`` parts
    (units w, d, h, m, s, ms) one after another. Raises ValueError naming what is wrong."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected {HINT}")
    if not isinstance(value, str):
        seconds = float(value)
    else:
        text = value.strip().lower()
        pos, seconds = 0, 0.0
        for m in _PART.finditer(text):
            if text[pos : m.start()].strip():
                break
            seconds += float(m.group(1)) * UNITS[m.group(2)]
            pos = m.end()
        if not text or pos == 0 or text[pos:].strip():
            raise ValueError(f"expected {HINT}, got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected {HINT} (0 or more), got {value!r}")
    return seconds
