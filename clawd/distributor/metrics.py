"""Counters and the retained ``clawd/metrics`` snapshot."""

from __future__ import annotations

from collections import Counter
from typing import Any

from clawd import clock
from clawd.envelope import encode

INTERVAL = 2.0


class Metrics:
    """What the distributor counts; ``snapshot`` is what ``clawd status`` shows."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.started = clock.wall()
        self.dispatch_wait_total = 0.0
        self.dispatch_count = 0
        #: seconds from submission to first dispatch, summed, and how many tasks
        self.distribution_total = 0.0
        self.distribution_count = 0
        #: the routing rules' version last published (a change publishes at once)
        self._routes_version = 0
        self._last_publish = 0.0
        self._last_counters: Counter[str] = Counter()
        self.rates: dict[str, float] = {}
        #: the optional Prometheus exporter (clawd.prometheus.Exporter)
        self.exporter: Any = None

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n
        if self.exporter is not None:
            self.exporter.count(name, n)

    def rate_limited(self, key: str) -> None:
        """A task waits for rate limit ``key`` (``type:<type>`` or ``rule:<rule id>``)."""
        self.counters["rate_limited"] += 1
        if self.exporter is not None:
            self.exporter.rate_limited(key)

    def dispatched(self, lane: str, waited: float) -> None:
        self.dispatch_count += 1
        self.dispatch_wait_total += waited
        if self.exporter is not None:
            self.exporter.observe_wait(lane, waited)

    def distributed(self, seconds: float) -> None:
        """A task's first dispatch, ``seconds`` after it was submitted."""
        self.distribution_total += max(0.0, seconds)
        self.distribution_count += 1
        if self.exporter is not None:
            self.exporter.observe_distribution(max(0.0, seconds))

    def observe_task(self, lane: str, type_: str, seconds: float) -> None:
        if self.exporter is not None:
            self.exporter.observe_task(lane, type_, seconds)

    def forget_worker(self, worker_id: str) -> None:
        """A forgotten worker's series leave the exporter too."""
        if self.exporter is not None:
            self.exporter.forget_worker(worker_id)

    def snapshot(self, d: Any) -> dict[str, Any]:
        now = clock.monotonic()
        lanes = {
            ln.name: {
                "weight": ln.weight,
                "depth": ln.waiting(),
                "rate_limited": ln.waiting() - len(ln.queue),
                "spilled": ln.spilled,
                "oldest_age": round(ln.oldest_age(now), 3),
                "served": ln.served,
            }
            for ln in d.lanes.lanes.values()
        }
        workers = {
            w.id: {
                "online": w.online,
                "capacity": w.capacity,
                "in_flight": w.in_flight,
                "utilisation": round(w.in_flight / w.capacity, 3) if w.capacity else 0.0,
                "done": w.done,
                "handlers": sorted(w.handlers),
                "capabilities": sorted(w.capabilities),
            }
            for w in d.fleet.workers.values()
        }
        routes = d.routes.snapshot()
        distribution = {
            "tasks_distributed": self.dispatch_count,
            "average_distribution_time": round(self.distribution_total / self.distribution_count, 6)
            if self.distribution_count
            else 0.0,
            "worker_utilization": {k: w["utilisation"] for k, w in workers.items()},
            "queue_depth": {k: ln["depth"] for k, ln in lanes.items()},
            "rule_hits": {r["id"]: r["hits"] for r in routes},
        }
        return {
            "at": clock.wall(),
            "uptime": round(clock.wall() - self.started, 1),
            "lanes": lanes,
            "in_flight": d.in_flight(),
            "delayed": len(d.tasks.delayed),
            "workers": workers,
            "counters": dict(self.counters),
            "rates": self.rates,
            "distributed": self.dispatch_count,
            "breakers": d.breakers.snapshot(),
            "avg_distribution_ms": round(1000 * self.dispatch_wait_total / self.dispatch_count, 3)
            if self.dispatch_count
            else 0.0,
            "distribution": distribution,
            "routes": routes,
            "rate_limits": d.rates.snapshot(d.lanes, now),
        }

    def maybe_publish(self, d: Any, now: float) -> dict[str, Any] | None:
        """Every INTERVAL: publish the retained snapshot; returns it when it did."""
        changed = d.routes.version != self._routes_version
        if now - self._last_publish < INTERVAL and not changed:
            return None
        self._routes_version = d.routes.version
        elapsed = now - self._last_publish if self._last_publish else INTERVAL
        self.rates = {
            k: round((v - self._last_counters.get(k, 0)) / elapsed, 2)
            for k, v in self.counters.items()
        }
        self._last_counters = Counter(self.counters)
        self._last_publish = now
        snap = self.snapshot(d)
        if self.exporter is not None:
            self.exporter.update(snap)
        d.outbox.publish(d.topics.metrics, encode(snap), retain=True, qos=1)
        return snap
