"""A worker raises its concurrency under backlog and the distributor's credit follows."""

from __future__ import annotations

import time

from clawd.client import Client
from clawd.config import load
from clawd.envelope import decode, encode


def test_worker_concurrency_follows_the_backlog(make_config, start_clawd):
    cfg_path = make_config("[worker]\nconcurrency = 1\nmin_concurrency = 1\nmax_concurrency = 4\n")
    start_clawd("-c", str(cfg_path), "run", "--role", "distributor")
    start_clawd("-c", str(cfg_path), "run", "--role", "worker", "--worker-id", "auto")
    cfg = load(str(cfg_path))
    capacities = []
    with Client(cfg, [("clawd/workers/auto", 1)]) as c:
        for i in range(300):
            env = {"type": "sleep", "input": 0.1, "id": f"s-{i}"}
            c.publish("clawd/tasks/normal", encode(env), qos=1)
        end = time.monotonic() + 30
        while time.monotonic() < end and max(capacities, default=0) < 4:
            m = c.next(0.5)
            if m is not None and m.payload:
                capacities.append(decode(m.payload)["capacity"])
    assert capacities[0] == 1
    assert max(capacities) == 4, capacities
