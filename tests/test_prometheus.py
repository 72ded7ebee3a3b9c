"""The optional Prometheus endpoint, scraped over HTTP from a running distributor."""

from __future__ import annotations

import re
import time
import urllib.request

from tests.conftest import free_port, run_cli


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def test_prometheus_endpoint_has_histograms_and_gauges(make_config, start_clawd, clawd_env):
    port = free_port()
    cfg = make_config(f"[metrics]\nprometheus_port = {port}\n")
    start_clawd("-c", str(cfg), "run")
    for expr in ("2+2", "3*3", "1/0"):
        run_cli("-c", str(cfg), "submit", "compute", expr, "--wait", env=clawd_env)
    time.sleep(2.5)  # one metrics tick for the gauges
    text = scrape(port)
    count = re.search(r'clawd_task_seconds_count\{lane="normal",type="compute"\} (\S+)', text)
    assert count is not None and float(count.group(1)) == 3.0
    assert re.search(r'clawd_events_total\{event="ok"\} 2\.0', text)
    assert re.search(r'clawd_events_total\{event="dead"\} 1\.0', text)
    assert re.search(r'clawd_lane_depth\{lane="high"\} 0\.0', text)
    assert 'clawd_dispatch_wait_seconds_bucket{lane="normal",le="0.001"}' in text


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
