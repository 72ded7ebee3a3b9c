"""The worker constructed directly, through an in-memory transport: grants in, outcomes
and hand-backs out, redelivered grants run once, unreadable grants survive."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import msgspec

from clawd import hookimpl, wire
from clawd.envelope import Task
from clawd.worker.core import Worker
from tests.memory import MemoryTransport, config, plugins

P = "clawd"


class Gate:
    """A handler that runs until the test opens its gate."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls: list[tuple[str, int]] = []

    def run(self, ctx: Any) -> str:
        self.calls.append((ctx.id, ctx.attempt))
        self.started.set()
        self.release.wait(30)
        return f"ran {ctx.id}"

    @hookimpl
    def clawd_register_handlers(self, register: Any) -> None:
        register("gate", self.run)


def make(tmp_path: Path) -> tuple[Worker, MemoryTransport, Gate]:
    cfg = config(tmp_path, '[worker]\nid = "w1"\nconcurrency = 2\n')
    gate = Gate()
    w = Worker(cfg, plugins(cfg, gate))
    t = MemoryTransport(w.on_message)
    w.attach(t)
    return w, t, gate


def grant(t: MemoryTransport, *tasks: tuple[str, int]) -> None:
    doc = {"tasks": [Task(id=i, type="gate", lane="normal", attempt=a) for i, a in tasks]}
    t.deliver(f"{P}/_/w/w1/tasks", msgspec.json.encode(doc))


def reports(t: MemoryTransport) -> list[wire.Report]:
    return [wire.report(p) for p in t.on(f"{P}/_/done/w1")]


def run_until(w: Worker, t: MemoryTransport, done: Any) -> None:
    for _ in range(200):  # each turn waits for the pool's wake-up, not a fixed time
        w.run_once(0.1)
        if done():
            return
    raise AssertionError("condition never held")


def test_grant_runs_once_and_reports_its_outcome_with_the_attempt(tmp_path: Path) -> None:
    w, t, gate = make(tmp_path)
    grant(t, ("t1", 3))
    w.run_once(0)
    assert gate.started.wait(10)
    grant(t, ("t1", 3))  # a redelivered grant of what already runs
    w.run_once(0)
    assert [r.running for r in reports(t)][-1] == [("t1", 3)]
    gate.release.set()
    run_until(w, t, lambda: any(r.outcomes for r in reports(t)))
    [o] = [o for r in reports(t) for o in r.outcomes]
    assert (o.id, o.attempt, o.status, o.result) == ("t1", 3, "ok", "ran t1")
    assert gate.calls == [("t1", 3)]


def test_drain_hands_back_what_did_not_finish(tmp_path: Path) -> None:
    w, t, gate = make(tmp_path)
    grant(t, ("t1", 1))
    w.run_once(0)
    assert gate.started.wait(10)
    w.drain(0.0)
    last = reports(t)[-1]
    assert last.handback == [("t1", 1)] and last.outcomes == []
    states = [msgspec.json.decode(p)["state"] for p in t.on(f"{P}/workers/w1")]
    assert states == ["draining", "offline"]
    gate.release.set()


def test_an_unreadable_grant_does_not_stop_the_worker(tmp_path: Path) -> None:
    w, t, gate = make(tmp_path)
    t.deliver(f"{P}/_/w/w1/tasks", b"[]")
    t.deliver(f"{P}/_/w/w1/tasks", b'{"tasks": [{"id": "x"}]}')
    grant(t, ("t2", 1))
    w.run_once(0)
    assert gate.started.wait(10)
    gate.release.set()
    run_until(w, t, lambda: any(r.outcomes for r in reports(t)))
    assert gate.calls == [("t2", 1)]
    errors = [msgspec.json.decode(p) for p in t.on(f"{P}/errors")]
    assert [e["topic"] for e in errors] == [f"{P}/_/w/w1/tasks"] * 2
    assert [e["payload_excerpt"] for e in errors] == ["[]", '{"tasks": [{"id": "x"}]}']
    assert "unreadable dispatch message" in errors[0]["error"]


def test_a_cancelled_dispatch_frees_its_slot_and_reports_nothing(tmp_path: Path) -> None:
    w, t, gate = make(tmp_path)
    grant(t, ("t1", 2))
    w.run_once(0)
    assert gate.started.wait(10)
    # a stale cancel (an older attempt) changes nothing
    t.deliver(f"{P}/_/w/w1/tasks", b'{"tasks": [], "cancel": [["t1", 1]]}')
    w.run_once(0)
    assert "t1" in w.running
    t.deliver(f"{P}/_/w/w1/tasks", b'{"tasks": [], "cancel": [["t1", 2]]}')
    w.run_once(0)
    assert "t1" not in w.running  # the slot is free at once; the thread is abandoned
    gate.release.set()
    grant(t, ("t2", 1))
    run_until(w, t, lambda: any(o.id == "t2" for r in reports(t) for o in r.outcomes))
    outcomes = [o.id for r in reports(t) for o in r.outcomes]
    assert outcomes == ["t2"]
    assert ("t1", 2) not in reports(t)[-1].running


def test_a_cancelled_run_delivered_again_is_not_run_again(tmp_path: Path) -> None:
    # a QoS 1 resend after a reconnect brings the grant again, then its cancel (found by
    # the simulator: python -m clawd.sim --seed 90 --tasks 150, before this fix)
    w, t, gate = make(tmp_path)
    grant(t, ("t1", 1))
    w.run_once(0)
    assert gate.started.wait(10)
    t.deliver(f"{P}/_/w/w1/tasks", b'{"tasks": [], "cancel": [["t1", 1]]}')
    w.run_once(0)
    gate.release.set()
    grant(t, ("t1", 1))
    t.deliver(f"{P}/_/w/w1/tasks", b'{"tasks": [], "cancel": [["t1", 1]]}')
    grant(t, ("t2", 1))
    run_until(w, t, lambda: any(o.id == "t2" for r in reports(t) for o in r.outcomes))
    assert gate.calls == [("t1", 1), ("t2", 1)]
    assert [o.id for r in reports(t) for o in r.outcomes] == ["t2"]


class Stuck:
    """A process-isolated handler that never returns; it writes its pid first."""

    def __init__(self, pidfile: Path) -> None:
        self.pidfile = pidfile

    def run(self, ctx: Any) -> None:
        import os

        self.pidfile.write_text(str(os.getpid()))
        threading.Event().wait()

    @hookimpl
    def clawd_register_handlers(self, register: Any) -> None:
        register("stuck", self.run, isolation="process")


def test_a_cancelled_process_handler_is_killed(tmp_path: Path) -> None:
    from tests.conftest import wait_until

    cfg = config(tmp_path, '[worker]\nid = "w1"\nconcurrency = 1\n')
    pidfile = tmp_path / "pid"
    w = Worker(cfg, plugins(cfg, Stuck(pidfile)))
    t = MemoryTransport(w.on_message)
    w.attach(t)
    doc = {"tasks": [Task(id="s", type="stuck", lane="normal", attempt=1)]}
    t.deliver(f"{P}/_/w/w1/tasks", msgspec.json.encode(doc))
    w.run_once(0)
    wait_until(lambda: pidfile.exists() and pidfile.read_text(), what="the child to start")
    pid = int(pidfile.read_text())
    t.deliver(f"{P}/_/w/w1/tasks", b'{"tasks": [], "cancel": [["s", 1]]}')
    w.run_once(0)
    assert w.running == {}

    def gone() -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        return state == "Z"

    wait_until(gone, what="the handler's process to be killed")
    w.pool.shutdown()


def test_a_grant_delivered_again_after_its_run_ended_is_answered_not_run(
    tmp_path: Path,
) -> None:
    w, t, gate = make(tmp_path)
    gate.release.set()
    grant(t, ("t1", 3))
    run_until(w, t, lambda: any(r.outcomes for r in reports(t)))
    t.take()
    grant(t, ("t1", 3))  # a QoS 1 duplicate, or a resend after a reconnect
    w.run_once(0)
    [again] = [o for r in reports(t) for o in r.outcomes]
    assert (again.id, again.attempt, again.status, again.result) == ("t1", 3, "ok", "ran t1")
    assert gate.calls == [("t1", 3)] and w.running == {}
    # a newer attempt of the same task is a new dispatch: it runs
    grant(t, ("t1", 4))
    run_until(w, t, lambda: ("t1", 4) in gate.calls)
    assert gate.calls == [("t1", 3), ("t1", 4)]


def test_an_id_submitted_again_once_forgotten_runs_again(tmp_path: Path) -> None:
    w, t, gate = make(tmp_path)
    gate.release.set()
    first = Task(id="t1", type="gate", lane="normal", attempt=1, submitted_at=1.0)
    t.deliver(f"{P}/_/w/w1/tasks", msgspec.json.encode({"tasks": [first]}))
    run_until(w, t, lambda: any(r.outcomes for r in reports(t)))
    # the same id and attempt, but a new submission (the journal forgot the old one)
    second = Task(id="t1", type="gate", lane="normal", attempt=1, submitted_at=2.0)
    t.deliver(f"{P}/_/w/w1/tasks", msgspec.json.encode({"tasks": [second]}))
    run_until(w, t, lambda: len(gate.calls) == 2)
    assert gate.calls == [("t1", 1), ("t1", 1)]


def test_a_dispatch_of_an_older_epoch_is_ignored(tmp_path: Path) -> None:
    """After a distributor takeover the worker follows the newest epoch: a deposed
    distributor's late dispatch (an older epoch) starts nothing and cancels nothing."""
    w, t, gate = make(tmp_path)

    def send(epoch: int, task_id: str, cancel: list[list[Any]] | None = None) -> None:
        doc = {
            "tasks": [Task(id=task_id, type="gate", lane="normal", attempt=1)] if task_id else [],
            "cancel": cancel or [],
            "epoch": epoch,
        }
        t.deliver(f"{P}/_/w/w1/tasks", msgspec.json.encode(doc))
        w.run_once(0)

    send(2, "new")
    assert gate.started.wait(10)
    send(1, "old", cancel=[["new", 1]])
    assert gate.calls == [("new", 1)] and "new" in w.running and "old" not in w.running
    gate.release.set()
    run_until(w, t, lambda: any(r.outcomes for r in reports(t)))
    send(0, "plain")  # epoch 0: a distributor with a journal of its own is always heard
    run_until(w, t, lambda: ("plain", 1) in gate.calls)
