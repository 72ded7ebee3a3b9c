"""Circuit breakers end to end: a flapping worker is skipped, a failing type is held."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from clawd.client import Client
from clawd.config import load
from clawd.envelope import decode, encode
from tests.conftest import lines, sub, wait_until

BREAKERS = """
[retry]
max_attempts = 20
backoff_base = 0.01
backoff_cap = 0.05

[breakers]
window = 6
minimum_calls = 3
failure_rate = 0.5
open_seconds = 60.0
eject_after = 1000
hold_seconds = 1.5
"""


def setup(make_config: Any, start_clawd: Any, log: Path) -> Any:
    cfg = make_config(BREAKERS)
    env = {"CLAWD_TEST_EXEC_LOG": str(log)}
    distributor = start_clawd("-c", str(cfg), "run", "--role", "distributor")
    good = start_clawd("-c", str(cfg), "run", "--role", "worker", "--worker-id", "good", env=env)
    bad = start_clawd(
        "-c",
        str(cfg),
        "run",
        "--role",
        "worker",
        "--worker-id",
        "bad",
        env={**env, "CLAWD_TEST_FAIL": "1"},
    )
    wait_until(
        lambda: all(f"worker {w} online" in distributor.output() for w in ("good", "bad")),
        what="the distributor to see both workers",
    )
    return load(str(cfg)), good, bad


def collect(cfg: Any, envs: list[dict[str, Any]], topic: str = "clawd/results/+") -> list[dict]:
    out: list[dict[str, Any]] = []
    with Client(cfg, [(topic, 1)]) as c:
        for env in envs:
            c.publish("clawd/tasks/normal", encode(env), qos=1)
        end = time.monotonic() + 30
        while len(out) < len(envs) and time.monotonic() < end:
            m = c.next(1)
            if m is not None:
                out.append(decode(m.payload))
    return out


def test_flapping_worker_is_skipped_for_that_type(tmp_path, broker, make_config, start_clawd):
    log = tmp_path / "exec.jsonl"
    cfg, good, bad = setup(make_config, start_clawd, log)
    opened = sub(broker, "clawd/breakers/worker/bad/picky", 1, 20)
    envs = [{"type": "picky", "input": i, "id": f"p-{i}"} for i in range(30)]
    results = collect(cfg, envs)
    assert len(results) == 30
    assert [r for r in results if r["status"] != "ok"] == []
    assert {r["worker"] for r in results} == {"good"}
    (change,) = lines(opened)
    assert change["state"] == "open"
    pids = [json.loads(x)["pid"] for x in log.read_text().splitlines()]
    on_bad = pids.count(bad.proc.pid)
    # the bad worker got the calls needed to judge it, then nothing while open
    assert 3 <= on_bad <= 6, on_bad
    assert pids.count(good.proc.pid) == 30

    def snapshot() -> dict | None:
        (m,) = lines(sub(broker, "clawd/metrics", 1))  # retained: arrives at once
        b = m["breakers"]["workers"].get("bad/picky")
        return b if b is not None and b["rejected"] > 0 else None

    # the snapshot is taken every 2 s: the first one after the batch shows the breaker
    breaker = wait_until(snapshot, what="a metrics snapshot with the open breaker")
    assert breaker["state"] == "open"


def test_failing_type_is_held_then_dead_lettered(tmp_path, make_config, start_clawd):
    log = tmp_path / "exec.jsonl"
    cfg, _good, _bad = setup(make_config, start_clawd, log)
    envs = [{"type": "fail", "input": i, "id": f"f-{i}"} for i in range(10)]
    dead = collect(cfg, envs, "clawd/dead/normal")
    assert len(dead) == 10
    reasons = [d["reason"] for d in dead]
    assert reasons.count("circuit_open") >= 5, reasons
    runs = len(log.read_text().splitlines())
    # 20 attempts each would be 200 runs: the open breaker held them instead
    assert runs <= 20, runs
