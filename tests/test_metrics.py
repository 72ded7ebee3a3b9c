"""The retained clawd/metrics snapshot: what `clawd status` and dashboards read."""

from __future__ import annotations

import json

from tests.conftest import lines, run_cli, sub, wait_until


def test_metrics_snapshot_content(broker, make_config, start_clawd, clawd_env):
    cfg = make_config()
    start_clawd("-c", str(cfg), "run", "--worker-id", "m-1")
    for expr in ("1+1", "2+2", "1/0"):
        run_cli("-c", str(cfg), "submit", "compute", expr, "--wait", env=clawd_env)

    def snapshot() -> dict | None:
        (m,) = lines(sub(broker, "clawd/metrics", 1))  # retained: arrives at once
        return m if m["counters"].get("submitted") == 3 and m["distributed"] == 3 else None

    m = wait_until(snapshot, what="a snapshot taken after the three tasks")
    assert set(m["lanes"]) == {"high", "normal", "low"}
    assert m["lanes"]["normal"]["served"] == 3 and m["lanes"]["normal"]["depth"] == 0
    assert m["counters"]["submitted"] == 3 and m["counters"]["ok"] == 2
    assert m["counters"]["failed"] == 1 and m["counters"]["dead"] == 1
    assert m["distributed"] == 3 and m["avg_distribution_ms"] >= 0
    w = m["workers"]["m-1"]
    assert w["capacity"] == 4 and w["in_flight"] == 0 and w["done"] == 3
    assert "compute" in w["handlers"] and w["utilisation"] == 0.0
    assert "compute" in m["breakers"]["types"]
    status = json.loads(run_cli("-c", str(cfg), "status", "--json", env=clawd_env).stdout)
    assert status["metrics"]["counters"]["ok"] == 2
    assert status["workers"]["m-1"]["state"] == "online"
