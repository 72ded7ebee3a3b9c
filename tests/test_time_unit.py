"""Delayed tasks, cancel and periodic schedules in the task table, driven through the
in-memory harness and a hand-moved clock (no sleeps, no broker)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clawd import clock, wire
from clawd.distributor.entry import State
from tests.memory import FakeClock
from tests.test_distributor_unit import Harness, P, ok


@pytest.fixture
def clk() -> Iterator[FakeClock]:
    yield from FakeClock().install()


@pytest.fixture
def h(tmp_path: Path, clk: FakeClock) -> Harness:
    return Harness(tmp_path, clk)


def cancels(h: Harness, worker: str) -> list[tuple[str, int]]:
    """(id, attempt) of every dispatch ``worker`` was told to stop."""
    return [(i, a) for p in h.t.on(f"{P}/_/w/{worker}/tasks") for i, a in wire.dispatch(p).cancel]


def cancel(h: Harness, *ids: str) -> dict[str, Any]:
    h.t.deliver(
        f"{P}/_/control", json.dumps({"cmd": "cancel", "ids": list(ids)}), response_topic="r/1"
    )
    h.turn()
    [answer] = [json.loads(p) for p in h.t.on("r/1")]
    h.t.sent = [s for s in h.t.sent if s[0] != "r/1"]
    return answer


# -- delay and not_before ------------------------------------------------------------------


def test_a_delayed_task_is_not_dispatched_before_its_time(h: Harness) -> None:
    h.online("w1")
    h.submit({"type": "job", "id": "t1", "delay": 30})
    h.turn()
    e = h.d.entries["t1"]
    assert e.state is State.DELAYED
    assert e.task.not_before == pytest.approx(e.task.submitted_at + 30)
    h.turn(advance=29)
    assert h.granted("w1") == [] and e.state is State.DELAYED
    h.report("w1", running=[])  # a heartbeat: the worker is alive
    h.turn(advance=1.5)
    assert h.granted("w1") == [("t1", 1)]
    h.report("w1", outcomes=[ok("t1", 1)])
    h.turn()
    [doc] = h.results("t1")
    assert doc["started_at"] >= e.task.submitted_at + 30


def test_not_before_as_rfc3339_and_the_task_query_shows_until(h: Harness) -> None:
    import datetime

    at = clock.wall() + 3600
    text = datetime.datetime.fromtimestamp(at, datetime.UTC).isoformat().replace("+00:00", "Z")
    h.online("w1")
    h.submit({"type": "job", "id": "t1", "not_before": text})
    h.turn()
    h.t.deliver(f"{P}/_/control", '{"cmd": "task", "id": "t1"}', response_topic="r")
    h.turn()
    [doc] = [json.loads(p) for p in h.t.on("r")]
    assert doc["state"] == "delayed"
    assert doc["until"] == pytest.approx(at, abs=0.01)
    assert doc["not_before"] == pytest.approx(at, abs=0.01)


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"delay": -1}, '"delay" must be >= 0'),
        ({"delay": 5, "not_before": 1}, 'either "delay" or "not_before"'),
        ({"not_before": "tomorrow"}, "is not an RFC 3339 date-time"),
        ({"not_before": "2030-01-01T00:00:00"}, "has no time zone"),
        ({"delay": 10**9}, "over the limit"),
        ({"not_before": 4_000_000_000}, "more than 366 days ahead"),
        ({"delay": "soon"}, '"delay" must be a number'),
    ],
)
def test_bad_delays_are_rejected_with_the_reason(
    h: Harness, extra: dict[str, Any], error: str
) -> None:
    h.submit({"type": "job", "id": "bad", **extra})
    h.turn()
    [doc] = h.results("bad")
    assert doc["status"] == "rejected" and error in doc["error"]
    assert "bad" not in h.d.entries


def test_a_delayed_task_survives_a_restart_and_still_waits(
    tmp_path: Path, clk: FakeClock, h: Harness
) -> None:
    h.online("w1")
    h.submit({"type": "job", "id": "t1", "delay": 60})
    h.turn()
    h.journal.close()
    clk.advance(20)
    again = Harness(tmp_path, clk)
    assert again.d.recover() == 1
    assert again.d.entries["t1"].state is State.DELAYED
    again.online("w1")
    again.turn(advance=39)
    assert again.granted("w1") == []
    again.report("w1", running=[])
    again.turn(advance=1.5)
    assert again.granted("w1") == [("t1", 1)]


def test_a_time_to_live_counts_from_the_start_time(h: Harness) -> None:
    h.online("w1")
    h.submit({"type": "job", "id": "t1", "delay": 100, "ttl": 10})
    h.turn()
    h.turn(advance=101)
    h.report("w1", running=[])
    h.turn()
    assert h.granted("w1") == [("t1", 1)]


# -- cancel --------------------------------------------------------------------------------


def test_cancel_a_queued_and_a_delayed_task(h: Harness) -> None:
    h.online("w1", capacity=0)
    h.submit({"type": "job", "id": "q"})
    h.submit({"type": "job", "id": "d", "delay": 50})
    h.turn()
    assert cancel(h, "q", "d") == {"cancelled": ["q", "d"], "finished": {}, "unknown": []}
    for tid in ("q", "d"):
        [doc] = h.results(tid)
        assert doc["status"] == "cancelled"
    # nothing of them is left to run, now or when the delay would have run out
    h.turn(advance=60)
    h.online("w1", session="s2")
    h.turn()
    assert h.granted("w1") == [] and not h.d.entries
    state = h.journal.db.execute("SELECT state FROM tasks WHERE id='d'").fetchone()[0]
    assert state == "cancelled"


def test_cancel_a_running_task_stops_it_and_fences_its_outcome(h: Harness) -> None:
    h.online("w1", capacity=1)
    h.submit({"type": "job", "id": "r"})
    h.submit({"type": "job", "id": "next"})
    h.turn()
    assert h.granted("w1") == [("r", 1)]
    assert cancel(h, "r")["cancelled"] == ["r"]
    assert cancels(h, "w1") == [("r", 1)]
    # its slot is free at once: the next task goes to the same worker
    assert h.granted("w1") == [("next", 1)]
    h.report("w1", outcomes=[ok("r", 1, "late")], running=[["next", 1]])
    h.turn()
    [doc] = h.results("r")
    assert doc["status"] == "cancelled" and doc["worker"] == "w1"
    assert h.d.metrics.counters["stale_outcomes"] == 1


@pytest.mark.parametrize("outcome_first", [True, False])
def test_cancel_racing_completion_gives_exactly_one_result(h: Harness, outcome_first: bool) -> None:
    h.online("w1")
    h.submit({"type": "job", "id": "t"})
    h.turn()
    assert h.granted("w1") == [("t", 1)]
    control = json.dumps({"cmd": "cancel", "ids": ["t"]})
    done = json.dumps({"outcomes": [ok("t", 1)]})
    # both arrive in the same turn, in either order
    first, second = (done, control) if outcome_first else (control, done)
    for payload in (first, second):
        topic = f"{P}/_/done/w1" if payload is done else f"{P}/_/control"
        h.t.deliver(topic, payload, response_topic="r/1" if payload is control else None)
    h.turn()
    [doc] = h.results("t")
    assert doc["status"] == ("ok" if outcome_first else "cancelled")
    [answer] = [json.loads(p) for p in h.t.on("r/1")]
    if outcome_first:
        assert answer["finished"] == {"t": "ok"}
    else:
        assert answer["cancelled"] == ["t"]
    h.turn(advance=30)
    assert len(h.results("t")) == 1


def test_cancel_of_unknown_and_finished_ids_says_so(h: Harness) -> None:
    h.online("w1")
    h.submit({"type": "job", "id": "t"})
    h.turn()
    h.report("w1", outcomes=[ok("t", 1)])
    h.turn()
    answer = cancel(h, "t", "ghost")
    assert answer == {"cancelled": [], "finished": {"t": "ok"}, "unknown": ["ghost"]}
    [err] = h.errors()
    assert "t already finished (ok)" in err["error"] and "ghost is unknown" in err["error"]
    assert len(h.results("t")) == 1


def test_cancel_needs_ids(h: Harness) -> None:
    h.t.deliver(f"{P}/_/control", '{"cmd": "cancel"}')
    h.turn()
    [err] = h.errors()
    assert 'control command "cancel" needs "ids"' in err["error"]


# -- schedules -----------------------------------------------------------------------------

SCHEDULE = '[schedules.tick]\nevery = 60\ntask = {type = "job", input = 1}\n'


def test_a_schedule_fires_each_slot_once_across_a_restart(tmp_path: Path, clk: FakeClock) -> None:
    h = Harness(tmp_path, clk, SCHEDULE)
    slot = int(clock.wall()) // 60 * 60
    h.online("w1")
    h.turn()
    h.turn()
    first = f"schedule:tick:{slot}"
    assert h.granted("w1") == [(first, 1)]
    h.report("w1", outcomes=[ok(first, 1)])
    h.turn(advance=30)
    assert h.granted("w1") == []
    h.journal.close()
    # restarted within the same slot: it is not fired (nor run) again
    again = Harness(tmp_path, clk, SCHEDULE)
    again.d.recover()
    again.online("w1", session="s2")
    again.turn()
    again.turn(advance=1)
    assert again.granted("w1") == []
    assert again.d.metrics.counters["submitted"] == 0
    again.turn(advance=30)
    again.report("w1", running=[])
    again.turn()
    assert again.granted("w1") == [(f"schedule:tick:{slot + 60}", 1)]
    rows = again.journal.db.execute("SELECT COUNT(*) FROM tasks WHERE id LIKE 'schedule:%'")
    assert rows.fetchone()[0] == 2


@pytest.mark.parametrize(("catch_up", "fired"), [("skip", False), ("run_once", True)])
def test_catch_up_after_the_distributor_was_down(
    tmp_path: Path, clk: FakeClock, catch_up: str, fired: bool
) -> None:
    extra = SCHEDULE + f'catch_up = "{catch_up}"\n'
    h = Harness(tmp_path, clk, extra)
    h.turn()
    h.turn()
    slot = int(clock.wall()) // 60 * 60
    h.journal.close()
    clk.advance(60 * 10 + 45)  # down for ten slots; the latest came due 45 s ago
    again = Harness(tmp_path, clk, extra)
    again.d.recover()
    again.turn()
    again.turn()
    latest = slot + 600
    ids = {i for (i,) in again.journal.db.execute("SELECT id FROM tasks")}
    expected = {f"schedule:tick:{slot}"} | ({f"schedule:tick:{latest}"} if fired else set())
    assert ids == expected


@pytest.mark.parametrize("seed", range(12))
def test_random_interleavings_of_cancel_delay_and_outcomes_end_each_task_once(
    tmp_path: Path, clk: FakeClock, seed: int
) -> None:
    """Submissions (some delayed), cancels, outcomes (some stale) and clock moves in a
    seeded random order: every task ends exactly once, and a cancelled one never runs
    again afterwards."""
    import random

    rng = random.Random(seed)
    h = Harness(tmp_path, clk)
    h.online("w1", capacity=3)
    ids = [f"t{i}" for i in range(8)]
    for tid in ids:
        h.submit(
            {
                "type": "job",
                "id": tid,
                **({"delay": rng.choice([1, 5])} if rng.random() < 0.4 else {}),
            }
        )
    h.turn()
    running: dict[str, int] = {}
    cancelled: set[str] = set()
    for _ in range(60):
        for tid, attempt in h.granted("w1"):
            assert tid not in cancelled, f"{tid} dispatched after it was cancelled"
            running[tid] = attempt
        op = rng.random()
        if op < 0.3 and running:
            tid = rng.choice(sorted(running))
            h.report("w1", outcomes=[ok(tid, running.pop(tid))], running=[])
        elif op < 0.5:
            tid = rng.choice(ids)
            h.t.deliver(f"{P}/_/control", json.dumps({"cmd": "cancel", "ids": [tid]}))
            if tid in h.d.entries:
                cancelled.add(tid)
            running.pop(tid, None)
        else:
            h.report("w1", running=[[t, a] for t, a in running.items()])
        h.turn(advance=rng.choice([0.0, 0.5, 2.0]))
    while h.d.entries:  # finish what is left
        for tid, attempt in h.granted("w1"):
            running[tid] = attempt
        h.report("w1", outcomes=[ok(t, a) for t, a in running.items()], running=[])
        running.clear()
        h.turn(advance=1.0)
    for tid in ids:
        docs = h.results(tid)
        assert len(docs) == 1, (tid, docs)
        assert (docs[0]["status"] == "cancelled") == (tid in cancelled)
