"""Circuit breakers and worker ejection, on a fake clock: no sleeping."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clawd.config import BreakerConfig, BreakerTypeConfig
from clawd.distributor.breakers import Breaker, Breakers


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


class Changes(list[tuple[str, str, str]]):
    def __call__(self, key: str, old: str, new: str) -> None:
        self.append((key, old, new))


def cfg(**kw: Any) -> BreakerConfig:
    base: dict[str, Any] = dict(window=10, minimum_calls=4, failure_rate=0.5, open_seconds=5.0)
    return BreakerConfig(**(base | kw))


def feed(b: Breaker | Breakers, outcomes: str, *, seconds: float = 0.1, **kw: str) -> None:
    """``"ffo"``: failed, failed, ok."""
    for c in outcomes:
        if isinstance(b, Breaker):
            b.record(c == "o", seconds)
        else:
            b.dispatched(kw["worker"], kw["type_"])
            b.record(kw["worker"], kw["type_"], c == "o", seconds)


# -- one breaker ----------------------------------------------------------------------------


def test_opens_on_the_failure_rate_only_once_minimum_calls_are_in(clock: Clock) -> None:
    b = Breaker("k", cfg(), now=clock)
    feed(b, "fff")  # 100 % failed, but 3 calls are no evidence yet
    assert b.state == "closed" and b.allow()
    feed(b, "f")
    assert b.state == "open"
    assert b.opened_at == clock.t


def test_a_rate_below_the_threshold_keeps_it_closed(clock: Clock) -> None:
    b = Breaker("k", cfg(), now=clock)
    feed(b, "oooooffff")  # 4 of 9 failed: 44 %
    assert b.state == "closed"
    feed(b, "f")  # 5 of 10: 50 % reaches the threshold
    assert b.state == "open"


def test_the_window_is_the_last_calls_only(clock: Clock) -> None:
    b = Breaker("k", cfg(window=4, minimum_calls=4), now=clock)
    feed(b, "oooooooo")
    assert b.snapshot()["calls"] == 4
    feed(b, "ff")  # 2 of 10 calls, but 2 of the last 4
    assert b.state == "open"


def test_slow_calls_open_it(clock: Clock) -> None:
    b = Breaker("k", cfg(slow_call_seconds=2.0, slow_call_rate=0.75), now=clock)
    feed(b, "oo", seconds=5.0)
    feed(b, "o", seconds=2.0)  # at the limit is not slow
    feed(b, "o", seconds=0.1)
    assert b.state == "closed"  # 2 of 4 slow
    feed(b, "oo", seconds=9.0)  # 4 of 6: 67 %
    assert b.state == "closed"
    feed(b, "oo", seconds=9.0)  # 6 of 8: 75 %
    assert b.state == "open"


def test_without_slow_call_seconds_duration_never_opens_it(clock: Clock) -> None:
    b = Breaker("k", cfg(slow_call_rate=0.1), now=clock)
    feed(b, "oooooooooo", seconds=3600.0)
    assert b.state == "closed"


def test_calls_while_open_are_refused_and_counted(clock: Clock) -> None:
    b = Breaker("k", cfg(), now=clock)
    feed(b, "ffff")
    assert [b.allow() for _ in range(3)] == [False, False, False]
    assert b.rejected == 3
    assert not b.permits()  # asking without taking counts nothing
    assert b.rejected == 3
    feed(b, "oooooo")  # late outcomes of calls started before it opened change nothing
    assert b.state == "open"


def test_half_open_after_open_seconds_with_a_probe_limit(clock: Clock) -> None:
    changes = Changes()
    b = Breaker("k", cfg(half_open_calls=2), now=clock, on_change=changes)
    feed(b, "ffff")
    clock.t += 4.9
    assert not b.allow() and b.state == "open"
    clock.t += 0.1
    assert b.allow() and b.state == "half_open"
    assert b.allow()
    assert not b.allow()  # both probes are out: no more until they report
    assert b.rejected == 2
    assert changes == [("k", "closed", "open"), ("k", "open", "half_open")]


def test_good_probes_close_it_with_a_fresh_window(clock: Clock) -> None:
    changes = Changes()
    b = Breaker("k", cfg(half_open_calls=2), now=clock, on_change=changes)
    feed(b, "ffff")
    clock.t += 5
    assert b.allow() and b.allow()
    b.record(True, 0.1)
    assert b.state == "half_open"
    b.record(False, 0.1)  # 1 of 2 failed: 50 % is the threshold -> reopens
    assert b.state == "open"
    clock.t += 5
    assert b.allow() and b.allow()
    feed(b, "oo")
    assert b.state == "closed"
    assert changes[-3:] == [
        ("k", "half_open", "open"),
        ("k", "open", "half_open"),
        ("k", "half_open", "closed"),
    ]
    feed(b, "fff")  # the old failures are gone: 3 calls is below minimum_calls
    assert b.state == "closed"


def test_bad_probes_reopen_it_for_another_open_seconds(clock: Clock) -> None:
    b = Breaker("k", cfg(half_open_calls=3), now=clock)
    feed(b, "ffff")
    clock.t += 5
    assert all(b.allow() for _ in range(3))
    feed(b, "off")
    assert b.state == "open" and b.opened_at == clock.t
    clock.t += 4
    assert not b.allow()


def test_an_outcome_that_is_not_a_probe_does_not_judge_half_open(clock: Clock) -> None:
    b = Breaker("k", cfg(half_open_calls=1), now=clock)
    feed(b, "ffff")
    clock.t += 5
    feed(b, "f")  # no probe is out: a call from before the opening
    assert b.state == "half_open"
    assert b.allow()
    b.release()  # the probe was handed back without an outcome
    assert b.allow()
    feed(b, "o")
    assert b.state == "closed"


# -- the registry ---------------------------------------------------------------------------


def test_a_failing_worker_does_not_trip_another(clock: Clock) -> None:
    br = Breakers(cfg(eject_after=100, minimum_calls=4), now=clock)
    feed(br, "ffff", worker="a", type_="compute")
    feed(br, "oooo", worker="b", type_="compute")
    assert not br.allows("a", "compute")
    assert br.allows("b", "compute")
    assert br.allows("a", "analyze")  # one type failing on a worker leaves its others
    snap = br.snapshot()
    assert snap["workers"]["a/compute"]["state"] == "open"
    assert snap["workers"]["a/compute"]["rejected"] == 1
    assert snap["workers"]["b/compute"]["state"] == "closed"


def test_the_type_breaker_sees_every_worker(clock: Clock) -> None:
    changes = Changes()
    br = Breakers(cfg(eject_after=100), now=clock, on_change=changes)
    for w in ("a", "b", "c", "d"):
        feed(br, "f", worker=w, type_="compute")
    assert not br.type_allows("compute")  # 4 failures over 4 workers: it is the type
    assert br.type_allows("analyze")
    assert all(br.allows(w, "compute") for w in "abcd")  # no worker has 4 calls
    assert changes == [("type/compute", "closed", "open")]
    clock.t += 5
    assert br.type_allows("compute")  # half-open: a probe may go
    for w in "abc":
        br.dispatched(w, "compute")
    assert not br.type_allows("compute")  # 3 probes out
    for w in "abc":
        br.record(w, "compute", True, 0.1)
    assert br.type_allows("compute")
    assert changes[-1] == ("type/compute", "half_open", "closed")


def test_a_type_can_have_breakers_off_or_other_settings(clock: Clock) -> None:
    types = {
        "flaky": BreakerTypeConfig(enabled=False),
        "fragile": BreakerTypeConfig(minimum_calls=1, failure_rate=0.1),
    }
    br = Breakers(cfg(eject_after=100, types=types), now=clock)
    feed(br, "ffffffffff", worker="a", type_="flaky")
    assert br.type_allows("flaky") and br.allows("a", "flaky")
    feed(br, "f", worker="a", type_="fragile")
    assert not br.type_allows("fragile")
    assert "flaky" not in br.snapshot()["types"]


def test_consecutive_failures_eject_a_worker_for_every_type(clock: Clock) -> None:
    changes = Changes()
    br = Breakers(cfg(eject_after=3, eject_seconds=30.0, minimum_calls=10), now=clock,
                  on_change=changes)  # fmt: skip
    br.allows("b", "compute")  # a second known worker, so one may be ejected
    feed(br, "ffo", worker="a", type_="compute")  # a success ends the streak
    feed(br, "ff", worker="a", type_="compute")
    assert br.allows("a", "analyze")
    feed(br, "f", worker="a", type_="analyze")  # the streak spans types
    assert not br.allows("a", "analyze") and not br.allows("a", "compute")
    assert br.allows("b", "compute")
    assert changes == [("eject/a", "active", "ejected")]
    assert br.snapshot()["ejected"] == {"a": 30.0}
    clock.t += 30
    assert br.allows("a", "compute")
    assert changes[-1] == ("eject/a", "ejected", "active")
    assert br.snapshot()["ejected"] == {}


def test_ejection_time_doubles_up_to_ten_times(clock: Clock) -> None:
    br = Breakers(cfg(eject_after=1, eject_seconds=10.0, minimum_calls=10), now=clock)
    br.allows("b", "t")
    lengths = []
    for _ in range(6):
        feed(br, "f", worker="a", type_="t")
        lengths.append(br.snapshot()["ejected"]["a"])
        clock.t += lengths[-1]
        assert br.allows("a", "t")
    assert lengths == [10.0, 20.0, 40.0, 80.0, 100.0, 100.0]


def test_time_back_in_forgives_ejections(clock: Clock) -> None:
    br = Breakers(cfg(eject_after=1, eject_seconds=10.0, minimum_calls=10), now=clock)
    br.allows("b", "t")
    feed(br, "f", worker="a", type_="t")
    clock.t += 10
    feed(br, "f", worker="a", type_="t")
    assert br.snapshot()["ejected"]["a"] == 20.0
    clock.t += 20 + 100  # then long healthy: each eject_seconds back in forgives one
    feed(br, "f", worker="a", type_="t")
    assert br.snapshot()["ejected"]["a"] == 10.0


def test_max_ejected_caps_ejections(clock: Clock) -> None:
    changes = Changes()
    br = Breakers(cfg(eject_after=2, minimum_calls=10), now=clock, on_change=changes)
    br.allows("b", "t")
    feed(br, "ff", worker="a", type_="t")
    feed(br, "ff", worker="b", type_="t")
    # 2 workers, max_ejected 0.5: one may be out, the other stays in
    assert not br.allows("a", "t") and br.allows("b", "t")
    assert changes == [("eject/a", "active", "ejected")]
    clock.t += 30
    assert br.allows("a", "t")
    feed(br, "f", worker="b", type_="t")  # b's streak goes on and now there is room
    assert not br.allows("b", "t")
    assert changes[-1] == ("eject/b", "active", "ejected")


def test_a_lone_worker_is_never_ejected(clock: Clock) -> None:
    br = Breakers(cfg(eject_after=1, minimum_calls=10), now=clock)
    feed(br, "fff", worker="a", type_="t")
    assert br.allows("a", "t")


def test_disabled_means_no_breaker_and_no_ejection(clock: Clock) -> None:
    br = Breakers(cfg(enabled=False, eject_after=1), now=clock)
    br.allows("b", "t")
    feed(br, "ffffffffff", worker="a", type_="t")
    assert br.allows("a", "t") and br.type_allows("t")
    assert br.snapshot() == {"types": {}, "workers": {}, "ejected": {}}


def test_forget_worker_reports_its_states_back_to_normal(clock: Clock) -> None:
    changes = Changes()
    br = Breakers(cfg(eject_after=4), now=clock, on_change=changes)
    br.allows("b", "t")
    feed(br, "ffff", worker="a", type_="t")
    changes.clear()
    br.forget_worker("a")
    assert sorted(changes) == [
        ("eject/a", "ejected", "active"),
        ("worker/a/t", "open", "closed"),
    ]
    assert "a/t" not in br.snapshot()["workers"]
    assert br.allows("a", "t")


def test_tick_moves_time_driven_states(clock: Clock) -> None:
    changes = Changes()
    br = Breakers(cfg(eject_after=100), now=clock, on_change=changes)
    feed(br, "ffff", worker="a", type_="t")
    clock.t += 5
    br.tick()
    assert ("type/t", "open", "half_open") in changes
    assert ("worker/a/t", "open", "half_open") in changes


def test_snapshot_is_json_with_rates_and_counters(clock: Clock) -> None:
    br = Breakers(cfg(eject_after=100), now=clock)
    feed(br, "offf", worker="a", type_="compute")
    assert not br.type_allows("compute")
    clock.t += 2
    snap = json.loads(json.dumps(br.snapshot()))
    t = snap["types"]["compute"]
    assert t["state"] == "open"
    assert t["failure_rate"] == 0.75 and t["calls"] == 4 and t["rejected"] == 1
    assert t["retry_in"] == 3.0
    assert abs(t["opened_at"] - (time.time() - 2)) < 5  # wall-clock, for people
    assert snap["workers"]["a/compute"]["state"] == "open"
    assert snap["ejected"] == {}


# -- the type's breaker judges the type, not one worker -------------------------------------


def test_one_failing_worker_among_several_leaves_the_type_closed(clock: Clock) -> None:
    changes = Changes()
    bs = Breakers(cfg(eject_after=1000), on_change=changes, now=clock)
    assert bs.allows("good", "t") and bs.allows("bad", "t")
    for _ in range(5):
        feed(bs, "f", worker="bad", type_="t")
        feed(bs, "o", worker="good", type_="t")
    assert bs.type_allows("t")
    assert not bs.allows("bad", "t") and bs.allows("good", "t")
    assert ("type/t", "closed", "open") not in changes


def test_failures_on_two_workers_open_the_type(clock: Clock) -> None:
    bs = Breakers(cfg(eject_after=1000), now=clock)
    for _ in range(3):
        feed(bs, "f", worker="a", type_="t")
        feed(bs, "f", worker="b", type_="t")
    assert not bs.type_allows("t")


def test_a_lone_worker_failing_opens_the_type(clock: Clock) -> None:
    bs = Breakers(cfg(eject_after=1000), now=clock)
    feed(bs, "ffff", worker="only", type_="t")
    assert not bs.type_allows("t")


@settings(max_examples=200, deadline=None)
@given(
    calls=st.lists(st.tuples(st.booleans(), st.floats(0, 2)), max_size=80),
    advance=st.lists(st.floats(0, 8), max_size=80),
)
def test_the_rates_are_those_of_the_calls_in_the_window(
    calls: list[tuple[bool, float]], advance: list[float]
) -> None:
    # the breaker keeps its failed and slow counts as calls come and go; they must always
    # be what counting the window afresh gives, through openings and probes
    clock = Clock()
    b = Breaker("type/x", cfg(window=5, minimum_calls=3, slow_call_seconds=1.0), now=clock)
    for i, (ok, seconds) in enumerate(calls):
        clock.t += advance[i] if i < len(advance) else 0.0
        if b.allow():
            b.record(ok, seconds)
        window = list(b._calls)
        n = len(window)
        expected = (
            (sum(c[0] for c in window) / n, sum(c[1] for c in window) / n) if n else (0.0, 0.0)
        )
        assert b._rates() == expected
