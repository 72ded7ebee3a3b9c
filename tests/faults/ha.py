"""Two distributors on one PostgreSQL journal, workers, a real mosquitto: the leader is
killed (kill -9) or stalled (SIGSTOP, then SIGCONT) under load, and every acknowledged
task is accounted for as the fault harness does (:func:`tests.faults.harness.classify`).

    python -m bench.failover            # the table of takeover times (docs/deployment.md)

Each distributor has its own state dir and config file (the same broker, the same
``[journal] url``); the first started leads, the second stands by.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import Daemon, wait_until
from tests.faults.cluster import Cluster
from tests.faults.harness import Expect, Report, Run, Scenario, classify

LEADING = "leading the distributors"
STANDBY = "standby: another distributor leads"


class HACluster(Cluster):
    """A broker, distributors ``d1`` and ``d2`` over ``journal_url``, and workers."""

    def __init__(
        self, workdir: Path, journal_url: str, *, workers: int = 2, lock_timeout: float = 2.0
    ) -> None:
        super().__init__(workdir, workers=workers, start=False)
        self.journal_url = journal_url
        self.lock_timeout = lock_timeout
        self.distributors: dict[str, Daemon] = {}
        self.leader_name = ""
        base = self.config.read_text()
        self.configs: dict[str, Path] = {}
        for name in ("d1", "d2"):
            text = base.replace(f'{self.dir / "state"}"', f'{self.dir / ("state-" + name)}"')
            text += f'\n[journal]\nurl = "{journal_url}"\nlock_timeout = {lock_timeout}\n'
            path = self.dir / f"clawd-{name}.toml"
            path.write_text(text)
            self.configs[name] = path

    def start(self) -> None:
        from tests.faults.cluster import Observer

        self.broker.start()
        self.observer = Observer(self.broker)
        self.start_distributor_named("d1")
        wait_until(lambda: LEADING in self.distributors["d1"].output(), 30, "d1 to lead")
        self.leader_name = "d1"
        self.distributor = self.distributors["d1"]
        self.start_distributor_named("d2")
        wait_until(lambda: STANDBY in self.distributors["d2"].output(), 30, "d2 to stand by")
        for wid in self.workers:
            self.start_worker(wid)
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)
        self._supervisor.start()
        self.wait_workers_known(30)

    def start_distributor_named(self, name: str) -> Daemon:
        with self._lock:
            self._n += 1
            tag = f"{name}-{self._n}"
        d = Daemon(
            ["-c", str(self.configs[name]), "run", "--role", "distributor"], self.env, self.dir, tag
        )
        d.wait_for("READY=1", 30)
        self.distributors[name] = d
        return d

    @property
    def standby_name(self) -> str:
        return "d2" if self.leader_name == "d1" else "d1"

    def wait_takeover(self, timeout: float = 60) -> float:
        """Wait until the standby logs that it leads; returns the wall time it was seen."""
        new = self.distributors[self.standby_name]
        wait_until(lambda: LEADING in new.output(), timeout, f"{self.standby_name} to lead")
        seen = time.time()
        self.leader_name = self.standby_name
        self.distributor = new
        return seen

    def close(self) -> None:
        extra = [d for d in self.distributors.values() if d is not self.distributor]
        for d in extra:
            if d.proc.poll() is None:
                d.proc.send_signal(signal.SIGCONT)
            d.stop(signal.SIGKILL if d.proc.poll() is None else signal.SIGTERM, timeout=5)
        super().close()


@dataclass
class Takeover:
    """One failover: what was done, when, and how long until the standby led and until the
    first result after it."""

    fault: str
    at: float
    led_after: float = 0.0
    first_result_after: float = 0.0
    #: the old leader's exit status once it came back (stalled leader), else None
    old_exit: int | None = None
    old_log: str = ""
    #: the new leader ended a write of the old one that held the takeover up
    ended_write: bool = False
    #: tasks submitted right after the fault, before the standby led
    submitted_during: int = 0
    #: the standby made no broker connection before it led
    standby_quiet: bool = False


def _kill(run: Run, c: HACluster, out: list[Takeover], during: Any) -> None:
    run.wait_done(0.3)
    old = c.distributors[c.leader_name]
    t = time.time()
    run.fault(f"kill -9 leader {c.leader_name}", old.proc.pid, t)
    old.proc.send_signal(signal.SIGKILL)
    n = during()  # queued by the broker for the distributors' session, nobody connected
    led = c.wait_takeover()
    out.append(Takeover("kill -9", t, led_after=led - t, submitted_during=n))


def _stall(run: Run, c: HACluster, out: list[Takeover], during: Any) -> None:
    run.wait_done(0.3)
    old = c.distributors[c.leader_name]
    t = time.time()
    run.fault(f"SIGSTOP leader {c.leader_name}", old.proc.pid, t)
    old.proc.send_signal(signal.SIGSTOP)
    n = during()  # sent to the stopped leader's connection, never acknowledged by it
    led = c.wait_takeover()
    tk = Takeover("SIGSTOP", t, led_after=led - t, submitted_during=n)
    out.append(tk)
    run.wait_done(0.6)
    old.proc.send_signal(signal.SIGCONT)  # it wakes up believing it leads
    try:
        tk.old_exit = old.proc.wait(60)
    finally:
        tk.old_log = old.output()


def _term(run: Run, c: HACluster, out: list[Takeover], during: Any) -> None:
    """systemctl stop: the leader drains, closes its journal, then frees its lock."""
    run.wait_done(0.3)
    old = c.distributors[c.leader_name]
    t = time.time()
    run.fault(f"SIGTERM leader {c.leader_name}", old.proc.pid, t)
    old.proc.send_signal(signal.SIGTERM)
    n = during()
    led = c.wait_takeover()
    tk = Takeover("SIGTERM", t, led_after=led - t, submitted_during=n)
    out.append(tk)
    try:
        tk.old_exit = old.proc.wait(60)
    finally:
        tk.old_log = old.output()


FAULTS = {"kill": _kill, "stall": _stall, "term": _term}


def run_failover(
    fault: str, tasks: int, *, workdir: Path, journal_url: str, lock_timeout: float = 2.0
) -> tuple[Report, Takeover]:
    """Submit ``tasks`` sleep tasks, inject ``fault`` on the leader mid-run, account.
    Two thirds are submitted first; the last third right after the fault, while no
    distributor leads."""
    token = uuid.uuid4().hex[:6]
    sc = Scenario(f"leader-{fault}", "", lambda run: None)
    with HACluster(workdir, journal_url, lock_timeout=lock_timeout) as c:
        c.start()
        ids = [f"ha-{fault}-{token}-{i:06d}" for i in range(tasks)]
        expect = {i: Expect() for i in ids}
        run = Run(c, ids, 0.0)
        takeovers: list[Takeover] = []
        first = len(ids) * 2 // 3

        def submit(some: list[str]) -> int:
            for i in some:
                run.deliveries[i] = c.observer.submit({"id": i, "type": "sleep", "input": 0.05})  # type: ignore[union-attr]
            return len(some)

        injector = threading.Thread(
            target=FAULTS[fault],
            args=(run, c, takeovers, lambda: submit(ids[first:])),
            daemon=True,
        )
        injector.start()
        submit(ids[:first])
        injector.join(300)
        assert takeovers, "the fault was not injected:\n" + c.logs()
        budget = 120.0 + tasks * 0.05
        run.wait_acked(budget)
        acked = {i for i, d in run.deliveries.items() if d.acknowledged}
        obs: Any = c.observer
        obs.wait_results(acked, budget)
        marker = f"marker-{token}"
        obs.submit({"id": marker, "type": "no-such-type"})
        obs.wait_results({marker}, budget)
        report = classify(run, sc, expect, acked)
        tk = takeovers[0]
        new_log = c.distributors[c.leader_name].output()
        tk.ended_write = "held the takeover up" in new_log
        tk.standby_quiet = new_log.find("connected to") > new_log.find(LEADING) >= 0
        after = [min(r.values()) for r in obs.results.values() if min(r.values()) > tk.at]
        led_at = tk.at + tk.led_after
        later = [x for x in after if x >= led_at]
        tk.first_result_after = (min(later) - tk.at) if later else float("nan")
        if report.lost:
            print(c.logs())
    return report, tk
