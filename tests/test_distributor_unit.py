"""The distributor constructed directly, driven through an in-memory transport and a
hand-moved clock: fencing, hand-backs, poison, leases, the outbox, idempotency, and
messages that do not decode."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clawd import wire
from clawd.distributor.core import Distributor
from clawd.distributor.entry import State
from clawd.envelope import Rejected, parse_envelope
from clawd.journal import Journal
from clawd.plugin_guard import Failures, GuardedStrategy
from tests.memory import FakeClock, MemoryTransport, config, plugins, status

P = "clawd"


class Harness:
    def __init__(self, tmp_path: Path, clk: FakeClock, extra: str = "") -> None:
        self.clock = clk
        self.cfg = config(tmp_path, extra)
        self.journal = Journal(tmp_path / "journal.db", fsync=False)
        self.d = Distributor(self.cfg, plugins(self.cfg), self.journal)
        self.t = MemoryTransport(self.d.on_message)
        self.d.attach(self.t)

    def turn(self, advance: float = 0.0) -> None:
        self.clock.advance(advance)
        self.d.run_once(0)

    def online(self, worker: str, capacity: int = 2, session: str = "s1") -> None:
        self.t.deliver(
            f"{P}/workers/{worker}",
            status(capacity=capacity, session=session, handlers=["job"]),
            retain=True,
        )

    def submit(self, body: str | dict[str, Any]) -> None:
        payload = body if isinstance(body, str) else json.dumps(body)
        self.t.deliver(f"{P}/tasks/normal", payload)

    def report(self, worker: str, **doc: Any) -> None:
        self.t.deliver(f"{P}/_/done/{worker}", json.dumps(doc))

    def granted(self, worker: str) -> list[tuple[str, int]]:
        """(id, attempt) of every task dispatched to ``worker`` since the last call."""
        out = []
        keep = []
        for topic, payload, retain in self.t.sent:
            if topic == f"{P}/_/w/{worker}/tasks":
                out += [(t.id, t.attempt) for t in wire.grants(payload)]
            else:
                keep.append((topic, payload, retain))
        self.t.sent = keep
        return out

    def results(self, task_id: str) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.t.on(f"{P}/results/{task_id}")]

    def errors(self) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.t.on(f"{P}/errors")]


@pytest.fixture
def clk() -> Iterator[FakeClock]:
    yield from FakeClock().install()


@pytest.fixture
def h(tmp_path: Path, clk: FakeClock) -> Harness:
    return Harness(tmp_path, clk, "[retry]\nbackoff_base = 0.01\nbackoff_cap = 0.01\n")


def ok(task_id: str, attempt: int, result: Any = "done") -> dict[str, Any]:
    return {"id": task_id, "attempt": attempt, "status": "ok", "result": result, "ms": 1.0}


def test_outcome_of_a_superseded_attempt_is_ignored_and_counted(h: Harness) -> None:
    h.online("w1")
    h.submit({"type": "job", "id": "t1"})
    h.turn()
    assert h.granted("w1") == [("t1", 1)]
    # w1 keeps reporting but no longer mentions t1: its lease runs out
    h.report("w1", running=[])
    h.turn(advance=11)
    assert h.granted("w1") == [("t1", 2)]
    h.report("w1", outcomes=[ok("t1", 1, "stale")], running=[["t1", 2]])
    h.turn()
    assert h.results("t1") == []
    assert h.d.metrics.counters["stale_outcomes"] == 1
    h.report("w1", outcomes=[ok("t1", 2, "fresh")])
    h.turn()
    [doc] = h.results("t1")
    assert doc["result"] == "fresh" and doc["status"] == "ok" and doc["attempts"] == 2
    history = [
        r["status"]
        for r in json.loads(
            h.journal.db.execute("SELECT history FROM tasks WHERE id='t1'").fetchone()[0]
        )
    ]
    assert history == ["lease_expired", "ok"]


def test_hand_back_raises_the_fence_and_does_not_consume_an_attempt(h: Harness) -> None:
    h.online("w1")
    h.submit({"type": "job", "id": "t1", "max_attempts": 1})
    h.turn()
    assert h.granted("w1") == [("t1", 1)]
    h.t.deliver(f"{P}/workers/w1", status("draining", handlers=["job"]), retain=True)
    h.report("w1", handback=[["t1", 1]])
    h.online("w2")
    h.turn()
    # a new dispatch takes a higher token: (t1, 1) and (t1, 2) never mean the same dispatch
    assert h.granted("w2") == [("t1", 2)]
    assert h.d.entries["t1"].spent == 1
    # its one allowed attempt is still there: a failure now is attempt 1 of 1
    h.report(
        "w2",
        outcomes=[{"id": "t1", "attempt": 2, "status": "error", "error": "boom", "ms": 1.0}],
    )
    h.turn()
    [doc] = h.results("t1")
    assert doc["status"] == "failed" and doc["attempts"] == 1
    [letter] = [json.loads(p) for p in h.t.on(f"{P}/dead/normal")]
    assert letter["reason"] == "max_attempts"
    assert [r["status"] for r in letter["history"]] == ["handback", "error"]


def test_hand_back_survives_a_restart_of_the_distributor(
    tmp_path: Path, clk: FakeClock, h: Harness
) -> None:
    h.online("w1")
    h.submit({"type": "job", "id": "t1"})
    h.turn()
    h.t.deliver(f"{P}/workers/w1", status("draining", handlers=["job"]), retain=True)
    h.report("w1", handback=[["t1", 1]])
    h.turn()
    assert h.granted("w1") == [("t1", 1)]
    h.journal.close()
    again = Harness(tmp_path, clk)
    assert again.d.recover() == 1
    e = again.d.entries["t1"]
    assert (e.attempt, e.spent, e.state) == (1, 0, State.QUEUED)
    again.online("w2")
    again.turn()
    assert again.granted("w2") == [("t1", 2)]


def test_a_task_that_kills_its_workers_is_dead_lettered_as_poison(
    tmp_path: Path, clk: FakeClock
) -> None:
    h = Harness(tmp_path, clk, "[distributor]\npoison_after = 2\n")
    h.online("w1")
    h.online("w2")
    h.submit({"type": "job", "id": "bad"})
    h.turn()
    holder = h.d.fleet.holder("bad")
    assert holder is not None and h.granted(holder.id) == [("bad", 1)]
    h.t.deliver(f"{P}/workers/{holder.id}", status("offline", reason="lost"), retain=True)
    h.turn()
    other = "w2" if holder.id == "w1" else "w1"
    assert h.granted(other) == [("bad", 2)]
    # a suspect runs alone: nothing else goes to its worker while it runs
    h.submit({"type": "job", "id": "good"})
    h.turn()
    assert h.granted(other) == [] and h.d.entries["good"].state is State.QUEUED
    h.t.deliver(f"{P}/workers/{other}", status("offline", reason="lost"), retain=True)
    h.turn()
    [letter] = [json.loads(p) for p in h.t.on(f"{P}/dead/normal")]
    assert letter["id"] == "bad" and letter["reason"] == "poison"
    assert "bad" not in h.d.entries


def test_a_suspect_gets_a_worker_kept_free_for_it_under_load_that_never_stops(
    tmp_path: Path, clk: FakeClock
) -> None:
    """A task whose worker was lost runs alone. With a queue that never empties no worker
    goes idle by itself: one is held back from new work until it is, and the suspects run
    there one after the other, instead of waiting for the queue to drain."""
    h = Harness(tmp_path, clk, "[distributor]\npoison_after = 3\n")
    for w in ("w1", "w2", "w3"):
        h.online(w)
    for n in range(6):
        h.submit({"type": "job", "id": f"t{n}"})
    h.turn()
    running = {w: [tid for tid, _ in h.granted(w)] for w in ("w1", "w2", "w3")}
    suspects = set(running.pop("w3"))
    assert len(suspects) == 2
    h.t.deliver(f"{P}/workers/w3", status("offline", reason="lost"), retain=True)
    h.turn()
    assert all(h.d.entries[t].state is State.QUEUED for t in suspects)
    # more work keeps arriving, and every turn one worker finishes one task: a slot frees,
    # but never a whole worker unless one is held back for the suspects
    ran: list[str] = []
    for n in range(6, 60):
        h.submit({"type": "job", "id": f"t{n}"})
        w = ("w1", "w2")[n % 2]
        if running[w]:
            done = running[w].pop(0)
            attempt = h.d.entries[done].attempt
            h.report(w, outcomes=[{"id": done, "attempt": attempt, "status": "ok", "ms": 1.0}])
        h.turn()
        for worker in ("w1", "w2"):
            got = [tid for tid, _ in h.granted(worker)]
            if suspects & set(got):
                assert len(got) == 1 and running[worker] == [], (worker, got, running)
                ran += got
            running[worker] += got
        if len(ran) == len(suspects):
            break
    assert sorted(ran) == sorted(suspects)
    # while one worker was held back, the other went on taking new work
    assert h.d.entries["t6"].state is not State.QUEUED


def test_silent_worker_loses_its_tasks_and_is_forgotten_later(
    tmp_path: Path, clk: FakeClock
) -> None:
    h = Harness(tmp_path, clk, "[distributor]\nforget_after = 60\n")
    h.online("w1")
    h.submit({"type": "job", "id": "t1"})
    h.turn()
    assert h.granted("w1") == [("t1", 1)]
    h.turn(advance=11)  # no heartbeat: silent
    assert h.d.entries["t1"].state is State.QUEUED
    assert "w1" in h.d.fleet.workers
    h.t.take()
    h.turn(advance=61)
    assert "w1" not in h.d.fleet.workers
    cleared = [(t, p, r) for t, p, r in h.t.sent if p == b""]
    assert (f"{P}/workers/w1", b"", True) in cleared
    # the task type it announced is still known
    h.submit({"type": "job", "id": "t2"})
    h.turn()
    assert "t2" in h.d.entries


def test_result_stays_owed_until_acknowledged_and_is_republished_after_reconnect(
    h: Harness,
) -> None:
    h.online("w1")
    h.submit({"type": "job", "id": "t1"})
    h.turn()
    h.report("w1", outcomes=[ok("t1", 1)])
    h.turn()
    assert len(h.results("t1")) == 1
    assert [doc["id"] for doc, _ in h.journal.outbox()] == ["t1"]
    # the link drops before the broker acknowledged it: still owed
    h.t.connected.clear()
    h.turn(advance=1)
    assert [doc["id"] for doc, _ in h.journal.outbox()] == ["t1"]
    h.t.connected.set()
    h.turn(advance=1)
    assert len(h.results("t1")) == 2  # published again
    for _, tracked in h.t.tracked:
        tracked.acknowledged = True
    h.turn()
    assert h.journal.outbox() == []


def test_a_known_id_is_not_run_again_however_the_key_is_spelt(h: Harness) -> None:
    h.online("w1")
    escaped = '{"\\u0069d": "job-42", "type": "job", "input": 1}'
    h.submit(escaped)
    h.turn()
    assert h.granted("w1") == [("job-42", 1)]
    h.report("w1", outcomes=[ok("job-42", 1, "first")])
    h.turn()
    h.submit(escaped)
    h.submit({"id": "job-42", "type": "job", "input": 2})
    h.turn()
    assert h.granted("w1") == []
    docs = h.results("job-42")
    assert [d["result"] for d in docs] == ["first", "first", "first"]
    assert h.d.metrics.counters["submitted"] == 1


def test_the_envelope_says_whether_the_producer_chose_the_id() -> None:
    def chosen(payload: bytes) -> bool:
        return parse_envelope(["tasks", "normal"], payload, lanes={"normal"}, max_payload=10_000)[1]

    assert chosen(b'{"type": "job", "\\u0069d": "a"}')
    assert chosen(b'{"type": "job", "id": "a"}')
    assert not chosen(b'{"type": "job", "input": "\\"id\\""}')
    with pytest.raises(Rejected):
        chosen(b'{"type": "job", "\\u0069d": "a", "id": "b"}')


@pytest.mark.parametrize(
    ("topic", "payload", "what"),
    [
        ("_/done/w1", "[]", "worker report"),
        ("workers/w9", "1", "worker status"),
        ("workers/w9", '{"state": "dancing"}', "worker status"),
        ("_/control", '"x"', "control command"),
        ("_/control", '{"cmd": "reboot"}', "unknown control command"),
        ("progress/t1", "{", "progress report"),
        ("_/done/w1", '{"outcomes": [{"id": "t1"}]}', "worker report"),
    ],
)
def test_a_message_that_does_not_decode_is_reported_and_acknowledged(
    h: Harness, topic: str, payload: str, what: str
) -> None:
    mid = h.t.deliver(f"{P}/{topic}", payload)
    h.turn()
    [err] = h.errors()
    assert err["topic"] == f"{P}/{topic}" and what in err["error"]
    assert err["payload_excerpt"] == payload
    assert mid in h.t.acked
    # a bad status is not obeyed: no worker appears
    assert "w9" not in h.d.fleet.workers
    h.online("w1")
    h.submit({"type": "job", "id": "after"})
    h.turn()
    assert h.granted("w1") == [("after", 1)]


def test_task_query_answers_on_the_response_topic(h: Harness) -> None:
    h.online("w1")
    h.submit({"type": "job", "id": "t1"})
    h.turn()
    h.t.deliver(
        f"{P}/_/control",
        '{"cmd": "task", "id": "t1"}',
        response_topic="reply/1",
        correlation=b"c",
    )
    h.t.deliver(f"{P}/_/control", '{"cmd": "task", "id": "nope"}', response_topic="reply/2")
    h.turn()
    [running] = [json.loads(p) for p in h.t.on("reply/1")]
    assert running["state"] == "running" and running["worker"] == "w1"
    assert running["attempt"] == 1 and running["since"] > 0
    [unknown] = [json.loads(p) for p in h.t.on("reply/2")]
    assert unknown == {"id": "nope", "state": "unknown"}


def test_strategies_see_live_load(tmp_path: Path, clk: FakeClock) -> None:
    h = Harness(tmp_path, clk, '[distributor]\nstrategy = "least_loaded"\n')
    h.online("wa", capacity=4)
    h.online("wb", capacity=4)
    h.turn()
    for i in range(4):
        h.submit({"type": "job", "id": f"t{i}"})
        h.turn()
    assert len(h.granted("wa")) == 2 and len(h.granted("wb")) == 2
    assert h.d.fleet.workers["wa"].in_flight == 2


def test_task_query_says_until_when_a_retry_waits(tmp_path: Path, clk: FakeClock) -> None:
    h = Harness(tmp_path, clk, "[retry]\nbackoff_base = 100\nbackoff_cap = 100\n")
    h.online("w1")
    h.submit({"type": "job", "id": "t1"})
    h.turn()
    h.report("w1", outcomes=[{"id": "t1", "attempt": 1, "status": "error", "error": "x", "ms": 1}])
    h.turn()
    h.t.deliver(f"{P}/_/control", '{"cmd": "task", "id": "t1"}', response_topic="r")
    h.turn()
    [doc] = [json.loads(p) for p in h.t.on("r")]
    assert doc["state"] == "delayed" and doc["attempts"] == 1
    assert doc["until"] >= 1_700_000_000.0 + clk.now
    assert [r["status"] for r in doc["history"]] == ["error"]


class Exporter:
    """Records what the distributor tells a Prometheus exporter about workers."""

    def __init__(self) -> None:
        self.forgotten: list[str] = []

    def count(self, *a: Any) -> None: ...
    def observe_wait(self, *a: Any) -> None: ...
    def observe_distribution(self, *a: Any) -> None: ...
    def observe_task(self, *a: Any) -> None: ...
    def update(self, *a: Any) -> None: ...

    def forget_worker(self, worker_id: str) -> None:
        self.forgotten.append(worker_id)


def test_a_departed_worker_leaves_no_breaker_retained_topic_or_series(
    tmp_path: Path, clk: FakeClock
) -> None:
    h = Harness(tmp_path, clk, "[distributor]\nforget_after = 30\n")
    h.d.metrics.exporter = exporter = Exporter()
    h.online("w1")
    h.online("w2")
    h.submit({"type": "job", "id": "t1", "max_attempts": 1})
    h.turn()
    [(worker, _)] = [(w, g) for w in ("w1", "w2") for g in h.granted(w)]
    h.report(
        worker, outcomes=[{"id": "t1", "attempt": 1, "status": "error", "error": "x", "ms": 1}]
    )
    h.turn()
    assert f"{worker}/job" in h.d.breakers.snapshot()["workers"]
    h.t.deliver(f"{P}/workers/{worker}", status("offline", reason="stopped"), retain=True)
    h.turn()
    h.turn(advance=10)
    assert worker in h.d.fleet.workers  # not yet
    h.t.take()
    h.report("w1" if worker == "w2" else "w2", running=[])  # the other one stays alive
    h.turn(advance=25)
    assert worker not in h.d.fleet.workers and len(h.d.fleet.workers) == 1
    cleared = {t for t, p, r in h.t.sent if p == b"" and r}
    assert cleared == {
        f"{P}/workers/{worker}",
        f"{P}/breakers/worker/{worker}/job",
        f"{P}/breakers/eject/{worker}",
    }
    assert f"{worker}/job" not in h.d.breakers.snapshot()["workers"]
    assert exporter.forgotten == [worker]
    snap = h.d.metrics.snapshot(h.d)
    assert list(snap["workers"]) == ["w1" if worker == "w2" else "w2"]


def test_a_failing_strategy_does_not_lose_the_task(h: Harness) -> None:
    class Broken:
        def choose(self, task: Any, candidates: Any) -> Any:
            raise RuntimeError("broken strategy")

    # as Plugins.make_strategy hands every strategy to the distributor: guarded
    h.d.strategy = GuardedStrategy(Broken(), "broken", "test-plugin", Failures())
    h.online("w1")
    h.online("w2")
    h.submit({"type": "job", "id": "t1"})
    h.turn()
    assert h.granted("w1") + h.granted("w2") == [("t1", 1)]
    assert h.d.entries["t1"].state is State.RUNNING


def test_a_dead_letter_is_owed_like_its_result_and_republished_after_a_restart(
    tmp_path: Path, clk: FakeClock, h: Harness
) -> None:
    h.online("w1")
    h.submit({"type": "job", "id": "t1", "max_attempts": 1})
    h.turn()
    fail = {"id": "t1", "attempt": 1, "status": "error", "error": "boom", "ms": 1.0}
    h.report("w1", outcomes=[fail])
    h.turn()
    # the letter goes out tracked, before its result: the result settles only after both
    assert [topic for topic, _ in h.t.tracked] == [f"{P}/dead/normal", f"{P}/results/t1"]
    h.t.tracked[1][1].acknowledged = True
    h.turn()
    assert [doc["id"] for doc, _ in h.journal.outbox()] == ["t1"]
    # the distributor dies before the broker had the letter: the next one publishes it
    h.journal.close()
    again = Harness(tmp_path, clk)
    again.d.recover()
    again.turn()
    [letter] = [json.loads(p) for p in again.t.on(f"{P}/dead/normal")]
    assert letter["id"] == "t1" and letter["reason"] == "max_attempts"
    assert [topic for topic, _ in again.t.tracked] == [f"{P}/dead/normal", f"{P}/results/t1"]
    for _, tracked in again.t.tracked:
        tracked.acknowledged = True
    again.turn()
    assert again.journal.outbox() == []


def test_after_a_restart_a_task_still_running_is_reclaimed_not_run_again(
    tmp_path: Path, clk: FakeClock, h: Harness
) -> None:
    h.online("w1")
    h.submit({"type": "job", "id": "t1"})
    h.submit({"type": "job", "id": "t2"})
    h.turn()
    assert sorted(h.granted("w1")) == [("t1", 1), ("t2", 1)]
    h.journal.close()
    again = Harness(tmp_path, clk)
    assert again.d.recover() == 2
    again.online("w1")
    again.online("w2")
    again.turn()
    # both wait for a report rather than going to the idle w2 at once
    assert again.granted("w2") == [] and again.d.entries["t1"].state is State.DELAYED
    again.report("w1", running=[["t1", 1]])
    again.turn(advance=1)
    assert again.d.fleet.holder("t1") is again.d.fleet.workers["w1"]
    assert again.d.entries["t1"].state is State.RUNNING
    # t2 is not listed: one liveness timeout later it runs again, with a new token
    again.turn(advance=4)
    again.report("w1", running=[["t1", 1]])
    again.report("w2", running=[])
    again.turn(advance=6)
    assert again.granted("w1") + again.granted("w2") == [("t2", 2)]
    again.report("w1", outcomes=[ok("t1", 1)])
    again.turn()
    [doc] = again.results("t1")
    assert doc["status"] == "ok" and doc["attempts"] == 1 and doc["worker"] == "w1"


def test_a_worker_heard_again_reclaims_its_queued_task_and_a_newer_token_wins(
    h: Harness,
) -> None:
    h.online("w1")
    h.submit({"type": "job", "id": "t1"})
    h.submit({"type": "job", "id": "t2"})
    h.turn()
    assert sorted(h.granted("w1")) == [("t1", 1), ("t2", 1)]
    h.turn(advance=11)  # a stall: w1 is silent, its tasks requeued
    assert h.d.entries["t1"].state is State.QUEUED
    # t2 goes to w2 meanwhile (token 2); t1 is still queued when w1 is heard again
    h.online("w2", capacity=1)
    h.d.entries["t2"], h.d.entries["t1"]  # both open
    h.turn()
    [(moved, token)] = h.granted("w2")
    stayed = "t1" if moved == "t2" else "t2"
    assert token == 2
    h.report("w1", running=[["t1", 1], ["t2", 1]])
    h.turn()
    assert h.granted("w1") == []
    assert h.d.fleet.holder(stayed) is h.d.fleet.workers["w1"]
    assert h.d.fleet.holder(moved) is h.d.fleet.workers["w2"]
    # the superseded run's outcome does not count: the newer token wins
    h.report("w1", outcomes=[ok(stayed, 1), ok(moved, 1, "stale")])
    h.report("w2", outcomes=[ok(moved, 2, "fresh")])
    h.turn()
    [kept] = h.results(stayed)
    [fresh] = h.results(moved)
    assert kept["attempts"] == 1 and kept["worker"] == "w1"
    assert fresh["result"] == "fresh" and fresh["worker"] == "w2"


def test_a_worker_coming_online_gets_its_breaker_topics_reconciled(h: Harness) -> None:
    # a previous run of the distributor left an open state retained for w1; this run has
    # no breaker for it: the topics about w1 and its types are cleared when it comes online
    h.online("w1")
    h.turn()
    sent = {t: p for t, p, r in h.t.take() if r and "/breakers/" in t}
    assert sent == {
        f"{P}/breakers/type/job": b"",
        f"{P}/breakers/worker/w1/job": b"",
        f"{P}/breakers/eject/w1": b"",
    }
    # the breakers this run has are republished as they are when w1 comes back online
    h.submit({"type": "job", "id": "t1"})
    h.turn()
    assert h.granted("w1") == [("t1", 1)]
    h.report("w1", outcomes=[ok("t1", 1)])
    h.turn()
    h.t.deliver(f"{P}/workers/w1", status("offline", reason="stopped"), retain=True)
    h.turn()
    h.t.take()
    h.online("w1", session="s2")
    h.turn()
    sent = {t: p for t, p, r in h.t.take() if r and "/breakers/" in t}
    assert json.loads(sent[f"{P}/breakers/worker/w1/job"])["state"] == "closed"
    assert json.loads(sent[f"{P}/breakers/type/job"])["state"] == "closed"
    assert sent[f"{P}/breakers/eject/w1"] == b""


def test_a_worker_back_after_a_loss_waits_for_its_report_and_is_not_forgotten(
    tmp_path: Path, clk: FakeClock
) -> None:
    h = Harness(tmp_path, clk, "[distributor]\nforget_after = 30\n")
    h.online("w1")
    h.turn()
    h.t.deliver(f"{P}/workers/w1", status("offline", reason="lost"), retain=True)
    h.turn(advance=25)
    h.online("w1")  # the same process, reconnected
    h.submit({"type": "job", "id": "t1"})
    h.turn()
    assert h.granted("w1") == [] and not h.d.fleet.workers["w1"].online
    h.turn(advance=6)  # past forget_after since the loss, not since it came back
    assert "w1" in h.d.fleet.workers
    h.report("w1", running=[])
    h.turn()
    assert h.granted("w1") == [("t1", 1)]
