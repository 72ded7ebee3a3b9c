"""One machine's worth of clawd under test: a private mosquitto, a distributor, workers.

Every process is real (``python -m clawd run`` and ``mosquitto``), started on free ports
in a temporary directory, and stopped by its own pid. Workers are supervised like
systemd's ``Restart=always`` would: one that dies is started again, so a poison task
can kill a worker as often as it likes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from clawd.connection import Endpoint, Options
from clawd.envelope import decode, encode
from clawd.message import Delivery, Message
from clawd.transport import Transport
from tests.conftest import ROOT, Broker, Daemon, daemon_env, json_lines, wait_until

DEFAULT_CONFIG = """
[worker]
concurrency = 4
drain_timeout = 1.0

[distributor]
liveness_timeout = 5.0

[retry]
backoff_base = 0.2
backoff_cap = 1.0

[handlers.hang]
max_attempts = 3
"""


class Cluster:
    """A broker, one distributor and ``workers`` workers; ``close()`` stops them all."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        workers: int = 2,
        extra_config: str = "",
        start: bool = True,
    ) -> None:
        self._own_dir = workdir is None
        self.dir = Path(tempfile.mkdtemp(prefix="clawd-faults-")) if workdir is None else workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.exec_log = self.dir / "exec.jsonl"
        self.broker = Broker(self.dir / "mosquitto")
        plugins = self.dir / "plugins"
        plugins.mkdir(mode=0o755, exist_ok=True)
        shutil.copy(ROOT / "tests" / "dropins" / "testing.py", plugins / "testing.py")
        plugins.chmod(0o755)
        self.config = self.dir / "clawd.toml"
        self.config.write_text(
            f'[broker]\nurl = "{self.broker.url}"\n\n'
            f'[daemon]\nstate_dir = "{self.dir / "state"}"\nplugin_dirs = ["{plugins}"]\n'
            f'log_level = "info"\n{DEFAULT_CONFIG}{extra_config}'
        )
        self.env = daemon_env(CLAWD_TEST_EXEC_LOG=str(self.exec_log))
        self.distributor: Daemon | None = None
        self.workers: dict[str, Daemon | None] = {f"w{i + 1}": None for i in range(workers)}
        #: worker id -> pids it has had, in order (exec log lines name the pid)
        self.worker_pids: dict[str, list[int]] = defaultdict(list)
        self.restarts = 0
        self._held: set[str] = set()
        self._n = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.observer: Observer | None = None
        if start:
            self.start()

    # -- processes -----------------------------------------------------------------------

    def _daemon(self, name: str, *args: str) -> Daemon:
        with self._lock:
            self._n += 1
            tag = f"{name}-{self._n}"
        d = Daemon(["-c", str(self.config), "run", *args], self.env, self.dir, tag)
        d.wait_for("READY=1", 30)
        # nobody reads status updates after READY: let the daemon's sends fail fast
        # rather than fill the socket buffer
        d.notify.path.unlink()
        return d

    def start(self) -> None:
        self.broker.start()
        self.observer = Observer(self.broker)
        self.start_distributor()
        for wid in self.workers:
            self.start_worker(wid)
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)
        self._supervisor.start()
        self.wait_workers_known()

    def start_distributor(self) -> Daemon:
        d = self._daemon("distributor", "--role", "distributor")
        self.distributor = d
        return d

    def start_worker(self, wid: str) -> Daemon:
        d = self._daemon(wid, "--role", "worker", "--worker-id", wid)
        self.workers[wid] = d
        self.worker_pids[wid].append(d.proc.pid)
        return d

    def wait_workers_known(self, timeout: float = 10) -> None:
        """Wait until every worker's retained status says online, and the distributor has
        logged taking each of them on."""
        obs, d = self.observer, self.distributor
        assert obs is not None and d is not None
        wait_until(
            lambda: (
                all(obs.worker_state.get(w) == "online" for w in self.workers)
                and all(f"worker {w} online" in d.output() for w in self.workers)
            ),
            timeout,
            f"workers online at the distributor: {obs.worker_state}",
        )

    def _supervise(self) -> None:
        while not self._stop.wait(0.1):
            for wid, d in list(self.workers.items()):
                if d is None or d.proc.poll() is None or wid in self._held:
                    continue
                d.stop()
                self.restarts += 1
                try:
                    self.start_worker(wid)
                except AssertionError:
                    # the broker may be down: try again on the next round
                    self.workers[wid] = _Dead()  # type: ignore[assignment]

    def hold(self, wid: str) -> None:
        """Keep the supervisor from restarting ``wid`` until :meth:`release`."""
        self._held.add(wid)

    def release(self, wid: str) -> None:
        self._held.discard(wid)

    def kill_worker(self, wid: str, sig: int = signal.SIGKILL) -> tuple[float, int]:
        """Signal a worker; returns (wall time, pid). The supervisor restarts it."""
        d = self.workers[wid]
        assert d is not None and d.proc.poll() is None
        pid = d.proc.pid
        t = time.time()
        os.kill(pid, sig)
        return t, pid

    def wait_restarted(self, wid: str, old_pid: int, timeout: float = 30) -> None:

        def restarted() -> bool:
            d = self.workers[wid]
            return isinstance(d, Daemon) and d.proc.pid != old_pid and d.proc.poll() is None

        wait_until(restarted, timeout, f"worker {wid} to be restarted")

    def close(self) -> None:
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(5)
        procs = [d for d in self.workers.values() if isinstance(d, Daemon)]
        if self.distributor is not None:
            procs.append(self.distributor)
        for d in procs:
            d.stop(signal.SIGKILL if d.proc.poll() is None else signal.SIGTERM, timeout=5)
        if self.observer is not None:
            self.observer.close()
        self.broker.stop(signal.SIGKILL)
        if self._own_dir and not os.environ.get("CLAWD_FAULTS_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- broker faults -------------------------------------------------------------------

    def down(self, seconds: float) -> None:
        """Let ``seconds`` pass with something down: the fault itself, not a wait for an
        event (nothing would announce the end of an outage)."""
        self._stop.wait(seconds)

    def restart_broker(self, down: float = 0.0) -> None:
        """Stop mosquitto gracefully (it saves its persistence file), keep it down for
        ``down`` seconds (the fault itself), start it again."""
        self.broker.stop(signal.SIGTERM)
        self.down(down)
        self.broker.start()

    # -- reading what happened -----------------------------------------------------------

    def executions(self) -> list[dict[str, Any]]:
        return json_lines(self.exec_log)

    def logs(self) -> str:
        return "\n".join(
            f"== {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.dir.glob("*.log"))
        )


class _Dead:
    """Placeholder for a worker the supervisor could not start yet."""

    class proc:  # noqa: N801 - quacks like Popen for the supervisor
        pid = -1

        @staticmethod
        def poll() -> int:
            return 1

    def stop(self, *a: Any, **kw: Any) -> int:
        return 1


class Observer:
    """A producer and a listener on the broker: submits, and records results, dead letters
    and worker states. Its session persists, so nothing published while the broker was
    restarting is missed."""

    def __init__(self, broker: Broker, prefix: str = "clawd") -> None:
        self.prefix = prefix
        #: task id -> distinct terminal result payloads (a QoS 1 redelivery is the same bytes)
        self.results: dict[str, dict[bytes, float]] = defaultdict(dict)
        self.dead: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.worker_state: dict[str, str] = {}
        self._cond = threading.Condition()
        self.listener = Transport(
            Endpoint.parse(broker.url),
            Options(
                client_id=f"faults-listener-{os.getpid()}-{id(self)}",
                clean_start=False,
                session_expiry=3600,
                subscriptions=[
                    (f"{prefix}/results/+", 1),
                    (f"{prefix}/dead/+", 1),
                    (f"{prefix}/workers/+", 1),
                ],
            ),
            self._on_message,
        )
        self.listener.start(timeout=10)
        self.listener.subscribed.wait(10)
        self.producer = Transport(
            Endpoint.parse(broker.url),
            Options(client_id=f"faults-producer-{os.getpid()}-{id(self)}"),
            lambda m: None,
        )
        self.producer.start(timeout=10)

    def _on_message(self, msg: Message) -> None:
        parts = msg.topic.split("/")
        with self._cond:
            if parts[1] == "results":
                self.results[parts[2]].setdefault(msg.payload, time.time())
            elif parts[1] == "dead":
                self.dead[decode(msg.payload)["id"]].append(decode(msg.payload))
            elif parts[1] == "workers" and msg.payload:
                self.worker_state[parts[2]] = decode(msg.payload).get("state", "")
            self._cond.notify_all()

    def submit(self, envelope: dict[str, Any], lane: str = "normal") -> Delivery:
        return self.producer.publish_tracked(f"{self.prefix}/tasks/{lane}", encode(envelope))

    def publish(self, topic: str, payload: bytes) -> Delivery:
        return self.producer.publish_tracked(topic, payload)

    def wait_results(self, ids: set[str], timeout: float) -> bool:
        """Wait until every id in ``ids`` has a terminal result."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                if all(i in self.results for i in ids):
                    return True
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))

    def wait_dead(self, task_id: str, timeout: float = 20) -> list[dict[str, Any]]:
        """Wait for the dead letter(s) of ``task_id``."""
        with self._cond:
            self._cond.wait_for(lambda: task_id in self.dead, timeout)
            return list(self.dead.get(task_id, ()))

    def result(self, task_id: str) -> dict[str, Any] | None:
        docs = list(self.results.get(task_id, {}))
        return decode(docs[-1]) if docs else None

    def close(self) -> None:
        for t in (self.producer, self.listener):
            with contextlib.suppress(Exception):
                t.stop()
