"""Routing rules in the distributor, driven through an in-memory transport and a
hand-moved clock: priority, busy targets, unable targets, TTL mid-dispatch, scope, the
journal across a restart, and the retained copy arriving again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clawd.distributor.core import Distributor
from clawd.journal import Journal
from tests.memory import FakeClock, MemoryTransport, plugins, status
from tests.test_distributor_unit import Harness, ok

P = "clawd"


@pytest.fixture
def clk() -> Iterator[FakeClock]:
    yield from FakeClock().install()


@pytest.fixture
def h(tmp_path: Path, clk: FakeClock) -> Harness:
    h = Harness(tmp_path, clk)
    h.online("w1", capacity=1)
    h.online("w2", capacity=1)
    return h


def rule(h: Harness, rule_id: str, doc: dict[str, Any] | None) -> None:
    h.t.deliver(f"{P}/routes/{rule_id}", b"" if doc is None else json.dumps(doc), retain=True)


def test_the_highest_priority_matching_rule_decides(h: Harness) -> None:
    rule(h, "low", {"target": "w1", "priority": 1})
    rule(h, "high", {"target": "w2", "priority": 9, "match": "task.meta.k == 1"})
    h.submit({"type": "job", "id": "a", "meta": {"k": 1}})
    h.turn()
    assert h.granted("w2") == [("a", 1)] and h.granted("w1") == []
    h.submit({"type": "job", "id": "b", "meta": {"k": 2}})
    h.turn()
    assert h.granted("w1") == [("b", 1)]
    assert {r["id"]: r["hits"] for r in h.d.routes.snapshot()} == {"high": 1, "low": 1}


def test_a_task_waits_for_its_rules_busy_targets(h: Harness) -> None:
    rule(h, "pin", {"target": "w1"})
    h.submit({"type": "job", "id": "a"})
    h.submit({"type": "job", "id": "b"})
    h.turn()
    assert h.granted("w1") == [("a", 1)]
    # w2 is idle, but the rule pins b to w1: it waits for w1's slot
    h.turn()
    assert h.granted("w2") == []
    h.report("w1", outcomes=[ok("a", 1)], running=[])
    h.turn()
    assert h.granted("w1") == [("b", 1)]


def test_a_rule_whose_targets_cannot_take_the_task_is_passed_over(h: Harness) -> None:
    rule(h, "nobody", {"target": "gone-*", "priority": 9})
    rule(h, "wrong-type", {"target": "w3", "priority": 8})
    h.t.deliver(f"{P}/workers/w3", status(capacity=1, handlers=["other"]), retain=True)
    rule(h, "fallback", {"target": "w2", "priority": 1})
    h.submit({"type": "job", "id": "a"})
    h.turn()
    assert h.granted("w2") == [("a", 1)]
    assert {r["id"]: r["hits"] for r in h.d.routes.snapshot()} == {
        "nobody": 0,
        "wrong-type": 0,
        "fallback": 1,
    }


def test_a_rule_expiring_mid_dispatch_lets_its_waiting_task_go(h: Harness, clk: FakeClock) -> None:
    rule(h, "brief", {"target": "w1", "ttl": 5})
    h.submit({"type": "job", "id": "a"})
    h.submit({"type": "job", "id": "b"})
    h.turn()
    assert h.granted("w1") == [("a", 1)]
    h.turn(4.9)
    assert h.granted("w2") == []  # still pinned behind a
    h.turn(0.2)  # the TTL ran out: b goes to the idle worker
    assert h.granted("w2") == [("b", 1)]
    # obeyed no more before the next tick removes it
    assert "brief" in h.d.routes.rules
    h.turn(0.5)
    assert h.d.routes.rules == {}
    # the distributor clears the expired rule from the broker, and from the journal
    assert (f"{P}/routes/brief", b"", True) in h.t.sent
    assert h.journal.routes() == []


def test_a_scoped_rule_ends_with_its_scope(h: Harness) -> None:
    rule(h, "batch", {"target": "w2", "scope": "parent"})
    h.submit({"type": "job", "id": "parent"})
    h.turn()
    assert h.granted("w2") == [("parent", 1)]
    h.submit({"type": "job", "id": "child"})
    h.turn()
    assert h.granted("w1") == []  # pinned to w2, busy with the parent
    h.report("w2", outcomes=[ok("parent", 1)], running=[])
    h.turn()
    h.turn(1.0)
    assert "batch" not in h.d.routes.rules
    assert (f"{P}/routes/batch", b"", True) in h.t.sent


def test_rules_come_back_from_the_journal_and_a_redelivered_copy_keeps_its_ttl(
    tmp_path: Path, h: Harness, clk: FakeClock
) -> None:
    doc = {"target": "w1", "ttl": 10, "priority": 3}
    rule(h, "r", doc)
    h.turn()
    added = h.d.routes.rules["r"].added_at
    h.journal.close()
    clk.advance(4)
    journal = Journal(tmp_path / "journal.db", fsync=False)
    d = Distributor(h.cfg, plugins(h.cfg), journal)
    t = MemoryTransport(d.on_message)
    d.attach(t)
    d.recover()
    assert d.routes.rules["r"].added_at == added
    # the broker's retained copy arrives again on reconnect: the same rule, TTL unchanged
    t.deliver(f"{P}/routes/r", json.dumps(doc), retain=True)
    d.run_once(0)
    assert d.routes.rules["r"].added_at == added
    # a changed document is a new version of the rule: its TTL starts again
    t.deliver(f"{P}/routes/r", json.dumps({**doc, "priority": 4}), retain=True)
    d.run_once(0)
    assert d.routes.rules["r"].added_at == added + 4
    clk.advance(8)
    d.run_once(0)
    assert d.routes.rules["r"].doc.priority == 4  # 8 s into its new 10
    journal.close()


def test_an_empty_payload_deletes_and_a_bad_rule_is_reported(h: Harness) -> None:
    rule(h, "r", {"target": "w1"})
    rule(h, "r", {"target": "w1", "match": "task.lane in"})
    h.turn()
    [err] = h.errors()
    assert err["topic"] == f"{P}/routes/r"
    assert err["error"].startswith("routing rule 'r': match: column 13: expected a value")
    assert "r" in h.d.routes.rules
    rule(h, "r", None)
    h.turn()
    assert h.d.routes.rules == {} and h.journal.routes() == []


def test_among_a_rules_targets_the_strategy_chooses(tmp_path: Path, clk: FakeClock) -> None:
    # the seed's load-based distribution: a rule narrows the pool, least_loaded picks
    h = Harness(tmp_path, clk, '[distributor]\nstrategy = "least_loaded"\n')
    for w in ("pool-1", "pool-2", "other"):
        h.online(w, capacity=2)
    rule(h, "pool", {"target": "pool-*", "priority": 100})
    h.submit({"type": "job", "id": "a"})
    h.turn()
    h.submit({"type": "job", "id": "b"})
    h.turn()
    # a went to pool-1 (a tie: lowest id), so pool-2 is the least loaded for b
    assert h.granted("pool-1") == [("a", 1)]
    assert h.granted("pool-2") == [("b", 1)]
    h.submit({"type": "job", "id": "c"})
    h.submit({"type": "job", "id": "d"})
    h.submit({"type": "job", "id": "e"})
    h.turn()
    assert len(h.granted("pool-1")) + len(h.granted("pool-2")) == 2
    assert h.granted("other") == []  # idle, but not in the rule's pool: e waits


def test_the_number_of_rules_is_bounded(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("clawd.routing.rules.MAX_RULES", 2)
    rule(h, "r1", {"target": "w1"})
    rule(h, "r2", {"target": "w1"})
    rule(h, "r3", {"target": "w1"})
    rule(h, "r2", {"target": "w2"})  # replacing one in force is not a new one
    h.turn()
    [err] = h.errors()
    assert err["error"] == "routing rule 'r3': 2 rules are in force already (delete some first)"
    assert sorted(h.d.routes.rules) == ["r1", "r2"]
    assert h.d.routes.rules["r2"].targets == ("w2",)
