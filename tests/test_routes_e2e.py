"""Routing rules end to end: retained rules from mosquitto_pub -r and the CLI, real workers
on a real mosquitto, tasks routed by hash, capability, glob and lane; TTL, deletion, bad
rules, and rules surviving a restart after the broker lost its retained messages."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from clawd.routing.expr import stable_hash
from tests.conftest import Broker, run_cli
from tests.listener import Listener


def start_fleet(tmp_path: Path, start_clawd: Any, cfg: Path, main: str, *others: str) -> list[Any]:
    """The distributor with worker ``main`` in one process, and worker-only processes."""
    ds = [start_clawd("-c", str(cfg), "run", env={"CLAWD_WORKER_ID": main})]
    for w in others:
        ds.append(
            start_clawd(
                "-c",
                str(cfg),
                "run",
                "--role",
                "worker",
                "--worker-id",
                w,
                env={"CLAWD_STATE_DIR": str(tmp_path / f"state-{w}")},
            )
        )
    return ds


def metrics(seen: Listener, pred: Any, after: float = 0.0) -> dict[str, Any]:
    """The first metrics snapshot taken after ``after`` (epoch s) that satisfies ``pred``."""

    def match(m: Any) -> bool:
        if m.topic != "clawd/metrics" or not m.payload:
            return False
        doc = json.loads(m.payload)
        return bool(doc["at"] > after and pred(doc))

    return json.loads(seen.wait(match)[0].payload)


def online(*ids: str) -> Any:
    return lambda doc: all(doc["workers"].get(w, {}).get("online") for w in ids)


def rules_are(*ids: str) -> Any:
    return lambda doc: sorted(r["id"] for r in doc.get("routes", [])) == sorted(ids)


def publish_rule(broker: Broker, rule_id: str, doc: dict[str, Any] | None) -> None:
    payload = ["-n"] if doc is None else ["-m", json.dumps(doc)]
    subprocess.run(
        ["mosquitto_pub", *broker.args, "-q", "1", "-r", "-t", f"clawd/routes/{rule_id}", *payload],
        check=True,
        timeout=10,
    )


def run_tasks(broker: Broker, seen: Listener, tasks: list[dict[str, Any]]) -> dict[str, str]:
    """Publish ``tasks`` (one mosquitto_pub, a message per line); task id -> worker."""
    by_lane: dict[str, list[str]] = {}
    for t in tasks:
        by_lane.setdefault(t.pop("lane", "normal"), []).append(json.dumps(t))
    for lane, lines in by_lane.items():
        subprocess.run(
            ["mosquitto_pub", *broker.args, "-q", "1", "-t", f"clawd/tasks/{lane}", "-l"],
            input="\n".join(lines) + "\n",
            text=True,
            check=True,
            timeout=10,
        )
    out = {}
    for t in tasks:
        [doc] = seen.json(f"clawd/results/{t['id']}")
        assert doc["status"] == "ok", doc
        out[t["id"]] = doc["worker"]
    return out


def echo(prefix: str, n: int, **kw: Any) -> list[dict[str, Any]]:
    return [{"id": f"{prefix}-{i}", "type": "echo", "input": i, **kw} for i in range(n)]


def test_hash_rules_pin_each_task_to_its_worker(tmp_path, broker, make_config, start_clawd):
    cfg = make_config()
    seen = Listener(broker.url, "clawd/metrics", "clawd/results/+")
    try:
        start_fleet(tmp_path, start_clawd, cfg, "w0", "w1", "w2")
        metrics(seen, online("w0", "w1", "w2"))
        # the seed's round robin: one rule per worker, hash(task_id) % N == index
        for i in range(3):
            rule = {"match": f"hash(task_id) % 3 == {i}", "target": f"w{i}", "priority": 500}
            publish_rule(broker, f"rr-{i}", rule)
        metrics(seen, rules_are("rr-0", "rr-1", "rr-2"))
        ran = run_tasks(broker, seen, echo("h", 30))
        expected = {tid: f"w{stable_hash(tid) % 3}" for tid in ran}
        assert ran == expected
        assert set(ran.values()) == {"w0", "w1", "w2"}
        snap = metrics(seen, lambda d: sum(d["distribution"]["rule_hits"].values()) == 30)
        wanted = Counter(expected.values())
        assert snap["distribution"]["rule_hits"] == {f"rr-{i}": wanted[f"w{i}"] for i in range(3)}
        assert snap["distribution"]["tasks_distributed"] == 30
        assert set(snap["distribution"]["worker_utilization"]) == {"w0", "w1", "w2"}
        assert snap["distribution"]["queue_depth"]["normal"] == 0
        assert snap["distribution"]["average_distribution_time"] > 0
    finally:
        seen.close()


def test_capability_rule_with_a_glob_target(tmp_path, broker, make_config, start_clawd):
    cfg = make_config()
    seen = Listener(broker.url, "clawd/metrics", "clawd/results/+")
    try:
        start_fleet(tmp_path, start_clawd, cfg, "cpu-1", "gpu-1", "gpu-2")
        metrics(seen, online("cpu-1", "gpu-1", "gpu-2"))
        # the seed's capability-based distribution: a condition on the task, a glob target
        rule = {"match": "task.meta.capability == 'gpu'", "target": "gpu-*", "priority": 600}
        publish_rule(broker, "route_by_capability_gpu", rule)
        metrics(seen, rules_are("route_by_capability_gpu"))
        ran = run_tasks(broker, seen, echo("c", 8) + echo("g", 8, meta={"capability": "gpu"}))
        gpu = {ran[f"g-{i}"] for i in range(8)}
        assert gpu == {"gpu-1", "gpu-2"}  # only the glob's workers, and the strategy spreads
        # tasks no rule matches go to any worker (round robin over all three)
        assert {ran[f"c-{i}"] for i in range(8)} == {"cpu-1", "gpu-1", "gpu-2"}
    finally:
        seen.close()


def test_ttl_expiry_and_deletion_by_empty_retained_payload_and_cli(
    tmp_path, broker, make_config, start_clawd, clawd_env
):
    cfg = make_config()
    seen = Listener(broker.url, "clawd/metrics", "clawd/results/+", "clawd/routes/+")
    try:
        start_fleet(tmp_path, start_clawd, cfg, "a", "b")
        metrics(seen, online("a", "b"))

        # added with the CLI, deleted with an empty retained payload
        out = run_cli(
            "-c", str(cfg), "route", "add", "to-b", "--target", "b", "--priority", "5",
            env=clawd_env,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        metrics(seen, rules_are("to-b"))
        listed = json.loads(
            run_cli("-c", str(cfg), "route", "list", "--json", env=clawd_env).stdout
        )
        assert [(r["id"], r["target"], r["priority"], r["hits"]) for r in listed] == [
            ("to-b", "b", 5, 0)
        ]
        assert set(run_tasks(broker, seen, echo("pin", 6)).values()) == {"b"}
        t0 = time.time()
        publish_rule(broker, "to-b", None)
        metrics(seen, rules_are(), after=t0)
        assert set(run_tasks(broker, seen, echo("free", 6)).values()) == {"a", "b"}

        # added with mosquitto_pub -r, deleted with the CLI
        publish_rule(broker, "to-a", {"target": "a"})
        metrics(seen, rules_are("to-a"))
        assert set(run_tasks(broker, seen, echo("pin-a", 4)).values()) == {"a"}
        t0 = time.time()
        out = run_cli("-c", str(cfg), "route", "rm", "to-a", env=clawd_env)
        assert out.returncode == 0 and out.stdout.strip() == "rule to-a deleted", out.stderr
        metrics(seen, rules_are(), after=t0)

        # a rule with a TTL ends by itself, and the distributor clears it from the broker
        publish_rule(broker, "brief", {"target": "b", "ttl": 1})
        seen.wait(lambda m: m.topic == "clawd/routes/brief" and m.payload == b"")
        metrics(seen, rules_are(), after=time.time())
        assert set(run_tasks(broker, seen, echo("after", 6)).values()) == {"a", "b"}
        retained = subprocess.run(
            ["mosquitto_sub", *broker.args, "-t", "clawd/routes/+", "--retained-only", "-W", "1"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert retained.stdout == ""
    finally:
        seen.close()


def test_a_bad_rule_is_rejected_and_never_obeyed(
    tmp_path, broker, make_config, start_clawd, clawd_env
):
    cfg = make_config()
    seen = Listener(broker.url, "clawd/metrics", "clawd/results/+", "clawd/errors")
    try:
        start_fleet(tmp_path, start_clawd, cfg, "a", "b")
        metrics(seen, online("a", "b"))
        publish_rule(broker, "good", {"target": "a", "match": "task.type == 'echo'"})
        metrics(seen, rules_are("good"))
        # a broken replacement of a rule in force: rejected, the rule in force stays
        broken = {"target": "b", "match": "task.type = 'echo'"}
        publish_rule(broker, "good", broken)
        [err] = seen.json("clawd/errors")
        assert err["topic"] == "clawd/routes/good"
        assert err["error"] == (
            "routing rule 'good': match: column 11: unexpected character '='"
            "; the rule in force under that id stays"
        )
        # a new bad rule: rejected too, never in force
        publish_rule(broker, "worse", {"target": "b", "priority": 9, "match": "hash(task.id) %"})
        [_, err] = seen.json("clawd/errors", count=2)
        assert (
            err["error"]
            == "routing rule 'worse': match: column 16: expected a value, found the end"
        )
        assert set(run_tasks(broker, seen, echo("x", 6)).values()) == {"a"}
        snap = metrics(seen, lambda d: d["distribution"]["rule_hits"].get("good") == 6)
        assert [r["id"] for r in snap["routes"]] == ["good"]
        assert snap["routes"][0]["match"] == "task.type == 'echo'"
        # the CLI checks a rule before publishing it
        out = run_cli(
            "-c", str(cfg), "route", "add", "nope", "--target", "a", "--match", "task.colour == 1",
            env=clawd_env,
        )  # fmt: skip
        assert out.returncode == 1
        assert out.stderr.strip() == (
            "clawd: routing rule 'nope': match: column 6: unknown task field 'colour' "
            "(known: id, type, lane, requires, meta, cost, attempt)"
        )
        # status shows the rule in force
        status = run_cli("-c", str(cfg), "status", env=clawd_env)
        assert "routes" in status.stdout and "good" in status.stdout, status.stdout
        assert "nope" not in status.stdout and "worse" not in status.stdout
    finally:
        seen.close()


def test_rules_survive_a_restart_when_the_broker_lost_them(
    tmp_path, broker, make_config, start_clawd, clawd_env
):
    cfg = make_config()
    seen = Listener(broker.url, "clawd/metrics")
    fleet = start_fleet(tmp_path, start_clawd, cfg, "a", "b")
    try:
        metrics(seen, online("a", "b"))
        publish_rule(broker, "keep", {"target": "b", "match": "task.lane == 'normal'"})
        metrics(seen, rules_are("keep"))
    finally:
        seen.close()
    for d in fleet:
        assert d.stop(signal.SIGTERM) == 0
    # the broker restarts with nothing retained: its persistence is gone
    broker.stop()
    for f in broker.dir.glob("*.db"):
        f.unlink()
    broker.start()
    out = subprocess.run(
        ["mosquitto_sub", *broker.args, "-t", "clawd/routes/+", "--retained-only", "-W", "1"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert out.stdout == ""
    seen = Listener(broker.url, "clawd/metrics", "clawd/results/+")
    try:
        start_fleet(tmp_path, start_clawd, cfg, "a", "b")
        metrics(seen, lambda d: online("a", "b")(d) and rules_are("keep")(d))
        assert set(run_tasks(broker, seen, echo("r", 6)).values()) == {"b"}
        listed = run_cli("-c", str(cfg), "route", "list", "--json", env=clawd_env)
        assert [r["id"] for r in json.loads(listed.stdout)] == ["keep"]
    finally:
        seen.close()


def test_priority_lane_with_a_dedicated_worker(tmp_path, broker, make_config, start_clawd):
    lanes = "[lanes.urgent]\nweight = 16\n"
    cfg = make_config(lanes)
    vip = make_config(lanes + '\n[worker]\nlanes = ["urgent"]\n', name="vip.toml")
    seen = Listener(broker.url, "clawd/metrics", "clawd/results/+")
    try:
        start_fleet(tmp_path, start_clawd, cfg, "general-1", "general-2")
        start_clawd(
            "-c",
            str(vip),
            "run",
            "--role",
            "worker",
            "--worker-id",
            "dedicated_worker",
            env={"CLAWD_STATE_DIR": str(tmp_path / "state-vip")},
        )
        metrics(seen, online("general-1", "general-2", "dedicated_worker"))
        # without a rule, urgent tasks go to any worker that serves the lane
        before = run_tasks(broker, seen, echo("u0", 6, lane="urgent"))
        assert set(before.values()) == {"general-1", "general-2", "dedicated_worker"}
        publish_rule(
            broker, "high_priority_lane", {"lanes": ["urgent"], "target": "dedicated_worker",
                                           "priority": 900},
        )  # fmt: skip
        metrics(seen, rules_are("high_priority_lane"))
        ran = run_tasks(broker, seen, echo("u", 8, lane="urgent") + echo("n", 8, lane="normal"))
        assert {ran[f"u-{i}"] for i in range(8)} == {"dedicated_worker"}
        # the dedicated worker serves only its lane
        assert {ran[f"n-{i}"] for i in range(8)} == {"general-1", "general-2"}
    finally:
        seen.close()


def test_load_based_a_rule_narrows_the_pool_and_least_loaded_picks(
    tmp_path, broker, make_config, start_clawd, clawd_env
):
    # the seed's load-based distribution, as docs/strategies.md shows it
    cfg = make_config('[distributor]\nstrategy = "least_loaded"\n\n[worker]\nconcurrency = 1\n')
    seen = Listener(broker.url, "clawd/metrics", "clawd/results/+")
    try:
        start_fleet(tmp_path, start_clawd, cfg, "other_1", "batch_1", "batch_2")
        metrics(seen, online("other_1", "batch_1", "batch_2"))
        out = run_cli(
            "-c", str(cfg), "route", "add", "pool_batch", "--match", "task.type == 'sleep'",
            "--target", "batch_*", "--priority", "100", env=clawd_env,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        metrics(seen, rules_are("pool_batch"))
        sleeps = [{"id": f"s-{i}", "type": "sleep", "input": 0.3} for i in range(6)]
        ran = run_tasks(broker, seen, sleeps + echo("e", 9))
        # the pool's tasks only on the pool, spread over it by load (one slot each: a busy
        # worker is never the least loaded)
        assert {ran[f"s-{i}"] for i in range(6)} == {"batch_1", "batch_2"}
        # tasks no rule matches are balanced over every worker
        assert {ran[f"e-{i}"] for i in range(9)} <= {"other_1", "batch_1", "batch_2"}
        assert "other_1" in {ran[f"e-{i}"] for i in range(9)}
        snap = metrics(seen, lambda d: d["distribution"]["rule_hits"].get("pool_batch") == 6)
        assert snap["distribution"]["tasks_distributed"] == 15
    finally:
        seen.close()
