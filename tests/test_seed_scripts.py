"""The seed's shell scripts, verbatim, against a real clawd: the claw.events interface.

tests/seed/ holds the scripts byte for byte as the document clawd was built from has them
(tests/seed/multi-agent-task-distribution.md). They call `claw.events` (the venv's
executable, put on PATH as a user's shell has it), `whoami`, `jq` and `bc`.
"""

from __future__ import annotations

import getpass
import json
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Broker
from tests.shell_helpers import SEED, Lines, shell_env, wait_results, wait_subscribed, wait_workers

USER = getpass.getuser()
#: jq writes in blocks to a pipe or file, line by line only to a terminal: stdbuf makes
#: it write lines, as in the seed's terminals (the scripts themselves are unchanged)
LINE_BUFFERED = ["stdbuf", "-oL"]
SCRIPTS = sorted(SEED.glob("*.sh"))


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    """This module's broker logs subscriptions: the tests wait on them, not on sleeps."""
    b = Broker(tmp_path / "mosquitto", extra="log_type subscribe\n")
    b.start()
    yield b
    b.stop(9)


@pytest.fixture
def env(make_config: Any, clawd_env: dict[str, str], start_clawd: Any) -> dict[str, str]:
    cfg = make_config()
    start_clawd("run", "-c", str(cfg))  # -c after the subcommand, as people type it
    return shell_env(clawd_env, cfg)


def _code_blocks(markdown: str) -> list[str]:
    return re.findall(r"```(?:bash|sh)\n(.*?)```", markdown, re.S)


def test_seed_scripts_are_the_documents_and_the_readmes_verbatim() -> None:
    document = _code_blocks((SEED / "multi-agent-task-distribution.md").read_text())
    readme = _code_blocks((ROOT / "README.md").read_text())
    assert len(SCRIPTS) == 6
    for script in SCRIPTS:
        text = script.read_text()
        # a block may hold several scripts (the Try-It-Now terminals): contained, whole lines
        assert any(text in block for block in document), f"{script.name} not in the document"
        assert any(text in block for block in readme), f"{script.name} not quoted in README"


def test_try_it_now_two_workers_share_the_tasks(env: dict[str, str], broker: Broker) -> None:
    collector = Lines([*LINE_BUFFERED, "bash", str(SEED / "try-it-now-2-collector.sh")], env)
    workers = [Lines(["bash", str(SEED / "try-it-now-1-worker.sh")], env) for _ in range(2)]
    try:
        wait_subscribed(broker, f"clawd/channels/agent.{USER}.results")
        ids = wait_workers(broker, f"agent.{USER}.tasks", 2)
        publish = Lines(["bash", str(SEED / "try-it-now-3-publish.sh")], env)
        assert publish.proc.wait(30) == 0, publish.stderr

        rows = sorted(line.split("\t") for line in collector.take(2))
        assert [r[1:] for r in rows] == [
            ["1", "Completed: Calculate 2+2"],
            ["2", "Completed: Analyze sentiment"],
        ]
        for timestamp, _, _ in rows:
            assert float(timestamp) > 1_600_000_000  # epoch seconds

        done = wait_results(env, "1", "2")
        # each task ran once, on one of the two workers, and the two shared the work
        assert {d["attempts"] for d in done.values()} == {1}
        assert sorted(d["worker"] for d in done.values()) == ids
        assert done["1"]["result"] == "[1] Processing: Calculate 2+2"
    finally:
        codes = [w.stop(signal.SIGINT) for w in workers]  # Ctrl-C: they drain and exit
        collector.stop()
    assert codes == [0, 0]


TASKS = [
    ({"type": "compute", "input": "2+2"}, "4"),
    ({"type": "compute", "input": "6*7"}, "42"),
    ({"type": "compute", "input": "2^10"}, "1024"),
    ({"type": "resize", "input": "cat.png"}, "Unknown task type"),
]


def test_worker_distributor_and_aggregator(
    env: dict[str, str], broker: Broker, tmp_path: Path
) -> None:
    work = tmp_path / "leader"
    work.mkdir()
    (work / "tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for t, _ in TASKS))
    completed = tmp_path / "results" / "completed.jsonl"
    completed.parent.mkdir()
    # the aggregator writes to /results/completed.jsonl: run with that path changed
    aggregator = (SEED / "aggregator.sh").read_text()
    assert aggregator.count("/results/completed.jsonl") == 1
    aggregator = aggregator.replace("/results/completed.jsonl", str(completed))

    collect = Lines([*LINE_BUFFERED, "bash", "-c", aggregator], env)
    workers = [
        Lines(["claw.events", "subexec", "agent.leader.tasks", "--", "./worker.sh"], env, SEED)
        for _ in range(2)
    ]
    try:
        wait_subscribed(broker, "clawd/channels/agent.worker.results")
        ids = wait_workers(broker, "agent.leader.tasks", 2)
        leader = Lines(["bash", str(SEED / "distribute-tasks.sh")], env, work)
        published = [line.split(": ")[1] for line in leader.take(len(TASKS))]
        assert leader.proc.wait(30) == 0, leader.stderr

        done = wait_results(env, *published)
        lines = _wait_lines(completed, len(TASKS))
    finally:
        codes = [w.stop(signal.SIGINT) for w in workers]
        collect.stop()
    assert codes == [0, 0]

    # every task ran exactly once, on one of the two workers, both of which worked
    assert {d["attempts"] for d in done.values()} == {1}
    assert {d["worker"] for d in done.values()} == set(ids)
    for task_id, (task, _) in zip(published, TASKS, strict=True):
        assert done[task_id]["result"] == f"Processing task {task_id} of type {task['type']}"

    # worker.sh publishes malformed JSON ({"<newline> "task_id": ...): it arrives as a
    # string payload, and the answer in it is right
    records = [json.loads(line) for line in lines]
    by_id = {}
    for rec in records:
        assert isinstance(rec["time"], float | int) and rec["time"] > 1_600_000_000
        assert rec["worker"] in ids
        assert isinstance(rec["result"], str)
        task_id = re.search(r'"task_id": "([^"]+)"', rec["result"]).group(1)  # type: ignore[union-attr]
        by_id[task_id] = rec
        # whoami inside the subexec command names the worker running it: the sender
        assert f'"worker": "{rec["worker"]}"' in rec["result"]
    assert sorted(by_id) == sorted(published)  # once each
    for task_id, (_, answer) in zip(published, TASKS, strict=True):
        assert f'"result": "{answer}"' in by_id[task_id]["result"]


def _wait_lines(path: Path, n: int, timeout: float = 30) -> list[str]:
    import time

    end = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < end:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= n:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"{path} has {len(lines)} of {n} lines: {lines}")
