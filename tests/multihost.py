"""clawd across hosts: a broker, a distributor, workers and a producer each on a host of
its own (:mod:`tests.netns`), a fault on the network, and Jepsen-style accounting.

Every submission carries a unique id; the producer host records which ones the broker
acknowledged and every result message; the workers log every execution. Each
acknowledged id then ends as exactly one of: ``ok``, ``lost`` (no result: the promise is
broken), or ``unexpected`` (a result other than the expected one); ``duplicated`` counts
extra executions (allowed, bounded by what was in flight when the fault hit) and
``dup results`` distinct second results (never allowed: a late outcome of a superseded
attempt must be fenced off). The classification is the one of :mod:`tests.faults.harness`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clawd.envelope import decode
from clawd.systemd import NotifyListener
from tests.conftest import MOSQUITTO, ROOT, daemon_env, json_lines, wait_until
from tests.faults.harness import Expect, Run, Scenario, classify
from tests.netns import Host, Network

CONFIG = """
[worker]
concurrency = 4
drain_timeout = 1.0

[distributor]
liveness_timeout = 3.0

[retry]
backoff_base = 0.2
backoff_cap = 1.0
"""
#: slots per worker (CONFIG's concurrency)
SLOTS = 4


class HostDaemon:
    """``python -m clawd run`` on a host; started once it has sent READY=1."""

    def __init__(self, host: Host, workdir: Path, tag: str, args: list[str], env: dict[str, str]):
        self.host = host
        self.tag = tag
        self.notify = NotifyListener(workdir / f"notify-{tag}.sock")
        self.log_path = workdir / f"{tag}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = host.popen(
            [sys.executable, "-m", "clawd", *args],
            env={**env, "NOTIFY_SOCKET": str(self.notify.path)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        try:
            self.notify.wait_for("READY=1", self.proc, timeout)
        except RuntimeError as exc:
            raise AssertionError(f"{self.tag}: {exc}:\n{self.output()[-3000:]}") from None
        self.notify.follow()

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.notify.close()


class Producer:
    """The producer host's :mod:`tests.multihost_client`, seen from the test: what was
    acknowledged, every result, dead letter and worker state. Quacks like the fault
    harness's observer, so its classification applies."""

    def __init__(self, host: Host, url: str, env: dict[str, str]) -> None:
        self.proc = host.popen(
            [sys.executable, "-m", "tests.multihost_client", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self.acked: set[str] = set()
        self.results: dict[str, dict[bytes, float]] = defaultdict(dict)
        self.dead: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.worker_state: dict[str, str] = {}
        #: (time received, the distributor's counters) of every metrics snapshot
        self.metrics: list[tuple[float, dict[str, int]]] = []
        self.ready = threading.Event()
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self.ready.wait(60):
            raise AssertionError("the producer host did not connect")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            ev = json.loads(line)
            kind = ev["ev"]
            with self._cond:
                if kind == "ready":
                    self.ready.set()
                elif kind == "acked":
                    self.acked.add(ev["id"])
                elif kind == "result":
                    self.results[ev["id"]].setdefault(ev["payload"].encode(), ev["t"])
                elif kind == "dead":
                    self.dead[ev["id"]].append(ev["doc"])
                elif kind == "worker":
                    self.worker_state[ev["id"]] = ev["state"]
                elif kind == "metrics":
                    self.metrics.append((ev["t"], ev["counters"]))
                self._cond.notify_all()

    def submit(self, envelopes: list[dict[str, Any]]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"submit": envelopes}) + "\n")
        self.proc.stdin.flush()

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def result(self, task_id: str) -> dict[str, Any] | None:
        docs = list(self.results.get(task_id, {}))
        return decode(docs[-1]) if docs else None

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


LEADING = "leading the distributors"
STANDBY = "standby: another distributor leads"


class PgHost:
    """A private PostgreSQL (initdb + pg_ctl) on a host of its own, listening on the
    host's address only (its own port, never the machine's server on 5432)."""

    PORT = 55432

    def __init__(self, host: Host) -> None:
        from tests.postgres import _binary

        initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise RuntimeError("PostgreSQL server binaries are not installed")
        self.initdb, self.pg_ctl = initdb, pg_ctl
        self.host = host
        # a directory of its own, which the postgres user can reach (a test's tmp_path
        # is private to root)
        self.dir = Path(tempfile.mkdtemp(prefix="clawd-pg-"))
        self.data = self.dir / "data"
        self.user = "postgres"
        self.url = f"postgresql://{self.user}@{host.addr}:{self.PORT}/postgres"
        self.started = False

    def _as_postgres(self, *argv: str) -> list[str]:
        return ["runuser", "-u", self.user, "--", *argv] if os.geteuid() == 0 else list(argv)

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        if os.geteuid() == 0:
            shutil.chown(self.dir, self.user)
        subprocess.run(
            self._as_postgres(
                self.initdb, "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8"
            ),
            check=True,
            capture_output=True,
        )
        with open(self.data / "pg_hba.conf", "a") as f:
            f.write(f"host all all {self.host.addr.rsplit('.', 1)[0]}.0/24 trust\n")
        opts = (
            f"-c listen_addresses={self.host.addr} -c port={self.PORT}"
            f" -c unix_socket_directories={self.dir} -c fsync=off"
        )
        self.host.run(
            self._as_postgres(
                self.pg_ctl, "-D", str(self.data), "-l", str(self.dir / "log"), "-o", opts,
                "-w", "start",
            ),
            check=True,
            capture_output=True,
        )  # fmt: skip
        self.started = True

    def stop(self) -> None:
        if self.started:
            self.started = False
            self.host.run(
                self._as_postgres(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"),
                capture_output=True,
            )
        shutil.rmtree(self.dir, ignore_errors=True)


class MultiHost:
    """A network with a broker host, distributor host(s), worker hosts and a producer
    host, and clawd running on them; a context manager that removes everything."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        workers: int = 2,
        distributors: int = 1,
        postgres: bool = False,
    ) -> None:
        self._own_dir = workdir is None
        self.dir = Path(tempfile.mkdtemp(prefix="clawd-multihost-")) if workdir is None else workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.exec_log = self.dir / "exec.jsonl"
        self.net = Network("mh")
        self.daemons: dict[str, HostDaemon] = {}
        #: daemons replaced by a later one on the same host
        self.retired: list[HostDaemon] = []
        self.producer: Producer | None = None
        self.broker_proc: subprocess.Popen[bytes] | None = None
        self.pg: PgHost | None = None
        #: the [journal] table of distributors sharing the PostgreSQL journal
        self.journal_config = ""
        try:
            self.broker = self.net.host("broker")
            if postgres:
                self.pg = PgHost(self.net.host("pg"))
            self.distributors = [self.net.host(f"dist{i + 1}") for i in range(distributors)]
            self.workers = [self.net.host(f"w{i + 1}") for i in range(workers)]
            self.producer_host = self.net.host("producer")
        except BaseException:
            self.net.close()
            raise
        self.url = f"mqtt://{self.broker.addr}:1883"
        plugins = self.dir / "plugins"
        plugins.mkdir(mode=0o755, exist_ok=True)
        shutil.copy(ROOT / "tests" / "dropins" / "testing.py", plugins / "testing.py")
        plugins.chmod(0o755)
        self.plugins = plugins
        self.env = daemon_env(CLAWD_TEST_EXEC_LOG=str(self.exec_log))

    # -- starting ------------------------------------------------------------------------

    def start(self, extra_config: str = "") -> None:
        """The broker, then every distributor and worker (in parallel), then the producer.
        With PostgreSQL: the server first, and the distributors one after the other, the
        first leading and the others standing by."""
        self.start_broker()
        if self.pg is not None:
            self.pg.start()
            self.journal_config = f'\n[journal]\nurl = "{self.pg.url}"\nlock_timeout = 2.0\n'
            for n, h in enumerate(self.distributors):
                d = self._daemon(h, "distributor", extra_config + self.journal_config)
                d.wait_ready()
                wait_until(
                    lambda d=d, n=n: (LEADING if n == 0 else STANDBY) in d.output(),
                    60,
                    f"{h.name} to {'lead' if n == 0 else 'stand by'}",
                )
            started = []
        else:
            started = [self._daemon(h, "distributor", extra_config) for h in self.distributors]
        started += [self._daemon(h, "worker", extra_config) for h in self.workers]
        for d in started:
            d.wait_ready()
        self.producer = Producer(self.producer_host, self.url, self.env)
        self.wait_workers_known()

    def start_broker(self) -> None:
        d = self.dir / "mosquitto"
        d.mkdir(exist_ok=True)
        conf = d / "mosquitto.conf"
        conf.write_text(
            f"listener 1883 {self.broker.addr}\nallow_anonymous true\nset_tcp_nodelay true\n"
            f"user root\npersistence true\npersistence_location {d}/\n"
            "max_queued_messages 0\nmax_inflight_messages 0\n"
            f"log_dest file {d}/mosquitto.log\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
        )
        self.broker_proc = self.broker.popen([MOSQUITTO, "-c", str(conf)], stderr=subprocess.PIPE)
        log = d / "mosquitto.log"
        wait_until(
            lambda: log.exists() and "listen socket on port 1883" in log.read_text(),
            30,
            "mosquitto to listen on the broker host",
        )

    def broker_log(self) -> str:
        return (self.dir / "mosquitto" / "mosquitto.log").read_text(errors="replace")

    def _daemon(self, host: Host, role: str, extra_config: str, tag: str = "") -> HostDaemon:
        cfg = self.dir / f"{host.name}.toml"
        cfg.write_text(
            f'[broker]\nurl = "{self.url}"\n\n'
            f'[daemon]\nstate_dir = "{self.dir / ("state-" + host.name)}"\n'
            f'plugin_dirs = ["{self.plugins}"]\nlog_level = "info"\n{CONFIG}{extra_config}'
        )
        args = ["-c", str(cfg), "run", "--role", role]
        if role == "worker":
            args += ["--worker-id", host.name]
        d = HostDaemon(host, self.dir, tag or host.name, args, self.env)
        if host.name in self.daemons:
            self.retired.append(self.daemons[host.name])
        self.daemons[host.name] = d
        return d

    def wait_workers_known(self, timeout: float = 60) -> None:
        """Every worker online at the broker (retained status) and at every distributor."""
        p = self.producer
        assert p is not None
        names = [w.name for w in self.workers]
        dists = [self.daemons[h.name] for h in self.distributors]
        wait_until(
            lambda: (
                all(p.worker_state.get(w) == "online" for w in names)
                and all(f"worker {w} online" in d.output() for w in names for d in dists[:1])
            ),
            timeout,
            f"workers online at the distributor: {p.worker_state}",
        )

    # -- reading what happened -----------------------------------------------------------

    @property
    def observer(self) -> Producer | None:
        return self.producer

    def executions(self) -> list[dict[str, Any]]:
        return json_lines(self.exec_log)

    def logs(self) -> str:
        return "\n".join(
            f"== {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.dir.glob("*.log"))
        )

    def close(self) -> None:
        try:
            if self.producer is not None:
                self.producer.close()
            for d in [*self.retired, *self.daemons.values()]:
                d.stop(signal.SIGKILL if d.proc.poll() is None else signal.SIGTERM)
        finally:
            if self.pg is not None:
                self.pg.stop()
            self.net.close()
            if self._own_dir and not os.environ.get("CLAWD_MULTIHOST_KEEP"):
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> MultiHost:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# -- scenarios ---------------------------------------------------------------------------


@dataclass
class Outcome:
    """One scenario's line in the table."""

    scenario: str
    submitted: int
    acked: int
    completed: int
    lost: int
    #: extra executions (a task run twice counts one)
    duplicated: int
    dup_results: int
    unexpected: int
    in_flight: int
    #: seconds from the fault to its noticing (the distributor giving up on a worker, the
    #: broker dropping the distributor)
    detect: float | None
    #: seconds from the fault (or the heal) to the system doing its work again
    recovery: float | None
    recovery_what: str
    impairment: str
    seconds: float
    examples: dict[str, list[str]]
    #: how a deposed leader exited once healed (leader-partition)
    old_leader_exit: int | None = None
    #: late outcomes of superseded attempts the distributor dropped (its counter)
    fenced: int = 0
    #: late outcomes of requeued, not yet redispatched tasks it took as their result
    reclaimed: int = 0

    @property
    def passed(self) -> bool:
        return (
            self.lost == 0
            and self.dup_results == 0
            and self.unexpected == 0
            and self.duplicated <= self.in_flight
        )


class MultiRun(Run):
    """A scenario run on a :class:`MultiHost`."""

    def __init__(self, mh: MultiHost, envelopes: list[dict[str, Any]]) -> None:
        super().__init__(mh, [e["id"] for e in envelopes], 0.0)  # type: ignore[arg-type]
        self.mh = mh
        self.envelopes = envelopes
        self.recovery: float | None = None
        self.recovery_what = ""
        #: seconds from the fault to the system noticing it
        self.detect: float | None = None
        #: the exit status of a deposed leader (leader-partition)
        self.old_leader_exit: int | None = None
        self.impairment = ""

    def submit(self, lo: float = 0.0, hi: float = 1.0) -> None:
        """Submit the share ``lo``..``hi`` of the envelopes."""
        n = len(self.envelopes)
        assert self.mh.producer is not None
        self.mh.producer.submit(self.envelopes[int(n * lo) : int(n * hi)])

    def done(self) -> int:
        assert self.mh.producer is not None
        return sum(1 for i in self.ids if i in self.mh.producer.results)


def _in_flight_of(run: MultiRun, pid: int, at: float) -> set[str]:
    """Tasks process ``pid`` had started by ``at`` whose result had not come by then."""
    p = run.mh.producer
    assert p is not None
    started = {r["id"] for r in run.mh.executions() if r["pid"] == pid and r["t"] <= at}
    return {i for i in started if min(p.results.get(i, {0: float("inf")}).values()) > at}


def _worker_partition(run: MultiRun, *, past_keepalive: bool = False) -> None:
    """Cut ``w1`` off mid-run; heal once the distributor has given up on it and its tasks
    started elsewhere (``past_keepalive``: only once the broker has dropped its connection
    too, so it comes back on a new one). Its late outcomes must be fenced off."""
    mh = run.mh
    run.submit()
    run.wait_done(0.2)
    w1 = mh.workers[0]
    pid = mh.daemons[w1.name].proc.pid
    dist = mh.daemons[mh.distributors[0].name]
    back = re.compile(rf"worker {w1.name} (heard again|online)")
    seen_back = len(back.findall(dist.output()))
    at = time.time()
    w1.partition()
    run.fault(f"partition {w1.name}", pid, at)
    wait_until(
        lambda: re.search(rf"worker {w1.name} (silent|lost)", dist.output()),
        60,
        f"the distributor to give up on {w1.name}",
    )
    run.detect = round(time.time() - at, 3)
    # what it was running starts again elsewhere (or had finished before the cut)
    cut_off = _in_flight_of(run, pid, at)

    def redelivered() -> bool:
        execs = mh.executions()
        p = mh.producer
        assert p is not None
        return all(
            i in p.results or any(r["id"] == i and r["pid"] != pid for r in execs) for i in cut_off
        )

    wait_until(redelivered, 60, f"{w1.name}'s tasks to start elsewhere")
    if past_keepalive:
        wait_until(
            lambda: f"clawd-worker-{w1.name} has exceeded timeout" in mh.broker_log(),
            60,
            f"the broker to drop {w1.name}",
        )
    w1.heal()
    # back, with the outcomes it kept while cut off: they reach the distributor before
    # the accounting's last marker does
    wait_until(
        lambda: len(back.findall(dist.output())) > seen_back, 60, f"{w1.name} to be heard again"
    )


def _latency_loss(run: MultiRun) -> None:
    run.impairment = run.mh.net.impair(0.05, 0.01)
    run.fault("50 ms delay, 1 % loss on every link")
    run.submit()


def _distributor_partition(run: MultiRun) -> None:
    mh = run.mh
    run.submit(0.0, 0.5)
    run.wait_done(0.2)
    host = mh.distributors[0]
    at = time.time()
    host.partition()
    run.fault(f"partition {host.name} from the broker", at=at)
    # submissions keep coming while it is cut off: the broker holds them for its session
    run.submit(0.5, 1.0)
    wait_until(
        lambda: "exceeded timeout" in mh.broker_log(), 60, "the broker to drop the distributor"
    )
    run.detect = round(time.time() - at, 3)
    p = mh.producer
    assert p is not None
    healed = time.time()
    host.heal()
    seen = sum(len(r) for r in p.results.values())
    p.wait(lambda: sum(len(r) for r in p.results.values()) > seen, 120)
    first = min((t for r in p.results.values() for t in r.values() if t > healed), default=None)
    if first is not None:
        run.recovery = round(first - healed, 3)
        run.recovery_what = "heal to first result"


def _leader_partition(run: MultiRun) -> None:
    """Two distributors on PostgreSQL: cut the leader off (the broker and the database
    both) mid-run; the standby takes over; heal; the old leader finds itself deposed and
    stops (its supervisor would start it again as a standby)."""
    mh = run.mh
    run.submit()
    run.wait_done(0.3)
    old, new = mh.distributors[0], mh.distributors[1]
    d_old, d_new = mh.daemons[old.name], mh.daemons[new.name]
    at = time.time()
    old.partition()
    run.fault(f"partition leader {old.name}", d_old.proc.pid, at)
    wait_until(lambda: LEADING in d_new.output(), 60, f"{new.name} to take over")
    run.detect = round(time.time() - at, 3)
    p = mh.producer
    assert p is not None
    seen = sum(len(r) for r in p.results.values())
    p.wait(lambda: sum(len(r) for r in p.results.values()) > seen, 120)
    first = min(
        (t for r in p.results.values() for t in r.values() if t > at + run.detect), default=None
    )
    if first is not None:
        run.recovery = round(first - at, 3)
        run.recovery_what = "cut to the new leader's first result"
    old.heal()
    try:
        d_old.proc.wait(60)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"the old leader did not stop once healed:\n{d_old.output()[-3000:]}"
        ) from None
    run.old_leader_exit = d_old.proc.returncode
    # as its supervisor would: started again, it stands by
    again = mh._daemon(old, "distributor", mh.journal_config, tag=f"{old.name}-again")
    again.wait_ready()
    wait_until(lambda: STANDBY in again.output(), 60, f"{old.name} to stand by")


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "worker-partition",
            "cut a worker off under load; heal once the distributor gave up on it",
            _worker_partition,  # type: ignore[arg-type]
            task=lambda i, n: ({"type": "sleep", "input": 0.4 if i % 4 == 0 else 0.1}, Expect()),
            measure_redelivery=True,
        ),
        Scenario(
            "worker-partition-long",
            "the same, healed only after the broker dropped the worker's connection",
            lambda run: _worker_partition(run, past_keepalive=True),  # type: ignore[arg-type]
            task=lambda i, n: ({"type": "sleep", "input": 0.4 if i % 4 == 0 else 0.1}, Expect()),
            measure_redelivery=True,
        ),
        Scenario(
            "latency-loss",
            "50 ms delay and 1 % loss on every link, both ways, under load",
            _latency_loss,  # type: ignore[arg-type]
            task=lambda i, n: ({"type": "sleep", "input": 0.05}, Expect()),
        ),
        Scenario(
            "distributor-partition",
            "cut the distributor off the broker under load, submit meanwhile, heal",
            _distributor_partition,  # type: ignore[arg-type]
            task=lambda i, n: ({"type": "sleep", "input": 0.1}, Expect()),
        ),
        Scenario(
            "leader-partition",
            "two distributors on PostgreSQL: cut the leader off under load, heal",
            _leader_partition,  # type: ignore[arg-type]
            task=lambda i, n: ({"type": "sleep", "input": 0.1}, Expect()),
        ),
    ]
}
#: scenarios run with two distributors sharing a journal on PostgreSQL (on its own host)
ON_POSTGRES = {"leader-partition"}


def run_scenario(
    name: str, tasks: int, *, workdir: Path | None = None, timeout: float | None = None
) -> Outcome:
    """Run one scenario on fresh hosts and classify every acknowledged task."""
    sc = SCENARIOS[name]
    started = time.monotonic()
    token = uuid.uuid4().hex[:6]
    ha = name in ON_POSTGRES
    with MultiHost(workdir, workers=sc.workers, distributors=2 if ha else 1, postgres=ha) as mh:
        mh.start(sc.config)
        expect: dict[str, Expect] = {}
        envelopes: list[dict[str, Any]] = []
        for i in range(tasks):
            env, ex = sc.task(i, tasks)
            env["id"] = f"{name}-{token}-{i:05d}"
            expect[env["id"]] = ex
            envelopes.append(env)
        run = MultiRun(mh, envelopes)
        sc.inject(run)
        p = mh.producer
        assert p is not None
        budget = timeout or (90.0 + tasks * 0.1)
        ids = set(run.ids)
        p.wait(lambda: ids <= p.acked, budget)
        p.wait(lambda: all(i in p.results for i in p.acked), budget)
        # a last submission the distributor rejects at once: its answer comes after every
        # result the distributor published before it, late duplicates included
        marker = f"marker-{token}"
        p.submit([{"id": marker, "type": "no-such-type"}])
        p.wait(lambda: marker in p.results, budget)
        # the distributor's counters as of after the marker (a snapshot every few seconds)
        after = max(p.results[marker].values()) if marker in p.results else time.time()
        p.wait(lambda: any(t > after for t, _ in p.metrics), 30)
        counters = p.metrics[-1][1] if p.metrics else {}
        acked = p.acked & ids
        report = classify(run, sc, expect, acked)
        recovery, what = run.recovery, run.recovery_what
        if sc.measure_redelivery:
            recovery, what = report.redelivery_max, "cut to last task restarted elsewhere"
        out = Outcome(
            scenario=name,
            submitted=tasks,
            acked=report.acked,
            completed=sum(1 for i in acked if i in p.results),
            lost=report.lost,
            duplicated=report.extra_execs,
            dup_results=report.dup_results,
            unexpected=report.unexpected,
            in_flight=report.in_flight,
            detect=run.detect,
            recovery=recovery,
            recovery_what=what,
            impairment=run.impairment,
            seconds=round(time.monotonic() - started, 1),
            examples=dict(report.examples),
            old_leader_exit=run.old_leader_exit,
            fenced=int(counters.get("stale_outcomes", 0)),
            reclaimed=int(counters.get("reclaimed", 0)),
        )
        if not out.passed and os.environ.get("CLAWD_MULTIHOST_VERBOSE"):
            print(mh.logs(), file=sys.stderr)
    return out
