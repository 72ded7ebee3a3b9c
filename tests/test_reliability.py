"""At-least-once under faults: short versions of the fault harness, plus retries, dead
letters, replay, idempotency, deadlines and restarts, against real processes."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from clawd.envelope import encode
from tests.conftest import run_cli
from tests.faults.cluster import Cluster
from tests.faults.harness import SLOTS, run_scenario


@pytest.mark.parametrize(
    "scenario",
    [
        "worker-kill",
        "distributor-kill",
        "worker-sigterm",
        "broker-restart",
        "broker-down",
        "poison",
        "hang",
        "exec-stubborn",
    ],
)
def test_no_acknowledged_task_is_lost(scenario: str, tmp_path: Path) -> None:
    r = run_scenario(scenario, 150, down_seconds=3, workdir=tmp_path, timeout=60)
    assert r.acked == 150
    assert r.lost == 0, r.examples["lost"][:10]
    assert r.dup_results == 0, r.examples["dup result"][:10]
    assert r.unexpected == 0, r.examples["unexpected"][:10]
    assert r.extra_execs <= max(r.in_flight, SLOTS * len(r.faults)), (r.extra_execs, r.in_flight)
    if scenario == "worker-kill":
        assert r.redelivery_max is not None and r.redelivery_max < 10.0


@pytest.fixture
def cluster(tmp_path: Path):
    c = Cluster(tmp_path, workers=1, start=False)
    yield c
    c.close()


def _start(c: Cluster, workers: bool = True) -> None:
    c.broker.start()
    from tests.faults.cluster import Observer

    c.observer = Observer(c.broker)
    c.start_distributor()
    if workers:
        c.start_worker("w1")
        c.wait_workers_known()


def _submit(c: Cluster, **env: object) -> None:
    assert c.observer is not None
    assert c.observer.submit(dict(env)).wait(10)


def test_flaky_task_succeeds_on_third_attempt(cluster: Cluster) -> None:
    _start(cluster)
    _submit(cluster, id="fl-1", type="flaky", input=3)
    assert cluster.observer.wait_results({"fl-1"}, 20)
    doc = cluster.observer.result("fl-1")
    assert doc["status"] == "ok" and doc["attempts"] == 3 and doc["result"] == 3
    attempts = [e["attempt"] for e in cluster.executions() if e["id"] == "fl-1"]
    assert attempts == [1, 2, 3]
    # backoff: the retries did not start back to back
    times = [e["t"] for e in cluster.executions() if e["id"] == "fl-1"]
    assert times[2] > times[0]


def test_exhausted_task_is_dead_lettered_with_history(cluster: Cluster) -> None:
    _start(cluster)
    _submit(cluster, id="mx-1", type="fail", input=None, max_attempts=2)
    assert cluster.observer.wait_results({"mx-1"}, 20)
    time.sleep(0.3)
    (letter,) = cluster.observer.dead["mx-1"]
    assert letter["reason"] == "max_attempts" and letter["attempts"] == 2
    assert [h["attempt"] for h in letter["history"]] == [1, 2]
    assert all("always fails" in h["error"] for h in letter["history"])
    assert cluster.observer.result("mx-1")["status"] == "failed"


def test_dlq_list_show_replay_purge(cluster: Cluster) -> None:
    _start(cluster)
    env = {**cluster.env, "CLAWD_STATE_DIR": str(cluster.dir / "state")}
    cfg = str(cluster.config)
    _submit(cluster, id="dl-1", type="flaky", input=3, max_attempts=1)
    assert cluster.observer.wait_results({"dl-1"}, 20)
    time.sleep(0.3)
    out = run_cli("-c", cfg, "dlq", "list", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert [d["id"] for d in json.loads(out.stdout)] == ["dl-1"]
    shown = json.loads(run_cli("-c", cfg, "dlq", "show", "dl-1", env=env).stdout)
    assert shown["reason"] == "max_attempts" and shown["history"][0]["attempt"] == 1
    # replay: a fresh set of attempts; flaky(3) fails again with max_attempts 1
    before = len(cluster.observer.results["dl-1"])
    out = run_cli("-c", cfg, "dlq", "replay", "dl-1", env=env)
    assert out.returncode == 0, out.stderr
    end = time.monotonic() + 15
    while len(cluster.observer.results["dl-1"]) == before and time.monotonic() < end:
        time.sleep(0.05)
    assert len(cluster.observer.results["dl-1"]) == before + 1
    # a fresh budget of attempts, but the fencing token goes on: attempt 2, counted as 1
    assert [e["attempt"] for e in cluster.executions() if e["id"] == "dl-1"] == [1, 2]
    assert all(json.loads(p)["attempts"] == 1 for p in cluster.observer.results["dl-1"])
    time.sleep(0.3)
    assert run_cli("-c", cfg, "dlq", "purge", env=env).returncode == 0
    time.sleep(0.5)
    assert json.loads(run_cli("-c", cfg, "dlq", "list", "--json", env=env).stdout) == []


def test_same_id_twice_runs_once_and_republishes(cluster: Cluster) -> None:
    _start(cluster)
    _submit(cluster, id="idem-1", type="echo", input="a")
    assert cluster.observer.wait_results({"idem-1"}, 20)
    first = cluster.observer.result("idem-1")
    cluster.observer.results.pop("idem-1")
    _submit(cluster, id="idem-1", type="echo", input="b")
    assert cluster.observer.wait_results({"idem-1"}, 20)
    assert cluster.observer.result("idem-1") == first  # the stored outcome stands
    assert len([e for e in cluster.executions() if e["id"] == "idem-1"]) == 1


def test_task_expiring_before_any_worker_is_dead_lettered(cluster: Cluster) -> None:
    _start(cluster, workers=False)
    # a worker has been seen once, so the type is known, then gone
    cluster.start_worker("w1")
    cluster.wait_workers_known()
    cluster.hold("w1")
    cluster.workers["w1"].stop(signal.SIGTERM)
    time.sleep(0.5)
    _submit(cluster, id="ttl-1", type="echo", input=1, ttl=1)
    time.sleep(2)
    cluster.release("w1")
    cluster.start_worker("w1")
    assert cluster.observer.wait_results({"ttl-1"}, 20)
    time.sleep(0.3)
    assert cluster.observer.result("ttl-1")["status"] == "failed"
    assert [d["reason"] for d in cluster.observer.dead["ttl-1"]] == ["expired"]
    assert not [e for e in cluster.executions() if e["id"] == "ttl-1"]


def test_queued_tasks_survive_distributor_restart_without_workers(cluster: Cluster) -> None:
    _start(cluster, workers=False)
    cluster.start_worker("w1")
    cluster.wait_workers_known()
    cluster.hold("w1")
    cluster.workers["w1"].stop(signal.SIGTERM)
    ids = {f"q-{i}" for i in range(50)}
    for i in sorted(ids):
        _submit(cluster, id=i, type="echo", input=i)
    time.sleep(0.5)
    assert cluster.distributor is not None
    cluster.distributor.stop(signal.SIGTERM)
    cluster.start_distributor()
    cluster.release("w1")
    cluster.start_worker("w1")
    assert cluster.observer.wait_results(ids, 30)
    assert all(cluster.observer.result(i)["status"] == "ok" for i in ids)
    assert len(cluster.executions()) == 50


def test_submission_is_durable_when_distributor_dies_right_after(cluster: Cluster) -> None:
    _start(cluster)
    ids = [f"k-{i}" for i in range(300)]
    deliveries = [
        cluster.observer.publish(
            "clawd/tasks/normal", encode({"id": i, "type": "echo", "input": i})
        )
        for i in ids
    ]
    assert all(d.wait(10) for d in deliveries)
    cluster.distributor.stop(signal.SIGKILL)
    cluster.start_distributor()
    assert cluster.observer.wait_results(set(ids), 30)
    assert all(len(cluster.observer.results[i]) == 1 for i in ids)
