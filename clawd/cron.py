"""Standard five-field cron expressions: ``minute hour day-of-month month day-of-week``.

Each field takes ``*``, a number, a range ``a-b``, a step ``*/n`` or ``a-b/n``, and
comma-separated lists of those; months and days of the week also take their English
three-letter names (``jan``, ``mon``), and day-of-week 7 is Sunday like 0. As in Vixie
cron, when both day fields are restricted a day matches if either does. Times are UTC.
No ``@reboot``, ``L``, ``W`` or ``#``: what is not standard is refused, with the field
named, rather than half-understood.
"""

from __future__ import annotations

import calendar
import datetime

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
#: (name, low, high, names) per field
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, {n: i + 1 for i, n in enumerate(_MONTHS)}),
    ("day-of-week", 0, 7, {n: i for i, n in enumerate(_DAYS)}),
)
#: how far ahead a next firing is looked for: an expression like "0 0 30 2 *" never fires
_HORIZON_YEARS = 8

UTC = datetime.UTC


class CronError(ValueError):
    """An expression that is not standard cron; the message names the field."""


def _value(text: str, field: str, low: int, high: int, names: dict[str, int]) -> int:
    word = text.lower()
    if word in names:
        return names[word]
    if not text.isdigit():
        what = "a number or a name" if names else "a number"
        raise CronError(f"{field} field: {text!r} is not {what}")
    n = int(text)
    if not low <= n <= high:
        raise CronError(f"{field} field: {n} is out of range {low}-{high}")
    return n


def _field(text: str, field: str, low: int, high: int, names: dict[str, int]) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{field} field: empty list item in {text!r}")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{field} field: step {step_text!r} must be a positive number")
            step = int(step_text)
        if base == "*":
            a, b = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            a = _value(first, field, low, high, names)
            b = _value(last, field, low, high, names)
            if a > b:
                raise CronError(f"{field} field: range {base!r} runs backwards")
        else:
            a = _value(base, field, low, high, names)
            b = high if step_text else a
        out.update(range(a, b + 1, step))
    return out


class Cron:
    """A parsed expression; :meth:`next_after` gives the firing times."""

    def __init__(self, expr: str) -> None:
        parts = expr.split()
        if len(parts) != 5:
            raise CronError(
                f"{expr!r} has {len(parts)} field(s); cron takes 5: "
                "minute hour day-of-month month day-of-week"
            )
        self.expr = expr
        sets = [_field(p, *spec) for p, spec in zip(parts, _FIELDS, strict=True)]
        self.minutes, self.hours, self.days, self.months, dows = sets
        self.dows = {d % 7 for d in dows}
        self.any_day = parts[2] == "*"
        self.any_dow = parts[4] == "*"

    def _day_ok(self, d: datetime.date) -> bool:
        dom = d.day in self.days
        dow = (d.weekday() + 1) % 7 in self.dows  # cron: 0 is Sunday
        if self.any_day or self.any_dow:
            return dom and dow
        return dom or dow

    def next_after(self, t: float) -> float | None:
        """The first firing strictly after epoch second ``t``, or None if there is none."""
        start = datetime.datetime.fromtimestamp(int(t) // 60 * 60 + 60, UTC)
        day = start.date()
        end = day.replace(year=day.year + _HORIZON_YEARS)
        first = True
        while day < end:
            if day.month not in self.months:
                # to the first of the next month
                last = calendar.monthrange(day.year, day.month)[1]
                day = day.replace(day=last) + datetime.timedelta(days=1)
                first = False
                continue
            if self._day_ok(day):
                for h in sorted(self.hours):
                    if first and h < start.hour:
                        continue
                    for m in sorted(self.minutes):
                        if first and h == start.hour and m < start.minute:
                            continue
                        at = datetime.datetime(day.year, day.month, day.day, h, m, tzinfo=UTC)
                        return at.timestamp()
            day += datetime.timedelta(days=1)
            first = False
        return None

    def latest_at_or_before(self, t: float, *, since: float) -> float | None:
        """The last firing in ``(since, t]``, or None; looks back an hour, a day, a month,
        a year, then all the way, so a frequent expression costs little."""
        for back in (3600.0, 86400.0, 32 * 86400.0, 367 * 86400.0, t - since):
            lo = max(since, t - back)
            found = None
            at = self.next_after(lo)
            while at is not None and at <= t:
                found = at
                at = self.next_after(at)
            if found is not None or lo <= since:
                return found
        return None
