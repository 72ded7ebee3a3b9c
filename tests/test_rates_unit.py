"""Global rate limits: the token bucket on a fake clock, the config and rule checks, and the
distributor parking rate-limited tasks without holding slots or the tasks behind them,
waking when a bucket refills, and applying a reload."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from clawd.errors import ConfigError
from clawd.routing.rules import decode
from clawd.token_bucket import Rate, TokenBucket, parse_rate
from clawd.wire import Unreadable
from tests.memory import FakeClock, config, status
from tests.test_distributor_unit import Harness, ok

P = "clawd"


@pytest.fixture
def clk() -> Iterator[FakeClock]:
    yield from FakeClock().install()


# -- the bucket ----------------------------------------------------------------------------


def test_rates_parse_and_bad_ones_say_what_is_allowed() -> None:
    assert parse_rate("100/s") == Rate(100, "s")
    assert parse_rate(" 10 / m ").per_second == pytest.approx(10 / 60)
    assert parse_rate("2.5/h").per_second == pytest.approx(2.5 / 3600)
    assert str(parse_rate("10/m")) == "10/m"
    with pytest.raises(ValueError, match=r"the unit after '/' is s, m or h, not 'x'"):
        parse_rate("100/x")
    for bad in ("100", "/s", "0/s", "-1/s", "s/100", "", "1e9/s"):
        with pytest.raises(ValueError, match=r'expected a rate "<count>/s"'):
            parse_rate(bad)
    with pytest.raises(ValueError, match="got int"):
        parse_rate(100)


def test_a_bucket_lets_a_burst_through_then_one_per_period() -> None:
    b = TokenBucket(parse_rate("4/s"), now=0.0)
    went = 0
    while b.ready(0.0):
        b.take(0.0)
        went += 1
    assert went == 4  # the burst: one second's worth
    assert b.next_token(0.0) == pytest.approx(0.25)
    assert not b.ready(0.2499)
    assert b.ready(0.25)
    b.take(0.25)
    assert not b.ready(0.25)
    # idle for a long time: it refills to its burst, never beyond
    assert b.available(100.0) == pytest.approx(4.0)


def test_a_slow_rate_has_a_burst_of_one() -> None:
    b = TokenBucket(parse_rate("10/m"), now=0.0)
    b.take(0.0)
    assert not b.ready(5.9)
    assert b.next_token(5.9) == pytest.approx(6.0)
    assert b.ready(6.0)


def test_no_window_ever_sees_more_than_the_bucket_allows() -> None:
    rate = parse_rate("5/s")
    b = TokenBucket(rate, now=0.0)
    times: list[float] = []
    t = 0.0
    while t < 20.0:
        if b.ready(t):
            b.take(t)
            times.append(t)
        t = round(t + 0.01, 6)
    for i, start in enumerate(times):
        for span in (0.5, 1.0, 3.0):
            n = sum(1 for x in times[i:] if x <= start + span)
            assert n <= rate.burst + rate.per_second * span + 1e-6
    assert len(times) >= 5 * 20 - 1  # and it does let the rate through


# -- config and rules ----------------------------------------------------------------------


def test_a_bad_rate_limit_in_the_config_names_the_key_and_what_is_allowed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        config(tmp_path, '[handlers.compute]\nrate_limit = "100/x"\n')
    [msg] = err.value.problems
    assert msg.endswith(
        '[handlers.compute] rate_limit: expected a rate "<count>/s", "<count>/m" or '
        "\"<count>/h\", e.g. \"100/s\", got '100/x' (the unit after '/' is s, m or h, not 'x')"
    )
    with pytest.raises(ConfigError) as err:
        config(tmp_path, "[handlers.compute]\nrate_limit = 100\n")
    assert "[handlers.compute] rate_limit: expected a string, got 100" in err.value.problems[0]
    cfg = config(tmp_path, '[handlers.compute]\nrate_limit = "100/s"\n')
    assert cfg.handler_config("compute").rate_limit == "100/s"


def test_a_rule_with_a_bad_rate_limit_is_refused_with_its_place() -> None:
    with pytest.raises(Unreadable) as err:
        decode("r1", b'{"target": "w1", "rate_limit": "10/x"}', 0.0)
    assert err.value.error.startswith("routing rule 'r1': rate_limit: expected a rate")
    rule = decode("r1", b'{"target": "w1", "rate_limit": "10/s"}', 0.0)
    assert rule.rate == Rate(10, "s")


# -- in the distributor --------------------------------------------------------------------


def limited(tmp_path: Path, clk: FakeClock, rate: str = "2/s") -> Harness:
    h = Harness(tmp_path, clk, f'[handlers.job]\nrate_limit = "{rate}"\n')
    for w in ("w1", "w2"):
        h.t.deliver(
            f"{P}/workers/{w}",
            status(capacity=10, session="s1", handlers=["job", "other"]),
            retain=True,
        )
    return h


def test_the_limit_is_global_across_workers_and_waits_do_not_hold_slots(
    tmp_path: Path, clk: FakeClock
) -> None:
    h = limited(tmp_path, clk)
    for i in range(6):
        h.submit({"type": "job", "id": f"j{i}"})
    h.turn()
    first = h.granted("w1") + h.granted("w2")
    assert sorted(first) == [("j0", 1), ("j1", 1)]  # the burst: 2, across both workers
    snap = h.d.metrics.snapshot(h.d)
    assert snap["rate_limits"]["type:job"]["waiting"] == 4
    assert snap["lanes"]["normal"]["depth"] == 4 and snap["lanes"]["normal"]["rate_limited"] == 4
    assert snap["counters"]["rate_limited"] == 4
    # the slots are free: 20 of them, 2 used
    assert h.d.fleet.free_slots() == 18
    # the distributor sleeps exactly until the next token (1/2 s at 2/s)
    assert h.d.wake_at() == pytest.approx(clk.now + 0.5)
    h.turn(0.49)
    assert h.granted("w1") + h.granted("w2") == []
    h.turn(0.01)
    assert [t for t, _ in h.granted("w1") + h.granted("w2")] == ["j2"]
    h.turn(1.0)
    assert sorted(t for t, _ in h.granted("w1") + h.granted("w2")) == ["j3", "j4"]


def test_a_limited_type_does_not_block_other_types_behind_it(
    tmp_path: Path, clk: FakeClock
) -> None:
    h = limited(tmp_path, clk, "1/h")
    for i in range(200):  # far more than the dispatcher scans
        h.submit({"type": "job", "id": f"j{i}"})
    h.submit({"type": "other", "id": "o1"})
    h.turn()
    got = sorted(t for t, _ in h.granted("w1") + h.granted("w2"))
    assert got == ["j0", "o1"]
    # a parked task can be cancelled; its lane forgets it
    h.t.deliver(f"{P}/_/control", json.dumps({"cmd": "cancel", "ids": ["j5"]}))
    h.turn()
    assert h.results("j5")[0]["status"] == "cancelled"
    assert h.d.lanes.lanes["normal"].waiting() == 198


def test_a_rule_with_a_rate_limit_limits_what_it_routes(tmp_path: Path, clk: FakeClock) -> None:
    h = limited(tmp_path, clk, "1000/s")
    rule = {"target": "w2", "match": "task.meta.slow == true", "rate_limit": "1/s"}
    h.t.deliver(f"{P}/routes/slow", json.dumps(rule), retain=True)
    for i in range(3):
        h.submit({"type": "job", "id": f"s{i}", "meta": {"slow": True}})
        h.submit({"type": "job", "id": f"f{i}"})
    h.turn()
    got = sorted(t for t, _ in h.granted("w1") + h.granted("w2"))
    assert got == ["f0", "f1", "f2", "s0"]
    assert h.d.metrics.snapshot(h.d)["rate_limits"]["rule:slow"]["waiting"] == 2
    h.turn(1.0)
    assert h.granted("w2") == [("s1", 1)]
    # the rule deleted: what waited for it goes at once
    h.t.deliver(f"{P}/routes/slow", b"", retain=True)
    h.turn()
    assert [t for t, _ in h.granted("w1") + h.granted("w2")] == ["s2"]


def test_a_reload_applies_new_limits(tmp_path: Path, clk: FakeClock) -> None:
    h = limited(tmp_path, clk, "1/h")
    for i in range(5):
        h.submit({"type": "job", "id": f"j{i}"})
    h.turn()
    assert len(h.granted("w1") + h.granted("w2")) == 1
    faster = config(tmp_path, '[handlers.job]\nrate_limit = "100/s"\n')
    h.d.pending_reload = (faster, h.d.plugins)
    h.turn()  # the new rate, with the tokens the bucket had (none)
    assert h.granted("w1") + h.granted("w2") == []
    h.turn(0.04)  # 4 tokens at 100/s
    assert len(h.granted("w1") + h.granted("w2")) == 4
    h.submit({"type": "job", "id": "j9"})
    h.d.pending_reload = (config(tmp_path), h.d.plugins)  # no limit at all
    h.turn()
    assert h.granted("w1") + h.granted("w2") == [("j9", 1)]
    assert h.d.metrics.snapshot(h.d)["rate_limits"] == {}


def test_an_outcome_frees_a_slot_and_the_limit_still_holds(tmp_path: Path, clk: FakeClock) -> None:
    h = limited(tmp_path, clk, "1/s")
    h.submit({"type": "job", "id": "a"})
    h.submit({"type": "job", "id": "b"})
    h.turn()
    [(tid, att)] = h.granted("w1") + h.granted("w2")
    h.report("w1", outcomes=[ok(tid, att)], running=[])
    h.turn(0.5)
    assert h.granted("w1") + h.granted("w2") == []
    h.turn(0.5)
    assert [t for t, _ in h.granted("w1") + h.granted("w2")] == ["b"]
