"""The cron parser and the schedule's slot decisions (no clock, no broker)."""

from __future__ import annotations

import datetime

import pytest

from clawd import schedule
from clawd.cron import Cron, CronError

UTC = datetime.UTC


def ts(*args: int) -> float:
    return datetime.datetime(*args, tzinfo=UTC).timestamp()


def nexts(expr: str, start: float, n: int) -> list[str]:
    c, out, t = Cron(expr), [], start
    for _ in range(n):
        nt = c.next_after(t)
        assert nt is not None
        t = nt
        out.append(datetime.datetime.fromtimestamp(t, UTC).strftime("%a %Y-%m-%d %H:%M"))
    return out


def test_every_minute_starts_at_the_next_whole_minute() -> None:
    assert nexts("* * * * *", ts(2026, 12, 1, 13, 59, 30), 2) == [
        "Tue 2026-12-01 14:00",
        "Tue 2026-12-01 14:01",
    ]


def test_steps_ranges_lists_and_names() -> None:
    # Sat 5 Dec 2026 late: the next working-hours quarter is Monday 09:00
    assert nexts("*/15 9-17 * * mon-fri", ts(2026, 12, 5, 16, 50), 3) == [
        "Mon 2026-12-07 09:00",
        "Mon 2026-12-07 09:15",
        "Mon 2026-12-07 09:30",
    ]
    assert nexts("0,30 8 1 jan,jul *", ts(2026, 12, 1), 3) == [
        "Fri 2027-01-01 08:00",
        "Fri 2027-01-01 08:30",
        "Thu 2027-07-01 08:00",
    ]
    assert nexts("5-20/5 0 * * *", ts(2026, 1, 1), 4)[-1] == "Thu 2026-01-01 00:20"


def test_sunday_is_0_or_7_and_restricted_day_fields_match_either() -> None:
    assert nexts("0 0 * * 7", ts(2026, 12, 1), 1) == nexts("0 0 * * 0", ts(2026, 12, 1), 1)
    # the 15th or any Monday (Vixie cron's rule when both are restricted)
    assert nexts("0 0 15 * 1", ts(2026, 12, 1), 3) == [
        "Mon 2026-12-07 00:00",
        "Mon 2026-12-14 00:00",
        "Tue 2026-12-15 00:00",
    ]


def test_february_30th_never_comes() -> None:
    assert Cron("0 0 30 2 *").next_after(ts(2026, 1, 1)) is None


def test_latest_firing_looks_back_as_far_as_needed() -> None:
    c = Cron("0 3 1 * *")
    assert c.latest_at_or_before(ts(2026, 12, 20), since=0) == ts(2026, 12, 1, 3)
    assert c.latest_at_or_before(ts(2026, 12, 20), since=ts(2026, 12, 2)) is None


@pytest.mark.parametrize(
    ("expr", "error"),
    [
        ("* * * *", "has 4 field(s); cron takes 5"),
        ("60 * * * *", "minute field: 60 is out of range 0-59"),
        ("* 24 * * *", "hour field: 24 is out of range 0-23"),
        ("* * 0 * *", "day-of-month field: 0 is out of range 1-31"),
        ("* * * foo *", "month field: 'foo' is not a number or a name"),
        ("*/0 * * * *", "step '0' must be a positive number"),
        ("10-5 * * * *", "range '10-5' runs backwards"),
        ("1,,2 * * * *", "empty list item"),
        ("@daily * * * *", "minute field"),
    ],
)
def test_bad_expressions_name_the_field(expr: str, error: str) -> None:
    with pytest.raises(CronError, match=error.replace("(", r"\(").replace(")", r"\)")):
        Cron(expr)


# -- slots and catch-up --------------------------------------------------------------------


def every(n: int, catch_up: str = "skip") -> schedule.ScheduleConfig:
    return schedule.ScheduleConfig(every=n, task={"type": "job"}, catch_up=catch_up)  # type: ignore[arg-type]


def test_slots_of_every_are_aligned_to_the_epoch() -> None:
    assert schedule.decide(every(60), 6005.0, None) == (6000.0, True)
    # a slot already done does not fire again
    assert schedule.decide(every(60), 6030.0, 6000.0) == (None, False)
    assert schedule.decide(every(60), 6061.0, 6000.0) == (6060.0, True)


def test_a_new_schedule_does_not_fire_a_slot_from_before_it_existed() -> None:
    assert schedule.decide(every(3600), 7200.0 + 1000, None) == (7200.0, False)


def test_catch_up_after_downtime() -> None:
    # down from just after slot 6000 until well past slot 6600 (now 6650: 50 s late)
    assert schedule.decide(every(600), 6650.0, 6000.0) == (6600.0, False)
    assert schedule.decide(every(600, "run_once"), 6650.0, 6000.0) == (6600.0, True)
    # back within the grace: on time either way
    assert schedule.decide(every(600), 6610.0, 6000.0) == (6600.0, True)


def test_the_slot_id_is_deterministic() -> None:
    lanes = {"normal": None}
    a = schedule.build(every(60), "tick", 6000.0, lanes=lanes, default_lane="normal")
    b = schedule.build(every(60), "tick", 6000.0, lanes=lanes, default_lane="normal")
    assert a.id == b.id == "schedule:tick:6000"


@pytest.mark.parametrize(
    "expr",
    ["*/7 */5 * * *", "0 12 1-7 * fri", "15 3 29 2 *", "0 0 * * 6,0", "59 23 31 */2 *"],
)
def test_next_after_agrees_with_a_minute_by_minute_walk(expr: str) -> None:
    c = Cron(expr)

    def matches(t: datetime.datetime) -> bool:
        return (
            t.minute in c.minutes
            and t.hour in c.hours
            and t.month in c.months
            and c._day_ok(t.date())
        )

    start = datetime.datetime(2027, 12, 20, tzinfo=UTC)
    walked, t = [], start
    while len(walked) < 3 and t.year < 2029:
        t += datetime.timedelta(minutes=1)
        if matches(t):
            walked.append(t.timestamp())
    found, at = [], start.timestamp()
    for _ in walked:
        nxt = c.next_after(at)
        assert nxt is not None
        found.append(nxt)
        at = nxt
    assert found == walked
