"""Global rate limits end to end: tasks from mosquitto_pub on a real mosquitto, two worker
processes, a ``[handlers.<type>] rate_limit`` and a rule's ``rate_limit`` (from the CLI).

The limit is checked on the distributor's own record of each dispatch (a result's
``started_at`` is the time its attempt was dispatched), never on the test's clock: in
every window between two dispatches, no more went than the bucket allows."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from clawd.token_bucket import parse_rate
from tests.conftest import Broker, run_cli
from tests.listener import Listener
from tests.test_routes_e2e import metrics, online, rules_are, start_fleet


def publish(broker: Broker, lane: str, tasks: list[dict[str, Any]]) -> None:
    subprocess.run(
        ["mosquitto_pub", *broker.args, "-q", "1", "-t", f"clawd/tasks/{lane}", "-l"],
        input="".join(json.dumps(t) + "\n" for t in tasks),
        text=True,
        check=True,
        timeout=10,
    )


def results(seen: Listener, ids: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for task_id in ids:
        [doc] = seen.json(f"clawd/results/{task_id}")
        assert doc["status"] == "ok", doc
        out[task_id] = doc
    return out


def assert_within(rate_text: str, dispatched: list[float]) -> None:
    """No window [t_i, t_j] holds more dispatches than burst + rate * (t_j - t_i)."""
    rate = parse_rate(rate_text)
    times = sorted(dispatched)
    for i in range(len(times)):
        for j in range(i, len(times)):
            allowed = rate.burst + rate.per_second * (times[j] - times[i])
            # 1 ms of slack: the bucket runs on the monotonic clock, started_at is wall time
            assert j - i + 1 <= allowed + rate.per_second * 0.001, (
                f"{j - i + 1} dispatches in {times[j] - times[i]:.3f} s at {rate_text}"
            )


def test_a_type_limit_holds_across_two_workers_and_does_not_block_other_types(
    tmp_path, broker, make_config, start_clawd
):
    cfg = make_config('[handlers.echo]\nrate_limit = "5/s"\n')
    seen = Listener(broker.url, "clawd/metrics", "clawd/results/+")
    try:
        start_fleet(tmp_path, start_clawd, cfg, "a", "b")
        metrics(seen, online("a", "b"))
        echo = [{"id": f"e-{i}", "type": "echo", "input": i} for i in range(20)]
        publish(broker, "normal", echo)
        # published after every echo task, in the same lane: they do not wait behind them
        other = [{"id": f"s-{i}", "type": "sleep", "input": 0} for i in range(3)]
        publish(broker, "normal", other)
        done = results(seen, [t["id"] for t in echo + other])
        echo_at = [done[t["id"]]["started_at"] for t in echo]
        assert_within("5/s", echo_at)
        # the limit is global: both workers ran echo tasks, and together they kept it
        assert {done[t["id"]]["worker"] for t in echo} == {"a", "b"}
        assert max(done[t["id"]]["started_at"] for t in other) < max(echo_at)
        snap = metrics(seen, lambda d: d["counters"].get("rate_limited", 0) > 0)
        assert snap["rate_limits"]["type:echo"]["rate"] == "5/s"
    finally:
        seen.close()


def test_a_rule_limit_from_the_cli_holds_for_what_the_rule_routes(
    tmp_path, broker, make_config, start_clawd, clawd_env
):
    cfg = make_config()
    seen = Listener(broker.url, "clawd/metrics", "clawd/results/+")
    try:
        start_fleet(tmp_path, start_clawd, cfg, "a", "b")
        metrics(seen, online("a", "b"))
        out = run_cli(
            "-c", str(cfg), "route", "add", "slow", "--match", "task.meta.batch == true",
            "--target", "*", "--rate-limit", "4/s", env=clawd_env,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        metrics(seen, rules_are("slow"))
        batch = [{"id": f"b-{i}", "type": "echo", "input": i, "meta": {"batch": True}}
                 for i in range(12)]  # fmt: skip
        free = [{"id": f"f-{i}", "type": "echo", "input": i} for i in range(12)]
        publish(broker, "normal", batch + free)
        done = results(seen, [t["id"] for t in batch + free])
        assert_within("4/s", [done[t["id"]]["started_at"] for t in batch])
        # tasks the rule does not route are not limited: the last of them went before the
        # last rate-limited one
        assert max(done[t["id"]]["started_at"] for t in free) < max(
            done[t["id"]]["started_at"] for t in batch
        )
        snap = metrics(seen, lambda d: d["distribution"]["rule_hits"].get("slow") == 12)
        assert snap["rate_limits"]["rule:slow"]["rate"] == "4/s"
        # a bad limit is refused by the CLI before it is published
        out = run_cli(
            "-c", str(cfg), "route", "add", "bad", "--target", "a", "--rate-limit", "4/x",
            env=clawd_env,
        )  # fmt: skip
        assert out.returncode == 1
        assert "routing rule 'bad': rate_limit: expected a rate" in out.stderr
    finally:
        seen.close()
