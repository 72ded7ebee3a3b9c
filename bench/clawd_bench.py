"""clawd end to end: a distributor and 2 workers as ``python -m clawd run`` processes.

Journal on (SQLite WAL, group commit; ``--journal-sync``), a drop-in ``noop`` task type,
tasks submitted with QoS 1 to ``clawd/tasks/normal/noop`` by a paho producer, results
counted on ``clawd/results/+``.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import threading
import time
from pathlib import Path

from bench.infra import ClawdProcess, rss_mb
from bench.mqtt_producer import Producer

PLUGINS = Path(__file__).resolve().parent / "plugins"
WORKERS = 2
TOPIC = "clawd/tasks/normal/noop"
#: [daemon] journal_sync of the clusters (the bench's --journal-sync)
JOURNAL_SYNC = "normal"


def write_config(
    workdir: Path, port: int, name: str, concurrency: int, log_level: str | None = "warning"
) -> Path:
    """A config for one clawd process, loading the bench plugins from a 0755 copy;
    ``log_level=None`` keeps the default."""
    plugins = workdir / "plugins"
    if not plugins.exists():
        # the checkout may be group-writable; clawd refuses to load code from such a dir
        shutil.copytree(PLUGINS, plugins, ignore=shutil.ignore_patterns("__pycache__"))
        plugins.chmod(0o755)
    state = workdir / f"state-{name}"
    path = workdir / f"{name}.toml"
    path.write_text(
        f'[broker]\nurl = "mqtt://127.0.0.1:{port}"\n\n'
        f'[daemon]\nstate_dir = "{state}"\nplugin_dirs = ["{plugins}"]\n'
        + (f'log_level = "{log_level}"\n' if log_level else "")
        + f'journal_sync = "{JOURNAL_SYNC}"\n\n'
        f"[worker]\nconcurrency = {concurrency}\n"
    )
    return path


def producer(port: int) -> Producer:
    return Producer(
        port,
        topic_for=lambda _id: TOPIC,
        payload_for=lambda task_id: b'{"id":"%s"}' % task_id.encode(),
        result_filter="clawd/results/+",
    )


class Cluster:
    """Distributor and workers against one broker; each in its own state directory."""

    def __init__(
        self,
        workdir: Path,
        port: int,
        concurrency: int,
        tag: str = "c",
        workers: int = WORKERS,
        log_level: str | None = "warning",
    ) -> None:
        self.workdir = workdir
        self.nworkers = workers
        self.log_level = log_level
        self.port = port
        self.concurrency = concurrency
        self.tag = tag
        self.distributor: ClawdProcess | None = None
        self.workers: list[ClawdProcess] = []

    def start_distributor(self) -> ClawdProcess:
        cfg = write_config(
            self.workdir, self.port, f"{self.tag}-distributor", self.concurrency, self.log_level
        )
        d = ClawdProcess(cfg, "distributor", f"{self.tag}-distributor", self.workdir)
        d.wait_ready()
        self.distributor = d
        return d

    def start_workers(self) -> None:
        started = []
        for i in range(self.nworkers):
            name = f"{self.tag}-worker{i + 1}"
            cfg = write_config(self.workdir, self.port, name, self.concurrency, self.log_level)
            started.append(
                ClawdProcess(cfg, "worker", name, self.workdir, worker_id=f"bench-{name}")
            )
        for w in started:
            w.wait_ready()
        self.workers += started

    @property
    def journal(self) -> Path:
        return self.workdir / f"state-{self.tag}-distributor" / "journal.db"

    def stop(self) -> None:
        for p in self.workers:
            p.stop()
        if self.distributor is not None:
            self.distributor.stop()


class RssSampler:
    """Peak VmRSS of one process, sampled on a thread."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        self.pid = pid
        self.every = every
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self._stop.wait(self.every)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb(self.pid))
        return self.peak


def journaled(journal: Path) -> int:
    """Rows in the distributor's journal (read-only; WAL lets us read while it writes)."""
    try:
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)
        try:
            return int(db.execute("SELECT COALESCE(MAX(seq), 0) FROM tasks").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def journal_mb(journal: Path) -> float:
    """Size on disk of the journal: the database, its WAL and shared-memory files, in MB."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            total += journal.with_name(journal.name + suffix).stat().st_size
    return total / 1e6


def backlog(workdir: Path, port: int, n: int, concurrency: int, log=print) -> dict[str, float]:
    """Queue ``n`` tasks with no worker running, then start the workers and drain them."""
    cluster = Cluster(workdir, port, concurrency, tag=f"b{int(time.time() * 1000) % 100000}")
    prod = None
    try:
        d = cluster.start_distributor()
        prod = producer(port)
        fill = RssSampler(d.pid)
        prefix = "bk-"
        start = time.perf_counter()
        prod.publish_all(n, prefix)
        while (got := journaled(cluster.journal)) < n:
            if d.proc.poll() is not None:
                raise RuntimeError(f"distributor exited during the fill:\n{d.output()}")
            log(f"  backlog: {got}/{n} journaled")
            time.sleep(2)
        fill_s = time.perf_counter() - start
        fill_rss = fill.stop()
        filled_mb = journal_mb(cluster.journal)
        log(f"  backlog: {n} journaled in {fill_s:.1f} s; starting workers")
        drain = RssSampler(d.pid)
        prod.expect(n, prefix)
        start = time.perf_counter()
        cluster.start_workers()
        deadline = time.monotonic() + max(600.0, n / 200)
        while True:
            last, seen = prod.wait(10)
            if last:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"backlog: only {seen} of {n} results before the deadline")
            log(f"  backlog: {seen}/{n} drained")
        drain_s = last - start
        return {
            "fill_per_s": n / fill_s,
            "drain_per_s": n / drain_s,
            "fill_rss_mb": fill_rss,
            "drain_rss_mb": drain.stop(),
            "journal_filled_mb": filled_mb,
            "journal_drained_mb": journal_mb(cluster.journal),
        }
    finally:
        if prod is not None:
            prod.close()
        cluster.stop()
