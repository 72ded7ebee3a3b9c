"""When a task may start: an envelope's ``delay`` or ``not_before``, checked and resolved.

``delay`` is seconds from submission; ``not_before`` is a moment, as epoch seconds or an
RFC 3339 date-time (``2026-12-01T14:00:00Z``, an offset, or ``Z``; a date-time without
a zone is refused rather than guessed). Either resolves to one epoch time, journaled with
the task, so a restarted distributor still knows it.
"""

from __future__ import annotations

import datetime
from typing import Any

#: the furthest ahead a task may be put off: a year (a bound against typos in epochs)
MAX_AHEAD = 366 * 24 * 3600.0


class BadTime(ValueError):
    """A ``delay`` or ``not_before`` that cannot be honoured; the message says why."""


def parse_instant(value: Any, what: str = "not_before") -> float:
    """Epoch seconds from a number or an RFC 3339 date-time string."""
    if isinstance(value, bool):
        raise BadTime(f'"{what}" must be epoch seconds or an RFC 3339 date-time, not a boolean')
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise BadTime(f'"{what}" must be a finite number')
        return float(value)
    if not isinstance(value, str):
        raise BadTime(f'"{what}" must be epoch seconds or an RFC 3339 date-time')
    text = value.strip()
    try:
        # Python before 3.11 reads neither "Z" nor a lowercase "t"
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadTime(
            f'"{what}" {value[:60]!r} is not an RFC 3339 date-time '
            "(like 2026-12-01T14:00:00Z or 2026-12-01T15:00:00+01:00)"
        ) from None
    if parsed.tzinfo is None:
        raise BadTime(
            f'"{what}" {value[:60]!r} has no time zone: add "Z" (UTC) or an offset like +01:00'
        )
    return parsed.timestamp()


def start_time(delay: Any, not_before: Any, now: float) -> float | None:
    """The epoch time a task may start, or None to start at once."""
    if delay is not None and not_before is not None:
        raise BadTime('give either "delay" or "not_before", not both')
    if delay is not None:
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise BadTime('"delay" must be a number of seconds')
        if not delay >= 0:
            raise BadTime(f'"delay" must be >= 0 seconds, not {delay!r}')
        if delay > MAX_AHEAD:
            raise BadTime(f'"delay" of {delay:g} s is over the limit of {MAX_AHEAD:g} s (366 days)')
        return now + float(delay) if delay else None
    if not_before is None:
        return None
    at = parse_instant(not_before)
    if at - now > MAX_AHEAD:
        raise BadTime(f'"not_before" is more than 366 days ahead ({at - now:.0f} s from now)')
    return at if at > now else None
