"""Groups and chains in the distributor, driven through an in-memory transport and a
hand-moved clock: when a then starts, what a group's result says, failures, cancel,
a restart in the middle, resubmission, and envelopes that are refused."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clawd import wire
from clawd.journal import VERSION, Journal
from clawd.workflow import MAX_DEPTH, MAX_MEMBERS
from tests.memory import FakeClock, status
from tests.test_distributor_unit import Harness, P


@pytest.fixture
def clk() -> Iterator[FakeClock]:
    yield from FakeClock().install()


@pytest.fixture
def h(tmp_path: Path, clk: FakeClock) -> Harness:
    h = Harness(tmp_path, clk, "[retry]\nmax_attempts = 1\n")
    h.online("w1", capacity=8)
    return h


def grants(h: Harness) -> dict[str, Any]:
    """Task id -> input of everything dispatched to w1 since the last call."""
    out: dict[str, Any] = {}
    keep = []
    for topic, payload, retain in h.t.sent:
        if topic == f"{P}/_/w/w1/tasks":
            out.update({t.id: t.input for t in wire.grants(payload)})
        else:
            keep.append((topic, payload, retain))
    h.t.sent = keep
    return out


def end(h: Harness, task_id: str, result: Any = None, *, fail: bool = False) -> None:
    e = h.d.entries[task_id]
    if fail:
        o = {"status": "error", "error": "boom", "retryable": False}
    else:
        o = {"status": "ok", "result": result}
    h.report("w1", outcomes=[{"id": task_id, "attempt": e.attempt, "ms": 1.0, **o}])
    h.turn()


def progress(h: Harness, group_id: str) -> list[tuple[int, int]]:
    return [
        (d["done"], d["total"]) for d in (json.loads(p) for p in h.t.on(f"{P}/progress/{group_id}"))
    ]


def group(gid: str = "g", n: int = 3, **extra: Any) -> dict[str, Any]:
    return {
        "type": "group",
        "id": gid,
        "tasks": [{"type": "job", "input": i} for i in range(n)],
        "then": {"type": "job"},
        **extra,
    }


def test_members_run_in_parallel_and_the_then_gets_their_results_in_order(h: Harness) -> None:
    h.submit(group())
    h.turn()
    assert grants(h) == {"g.0": 0, "g.1": 1, "g.2": 2}
    end(h, "g.2", 20)
    end(h, "g.0", 0)
    assert grants(h) == {}  # a member still runs: no then yet
    end(h, "g.1", 10)
    assert grants(h) == {"g.then": [0, 10, 20]}
    assert h.results("g") == []
    end(h, "g.then", 30)
    [doc] = h.results("g")
    assert doc["status"] == "ok" and doc["result"] == 30 and doc["type"] == "group"
    assert doc["members"] == [{"id": f"g.{i}", "status": "ok"} for i in range(3)]
    assert doc["then"] == {"id": "g.then", "status": "ok"}
    assert progress(h, "g") == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert h.d.flows.open == {} and h.journal.open_groups() == []


def test_a_group_without_then_returns_its_members_results(h: Harness) -> None:
    env = group(n=2)
    del env["then"]
    h.submit(env)
    h.turn()
    end(h, "g.0", "a")
    end(h, "g.1", "b")
    [doc] = h.results("g")
    assert doc["status"] == "ok" and doc["result"] == ["a", "b"] and "then" not in doc


def test_a_failed_member_fails_the_group_and_skips_its_then(h: Harness) -> None:
    h.submit(group(n=2))
    h.turn()
    grants(h)
    end(h, "g.0", fail=True)
    assert h.results("g") == []  # the group waits for every member
    end(h, "g.1", 1)
    assert grants(h) == {}
    [doc] = h.results("g")
    assert doc["status"] == "failed" and "g.0 (failed)" in doc["error"]
    assert doc["members"] == [{"id": "g.0", "status": "failed"}, {"id": "g.1", "status": "ok"}]
    assert doc["then"] == {"id": "g.then", "status": "skipped"}
    assert "g.then" not in h.d.entries


def test_allow_failures_passes_null_for_a_failed_member(h: Harness) -> None:
    h.submit(group(n=2, allow_failures=True))
    h.turn()
    grants(h)
    end(h, "g.0", fail=True)
    end(h, "g.1", 1)
    assert grants(h) == {"g.then": [None, 1]}
    end(h, "g.then", "reduced")
    [doc] = h.results("g")
    assert doc["status"] == "ok" and doc["result"] == "reduced"
    assert doc["members"][0]["status"] == "failed"


def test_a_failed_then_fails_the_group(h: Harness) -> None:
    h.submit(group(n=1))
    h.turn()
    end(h, "g.0", 1)
    end(h, "g.then", fail=True)
    [doc] = h.results("g")
    assert doc["status"] == "failed" and doc["then"] == {"id": "g.then", "status": "failed"}


def test_a_chain_runs_each_then_with_the_result_before_it(h: Harness) -> None:
    h.submit(
        {"type": "job", "id": "a", "input": 1, "then": {"type": "job", "then": {"type": "job"}}}
    )
    h.turn()
    assert grants(h) == {"a": 1}
    end(h, "a", 2)
    assert grants(h) == {"a.then": 2}
    end(h, "a.then", 3)
    assert grants(h) == {"a.then.then": 3}
    end(h, "a.then.then", 4)
    assert [d["result"] for d in h.results("a.then.then")] == [4]


def test_a_failed_task_skips_its_then(h: Harness) -> None:
    h.submit({"type": "job", "id": "a", "then": {"type": "job", "id": "next"}})
    h.turn()
    end(h, "a", fail=True)
    assert "next" not in h.d.entries and h.journal.lookup_many(["next"]) == {}


def test_an_open_group_and_its_pending_then_survive_a_restart(
    tmp_path: Path, clk: FakeClock, h: Harness
) -> None:
    h.submit(group(n=2))
    h.turn()
    end(h, "g.0", "x")
    h.journal.close()
    again = Harness(tmp_path, clk, "[retry]\nmax_attempts = 1\n")
    again.d.recover()
    assert again.d.flows.open["g"].statuses == ["ok", None]
    again.online("w1", capacity=8)
    again.turn(advance=60)  # past the wait for reports of what was in flight
    assert "g.1" in grants(again)
    end(again, "g.1", "y")
    assert grants(again) == {"g.then": ["x", "y"]}
    # and once more, with the then running
    again.journal.close()
    third = Harness(tmp_path, clk, "[retry]\nmax_attempts = 1\n")
    third.d.recover()
    third.online("w1", capacity=8)
    third.turn(advance=60)
    assert grants(third) == {"g.then": ["x", "y"]}
    end(third, "g.then", "z")
    [doc] = third.results("g")
    assert doc["status"] == "ok" and doc["result"] == "z"


def test_a_group_submitted_again_is_not_run_again(h: Harness) -> None:
    h.submit(group(n=1))
    h.turn()
    h.submit(group(n=1))  # while open
    h.turn()
    assert grants(h) == {"g.0": 0}
    end(h, "g.0", 1)
    assert grants(h) == {"g.then": [1]}
    end(h, "g.then", 2)
    h.submit(group(n=1))  # once ended: the stored result again
    h.turn()
    assert grants(h) == {}
    docs = h.results("g")
    assert len(docs) == 2 and docs[0] == docs[1]


def test_cancelling_a_group_cancels_its_members_and_its_then(h: Harness) -> None:
    h.submit(group(n=2))
    h.turn()
    end(h, "g.0", 1)
    h.t.deliver(f"{P}/_/control", json.dumps({"cmd": "cancel", "ids": ["g"]}))
    h.turn()
    [doc] = h.results("g")
    assert doc["status"] == "cancelled"
    assert [m["status"] for m in doc["members"]] == ["ok", "cancelled"]
    assert doc["then"] == {"id": "g.then", "status": "skipped"}
    assert [d["status"] for d in h.results("g.1")] == ["cancelled"]
    assert "g.then" not in h.d.entries and h.d.flows.open == {}


def test_cancelling_a_group_whose_then_runs_cancels_the_then(h: Harness) -> None:
    h.submit(group(n=1))
    h.turn()
    end(h, "g.0", 1)
    assert "g.then" in h.d.entries
    h.t.deliver(f"{P}/_/control", json.dumps({"cmd": "cancel", "ids": ["g"]}))
    h.turn()
    [doc] = h.results("g")
    assert doc["status"] == "cancelled" and doc["then"]["status"] == "cancelled"
    assert [d["status"] for d in h.results("g.then")] == ["cancelled"]


def test_a_nested_group_is_a_member_like_a_task(h: Harness) -> None:
    inner = {"type": "group", "tasks": [{"type": "job"}, {"type": "job"}]}
    h.submit(
        {"type": "group", "id": "g", "tasks": [inner, {"type": "job"}], "then": {"type": "job"}}
    )
    h.turn()
    assert set(grants(h)) == {"g.0.0", "g.0.1", "g.1"}
    end(h, "g.0.0", "a")
    end(h, "g.1", "c")
    end(h, "g.0.1", "b")
    assert grants(h) == {"g.then": [["a", "b"], "c"]}


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"type": "group", "id": "g"}, 'needs "tasks"'),
        ({"type": "group", "id": "g", "tasks": []}, "is empty"),
        ({"type": "group", "id": "g", "tasks": {"a": 1}}, "must be a list"),
        ({"type": "group", "id": "g", "tasks": [1]}, "member 0 of group g: expected a task"),
        (
            {"type": "group", "id": "g", "tasks": [{"type": "job", "id": "x"}] * 2},
            "id 'x' is also member 0",
        ),
        ({"type": "group", "id": "g", "tasks": [{"type": "nope"}]}, "unknown task type 'nope'"),
        (
            {"type": "group", "id": "g", "tasks": [{"type": "job"}] * (MAX_MEMBERS + 1)},
            f"at most {MAX_MEMBERS} members",
        ),
        ({"type": "group", "id": "g", "tasks": [{"type": "job"}], "input": 1}, 'no "input"'),
        ({"type": "job", "id": "t", "tasks": []}, '"tasks" belongs to a group'),
        ({"type": "job", "id": "t", "then": {"type": "job", "input": 1}}, 'give no "input"'),
        ({"type": "job", "id": "t", "then": "job"}, "expected a task envelope"),
        (
            {"type": "job", "id": "t", "then": {"type": "group", "tasks": []}},
            "a then is a task, not a group",
        ),
    ],
)
def test_a_bad_workflow_envelope_is_refused_clearly(
    h: Harness, env: dict[str, Any], error: str
) -> None:
    h.submit(env)
    h.turn()
    [err] = h.errors()
    assert error in err["error"], err["error"]
    assert grants(h) == {} and h.d.flows.open == {}
    [doc] = h.results(env["id"])
    assert doc["status"] == "rejected"


def test_groups_nested_too_deep_are_refused(h: Harness) -> None:
    env: dict[str, Any] = {"type": "job"}
    for _ in range(MAX_DEPTH + 1):
        env = {"type": "group", "tasks": [env]}
    env["id"] = "deep"
    h.submit(env)
    h.turn()
    [err] = h.errors()
    assert f"nested more than {MAX_DEPTH} deep" in err["error"]


def test_a_version_3_journal_gets_the_groups_table(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    Journal(path).close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE groups")
    db.execute("PRAGMA user_version=3")
    db.commit()
    db.close()
    j = Journal(path)
    assert j.db.execute("PRAGMA user_version").fetchone() == (VERSION,) and VERSION == 4
    j.add_group("g", b'{"id": "g"}', None, 1.0)
    j.commit()
    assert j.open_groups() == [("g", b'{"id": "g"}', None)]


def test_a_member_lost_with_its_worker_is_redelivered_and_the_group_ends(h: Harness) -> None:
    h.submit(group(n=2))
    h.turn()
    assert set(grants(h)) == {"g.0", "g.1"}
    end(h, "g.0", "a")
    h.t.deliver(f"{P}/workers/w1", status("offline", reason="lost"), retain=True)
    h.turn()
    assert h.results("g") == [] and h.d.flows.open["g"].statuses == ["ok", None]
    h.online("w1", capacity=8, session="s2")
    h.turn()
    assert grants(h) == {"g.1": 1}  # again, a new attempt
    assert h.d.entries["g.1"].attempt == 2
    end(h, "g.1", "b")
    assert grants(h) == {"g.then": ["a", "b"]}


def test_cancelling_a_group_cancels_a_nested_group_too(h: Harness) -> None:
    inner = {"type": "group", "tasks": [{"type": "job"}]}
    h.submit({"type": "group", "id": "g", "tasks": [inner, {"type": "job"}]})
    h.turn()
    h.t.deliver(f"{P}/_/control", json.dumps({"cmd": "cancel", "ids": ["g"]}))
    h.turn()
    [outer] = h.results("g")
    [nested] = h.results("g.0")
    assert outer["status"] == nested["status"] == "cancelled"
    assert [d["status"] for d in h.results("g.0.0")] == ["cancelled"]
    assert h.d.flows.open == {} and h.d.entries == {} and h.journal.open_groups() == []
