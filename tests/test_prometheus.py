"""The optional Prometheus endpoint, scraped over HTTP from a running distributor."""

from __future__ import annotations

import re
import urllib.request

from tests.conftest import free_port, run_cli, wait_until


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def test_prometheus_endpoint_has_histograms_and_gauges(make_config, start_clawd, clawd_env):
    port = free_port()
    cfg = make_config(f"[metrics]\nprometheus_port = {port}\n")
    start_clawd("-c", str(cfg), "run")
    for expr in ("2+2", "3*3", "1/0"):
        run_cli("-c", str(cfg), "submit", "compute", expr, "--wait", env=clawd_env)

    # the gauges follow the metrics tick: wait for the one after the three tasks
    def after_tasks() -> str | None:
        text = scrape(port)
        return text if re.search(r'clawd_lane_depth\{lane="normal"\} 0\.0', text) else None

    text = wait_until(after_tasks, what="a scrape after the three tasks")
    count = re.search(r'clawd_task_seconds_count\{lane="normal",type="compute"\} (\S+)', text)
    assert count is not None and float(count.group(1)) == 3.0
    assert re.search(r'clawd_events_total\{event="ok"\} 2\.0', text)
    assert re.search(r'clawd_events_total\{event="dead"\} 1\.0', text)
    assert re.search(r'clawd_lane_depth\{lane="high"\} 0\.0', text)
    assert 'clawd_dispatch_wait_seconds_bucket{lane="normal",le="0.001"}' in text
    # the distribution metrics: tasks distributed, and submission-to-dispatch times
    assert re.search(r"^clawd_tasks_distributed_total 3\.0$", text, re.M)
    assert re.search(r"^clawd_distribution_seconds_count 3\.0$", text, re.M)


def test_a_forgotten_worker_leaves_no_series() -> None:
    from prometheus_client import generate_latest

    from clawd.prometheus import Exporter

    e = Exporter(free_port())
    try:
        e.update({"lanes": {}, "in_flight": 0, "workers": {"gone": {"utilisation": 0.5}}})
        assert b'worker="gone"' in generate_latest(e.registry)
        e.forget_worker("gone")
        e.forget_worker("never-seen")
        assert b'worker="gone"' not in generate_latest(e.registry)
    finally:
        e.close()


def test_route_hits_follow_the_rules_in_force() -> None:
    from prometheus_client import generate_latest

    from clawd.prometheus import Exporter

    e = Exporter(free_port())
    base = {"lanes": {}, "in_flight": 0, "workers": {}}
    try:
        e.update({**base, "routes": [{"id": "rr-0", "hits": 4}, {"id": "rr-1", "hits": 2}]})
        text = generate_latest(e.registry).decode()
        assert 'clawd_route_hits{rule="rr-0"} 4.0' in text
        assert 'clawd_route_hits{rule="rr-1"} 2.0' in text
        e.update({**base, "routes": [{"id": "rr-1", "hits": 3}]})
        text = generate_latest(e.registry).decode()
        assert 'rule="rr-0"' not in text
        assert 'clawd_route_hits{rule="rr-1"} 3.0' in text
    finally:
        e.close()


def test_rate_limited_waits_are_counted_per_limit() -> None:
    from prometheus_client import generate_latest

    from clawd.prometheus import Exporter

    e = Exporter(free_port())
    base = {"lanes": {}, "in_flight": 0, "workers": {}}
    try:
        for _ in range(3):
            e.rate_limited("type:resize")
        e.rate_limited("rule:slow")
        waiting = {"type:resize": {"rate": "5/s", "tokens": 0.2, "waiting": 7}}
        e.update({**base, "rate_limits": waiting})
        text = generate_latest(e.registry).decode()
        assert 'clawd_rate_limited_total{limit="type:resize"} 3.0' in text
        assert 'clawd_rate_limited_total{limit="rule:slow"} 1.0' in text
        assert 'clawd_rate_limit_waiting{limit="type:resize"} 7.0' in text
        e.update({**base, "rate_limits": {}})  # the limit removed by a reload
        assert "clawd_rate_limit_waiting{" not in generate_latest(e.registry).decode()
    finally:
        e.close()
