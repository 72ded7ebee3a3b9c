"""An optional Prometheus endpoint (``pip install 'clawd[prometheus]'``).

The distributor feeds it from its loop; prometheus-client serves it from its own thread.
Latency histograms are per task type and lane, as the retained snapshot cannot carry them.
"""

from __future__ import annotations

import contextlib
from typing import Any

from clawd.errors import ConfigError

#: task and wait times range from sub-millisecond no-ops to long batch jobs
BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    900,
    3600,
)


class Exporter:
    """Counters, gauges and histograms on ``http://<addr>:<port>/metrics``."""

    def __init__(self, port: int, addr: str = "127.0.0.1") -> None:
        try:
            import prometheus_client as pc
        except ImportError:
            raise ConfigError(
                [
                    "[metrics] prometheus_port is set but prometheus-client is not installed "
                    "(pip install 'clawd[prometheus]')"
                ]
            ) from None
        r = self.registry = pc.CollectorRegistry()
        self.task_seconds = pc.Histogram(
            "clawd_task_seconds",
            "Handler run time of finished attempts",
            ["type", "lane"],
            registry=r,
            buckets=BUCKETS,
        )
        self.wait_seconds = pc.Histogram(
            "clawd_dispatch_wait_seconds",
            "Time from queued to dispatched",
            ["lane"],
            registry=r,
            buckets=BUCKETS,
        )
        self.outcomes = pc.Counter(
            "clawd_events",
            "Task events by kind (submitted, ok, failed, rejected, dead, ...)",
            ["event"],
            registry=r,
        )
        self.depth = pc.Gauge("clawd_lane_depth", "Queued tasks per lane", ["lane"], registry=r)
        self.oldest = pc.Gauge(
            "clawd_lane_oldest_seconds", "Age of the oldest queued task", ["lane"], registry=r
        )
        self.in_flight = pc.Gauge("clawd_in_flight", "Tasks running on workers", registry=r)
        self.utilisation = pc.Gauge(
            "clawd_worker_utilisation", "In-flight over capacity", ["worker"], registry=r
        )
        self.distributed = pc.Counter(
            "clawd_tasks_distributed", "Tasks dispatched to a worker the first time", registry=r
        )
        self.distribution_seconds = pc.Histogram(
            "clawd_distribution_seconds",
            "Time from submission to first dispatch",
            registry=r,
            buckets=BUCKETS,
        )
        self.route_hits = pc.Gauge(
            "clawd_route_hits",
            "Tasks dispatched under each routing rule in force",
            ["rule"],
            registry=r,
        )
        self._rules: set[str] = set()
        self.rate_waits = pc.Counter(
            "clawd_rate_limited",
            "Times a task waited for a rate limit's token (type:<type> or rule:<rule id>)",
            ["limit"],
            registry=r,
        )
        self.rate_waiting = pc.Gauge(
            "clawd_rate_limit_waiting",
            "Tasks waiting for a rate limit's token",
            ["limit"],
            registry=r,
        )
        self._limits: set[str] = set()
        self.broker_connected = pc.Gauge(
            "clawd_broker_connected", "1 while every broker connection is up", registry=r
        )
        self.broker_connected.set(1)
        self.broker_outages = pc.Counter(
            "clawd_broker_outages", "Times the broker connection was lost", registry=r
        )
        self.server, self.thread = pc.start_http_server(port, addr, registry=r)

    def count(self, event: str, n: int = 1) -> None:
        self.outcomes.labels(event).inc(n)

    def rate_limited(self, key: str) -> None:
        self.rate_waits.labels(key).inc()

    def observe_task(self, lane: str, type_: str, seconds: float) -> None:
        self.task_seconds.labels(type_, lane).observe(seconds)

    def observe_wait(self, lane: str, seconds: float) -> None:
        self.wait_seconds.labels(lane).observe(seconds)

    def observe_distribution(self, seconds: float) -> None:
        self.distributed.inc()
        self.distribution_seconds.observe(seconds)

    def update(self, snapshot: dict[str, Any]) -> None:
        for lane, ln in snapshot["lanes"].items():
            self.depth.labels(lane).set(ln["depth"])
            self.oldest.labels(lane).set(ln["oldest_age"])
        self.in_flight.set(snapshot["in_flight"])
        for wid, w in snapshot["workers"].items():
            self.utilisation.labels(wid).set(w["utilisation"])
        rules = {r["id"]: r["hits"] for r in snapshot.get("routes", ())}
        for gone in self._rules - rules.keys():
            with contextlib.suppress(KeyError):
                self.route_hits.remove(gone)
        for rule_id, n in rules.items():
            self.route_hits.labels(rule_id).set(n)
        self._rules = set(rules)
        limits = {k: v["waiting"] for k, v in snapshot.get("rate_limits", {}).items()}
        for gone in self._limits - limits.keys():
            with contextlib.suppress(KeyError):
                self.rate_waiting.remove(gone)
        for key, n in limits.items():
            self.rate_waiting.labels(key).set(n)
        self._limits = set(limits)

    def forget_worker(self, worker_id: str) -> None:
        """Drop the series of a worker the distributor forgot."""
        with contextlib.suppress(KeyError):
            self.utilisation.remove(worker_id)

    def broker(self, up: bool) -> None:
        """The broker connection went up or down (an outage is counted when it starts)."""
        self.broker_connected.set(1 if up else 0)
        if not up:
            self.broker_outages.inc()

    def close(self) -> None:
        self.server.shutdown()
