"""The lane scheduler: weighted-fair shares, next-slot priority, aging."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from clawd import clock
from clawd.distributor.entry import Entry
from clawd.distributor.lanes import LaneScheduler
from clawd.envelope import Task


def entry(lane: str, n: int) -> Entry:
    return Entry(Task(id=f"{lane}-{n}", type="echo", lane=lane))


def serve(s: LaneScheduler, count: int) -> list[str]:
    out = []
    for _ in range(count):
        lanes = s.candidates()
        if not lanes:
            break
        lane = lanes[0]
        out.append(lane.queue.popleft().task.lane)
        s.served(lane)
    return out


def test_backlogged_lanes_get_their_weight_share():
    s = LaneScheduler({"high": 8, "normal": 4, "low": 1}, max_wait=3600)
    for lane in ("high", "normal", "low"):
        for i in range(5000):
            s.push(entry(lane, i))
    shares = Counter(serve(s, 1300))
    assert shares["high"] == 800 and shares["normal"] == 400 and shares["low"] == 100


def test_new_high_task_goes_within_the_next_slots_under_a_low_backlog():
    s = LaneScheduler({"high": 8, "normal": 4, "low": 1}, max_wait=3600)
    for i in range(10_000):
        s.push(entry("low", i))
    serve(s, 5000)  # the low lane has run alone for a long time: no credit may pile up
    s.push(entry("high", 0))
    assert serve(s, 1) == ["high"]


def test_idle_lane_cannot_bank_credit_and_starve_the_others():
    s = LaneScheduler({"high": 8, "low": 1}, max_wait=3600)
    for i in range(1000):
        s.push(entry("low", i))
    serve(s, 500)
    for i in range(1000):
        s.push(entry("high", i))
    first = serve(s, 90)
    assert first.count("low") >= 9  # low keeps its 1/9 share at once


def test_aging_serves_a_task_that_waited_too_long_first():
    now = [1000.0]
    clock.use(lambda: now[0], lambda: now[0])
    try:
        s = LaneScheduler({"high": 8, "low": 1}, max_wait=0.05)
        s.push(entry("low", 0))
        now[0] += 0.03
        for i in range(100):
            s.push(entry("high", i))
        assert serve(s, 1) == ["high"]  # nothing has waited too long yet
        now[0] += 0.03  # the low task is now past max_wait, the high ones are not
        assert serve(s, 1) == ["low"]
    finally:
        clock.reset()


def test_reconfigure_changes_weights_and_keeps_queued_work():
    s = LaneScheduler({"high": 8, "low": 1})
    s.push(entry("low", 1))
    s.configure({"high": 2, "low": 2, "bulk": 1})
    assert s.lanes["low"].weight == 2 and "bulk" in s.lanes
    assert s.depth() == 1


@settings(max_examples=300, deadline=None)
@given(
    lanes=st.dictionaries(
        st.sampled_from(["high", "normal", "low", "bulk"]),
        st.tuples(
            st.integers(1, 8),  # weight
            st.integers(0, 3),  # queued tasks
            st.floats(0, 5),  # pass
            st.floats(0, 60),  # age of the oldest task
        ),
        min_size=1,
    ),
    exclude=st.sets(st.sampled_from(["high", "normal", "low", "bulk"])),
)
def test_first_is_the_head_of_the_full_order(
    lanes: dict[str, tuple[int, int, float, float]], exclude: set[str]
) -> None:
    # the dispatch pass asks for the next lane only; it must be the one the full order
    # (aging first, then the lowest pass, ties to the heavier lane) puts first
    s = LaneScheduler({name: w for name, (w, _, _, _) in lanes.items()}, max_wait=30)
    now = 1000.0
    clock.use(lambda: now, lambda: 1_700_000_000.0 + now)  # ages are the same for both
    for name, (_, queued, pass_, age) in lanes.items():
        for i in range(queued):
            e = entry(name, i)
            e.enqueued_at = now - age
            s.push(e)
        s.lanes[name].pass_ = pass_
    try:
        order = s.candidates(exclude)
        assert s.first(exclude) is (order[0] if order else None)
    finally:
        clock.reset()
