"""Lanes and credit flow end to end: real mosquitto, real distributor and worker processes.

Order and shares are asserted by counting (which results came before which), never by
the clock; the waits themselves are measured by ``python -m bench.lanes``.
"""

from __future__ import annotations

from typing import Any

import pytest

from clawd.client import Client
from clawd.config import load
from clawd.envelope import decode, encode
from tests.conftest import wait_until


@pytest.fixture
def cluster(make_config: Any, start_clawd: Any) -> Any:
    def make(workers: list[str], extra: str = "") -> Any:
        cfg = make_config(extra)
        d = start_clawd("-c", str(cfg), "run", "--role", "distributor")
        for wid in workers:
            start_clawd("-c", str(cfg), "run", "--role", "worker", "--worker-id", wid)
        wait_until(
            lambda: all(f"worker {w} online" in d.output() for w in workers),
            what=f"the distributor to see {workers}",
        )
        return load(str(cfg))

    return make


class Results:
    """The results of one test, in the order they arrived."""

    def __init__(self, client: Client) -> None:
        self.c = client
        self.order: list[dict[str, Any]] = []

    def until(self, done: Any, timeout: float = 60) -> None:
        """Take results until ``done(order)`` holds."""
        wait_until(lambda: done(self.order) or self._take(), timeout, "results")

    def _take(self) -> bool:
        """Wait for a result, then take every one already received."""
        m = self.c.next(0.5)
        while m is not None:
            if m.topic.startswith("clawd/results/"):
                self.order.append(decode(m.payload))
            m = self.c.next(0)
        return False

    def drain(self) -> None:
        """Take every result already received."""
        while (m := self.c.next(0)) is not None:
            if m.topic.startswith("clawd/results/"):
                self.order.append(decode(m.payload))

    def ids(self) -> list[str]:
        return [r["id"] for r in self.order]


def _publish(c: Client, env: dict[str, Any]) -> None:
    c.publish(f"clawd/tasks/{env['lane']}", encode(env), qos=1)


def test_high_task_waits_at_most_a_slot_under_a_low_backlog(cluster):
    cfg = cluster(["w1"], "[worker]\nconcurrency = 2\n")
    low = [{"type": "sleep", "input": 0.02, "lane": "low", "id": f"low-{i}"} for i in range(300)]
    with Client(cfg, [("clawd/results/+", 1)]) as c:
        r = Results(c)
        for env in low:
            _publish(c, env)
        r.until(lambda o: len(o) >= 1)  # the backlog is being worked through
        overtaken = []
        for i in range(20):  # high tasks keep arriving, each behind the low backlog
            r.drain()
            before = len(r.order)
            _publish(c, {"type": "sleep", "input": 0.01, "lane": "high", "id": f"high-{i}"})
            r.until(lambda o, i=i: f"high-{i}" in (x["id"] for x in o))
            overtaken.append(r.ids().index(f"high-{i}") - before)
        r.until(lambda o: len(o) == 320)
    assert all(x["status"] == "ok" for x in r.order)
    # low results that came in between a high task's submission and its own result: the
    # two slots' worth that were running (and one granted on the way), never the backlog
    assert max(overtaken) <= 6, overtaken
    # and the backlog was still there when the last high task ran
    assert r.ids()[-1].startswith("low-")


def test_low_lane_keeps_its_share_when_all_lanes_are_backlogged(cluster):
    cfg = cluster(["w1"], "[worker]\nconcurrency = 2\n")
    mixed = [
        {"type": "sleep", "input": 0.005, "lane": lane, "id": f"{lane}-{i}"}
        for i in range(150)
        for lane in ("low", "high")
    ]
    with Client(cfg, [("clawd/results/+", 1)]) as c:
        r = Results(c)
        for env in mixed:
            _publish(c, env)
        r.until(lambda o: len(o) == len(mixed))
    order = [x["lane"] for x in sorted(r.order, key=lambda x: x["started_at"])]
    # weights high 8 : low 1 -> low gets about 1 of every 9 slots, not zero
    first = order[:90]
    assert first.count("low") >= 6, first
    assert first.count("high") >= 60, first


def test_busy_worker_gets_nothing_more_while_another_idles(cluster):
    cfg = cluster(["wa", "wb"], "[worker]\nconcurrency = 1\n")
    with Client(cfg, [("clawd/results/+", 1), ("clawd/progress/long", 0)]) as c:
        r = Results(c)
        _publish(c, {"type": "sleep", "input": 2.0, "lane": "normal", "id": "long"})
        # its first progress report: the long task is running on one of the workers
        wait_until(lambda: (m := c.next(0.5)) is not None and m.topic == "clawd/progress/long")
        for i in range(5):
            _publish(c, {"type": "sleep", "input": 0.05, "lane": "normal", "id": f"s-{i}"})
        r.until(lambda o: len(o) == 6)
    results = {x["id"]: x for x in r.order}
    busy = results["long"]["worker"]
    assert all(results[f"s-{i}"]["worker"] != busy for i in range(5))
    assert r.ids()[-1] == "long"  # every short task finished while the long one ran
