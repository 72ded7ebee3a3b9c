"""``python -m bench.inproc``: CPU per task of the distributor and workers, in one process.

A Distributor (real SQLite journal, default config) and two Workers are wired together
by in-memory transports and driven by one loop, with a producer that keeps ``--window``
tasks outstanding. No broker, no paho, no other process: the CPU this process spends
(``time.process_time``, every thread) divided by the tasks is clawd's own cost per task,
and it does not depend on how loaded the machine is. ``--profile`` runs the handlers
inline on the loop's thread and prints cProfile's top functions.

    python -m bench.inproc --path realistic --tasks 20000
    python -m bench.inproc --path noop --profile
"""

from __future__ import annotations

import cProfile
import io
import pstats
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import click

from clawd import config as cfgmod
from clawd import hookimpl
from clawd.distributor.core import Distributor
from clawd.journal import Journal
from clawd.plugins import load_plugins
from clawd.transport import Message
from clawd.worker.core import Worker

PREFIX = "clawd"
#: (topic, payload) of one submission for task number i
PATHS: dict[str, Callable[[str], tuple[str, bytes]]] = {
    # what users send: a full envelope on the lane topic, a built-in handler
    "realistic": lambda i: (
        f"{PREFIX}/tasks/normal",
        b'{"id":"%s","type":"compute","input":"1+1"}' % i.encode(),
    ),
    # the microbenchmark: a bare id on the lane/type topic, a handler that does nothing
    "noop": lambda i: (f"{PREFIX}/tasks/normal/noop", b'{"id":"%s"}' % i.encode()),
}


class Noop:
    """The bench's ``noop`` task type, registered in code (see bench/plugins/noop.py)."""

    @hookimpl
    def clawd_register_handlers(self, register: Any) -> None:
        register("noop", lambda ctx: None, description="does nothing (bench)")


class Done:
    acknowledged = True


class Wire:
    """One role's end of the in-memory broker: what it publishes goes to ``out``."""

    def __init__(self, on_message: Callable[[Message], None], woken: threading.Event) -> None:
        self.on_message = on_message
        self.incoming: deque[Message] = deque()
        self.out: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self.connected.set()
        self.woken = woken
        self.mid = 0

    def deliver(self, topic: str, payload: bytes) -> None:
        self.mid += 1
        self.incoming.append(Message(topic, payload, qos=1, mid=self.mid))

    def poll(self, timeout: float = 0.0) -> None:
        incoming = self.incoming
        while incoming:
            self.on_message(incoming.popleft())

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, **kw: Any):
        self.out.append((topic, payload))
        return True

    def publish_tracked(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False):
        self.out.append((topic, payload))
        return Done()

    def ack(self, mid: int, qos: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def wake(self) -> None:
        self.woken.set()


class InlineExecutor:
    """Runs a submitted call at once on the caller's thread (for profiling)."""

    #: threads of its own that may run commands: none
    idents: frozenset[int] = frozenset()

    def submit(self, fn: Callable[[], Any], eager: bool = False) -> Future[Any]:
        fn()
        f: Future[Any] = Future()
        f.set_result(None)
        return f

    def shutdown(self, **kw: Any) -> None:
        pass

    def spill(self) -> float | None:
        return None


def load_config(workdir: Path, name: str, extra: str = "") -> Any:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{name}.toml"
    path.write_text(
        f'[broker]\nurl = "mqtt://127.0.0.1:1"\n\n[daemon]\nstate_dir = "{workdir / name}"\n'
        f"\n{extra}"
    )
    return cfgmod.load(str(path), env={})


class Rig:
    """A distributor, ``workers`` workers and a windowed producer in one process."""

    def __init__(
        self,
        workdir: Path,
        path: str = "realistic",
        workers: int = 2,
        concurrency: int = 8,
        inline: bool = False,
    ) -> None:
        self.submission = PATHS[path]
        self.woken = threading.Event()
        cfg = load_config(workdir, "distributor")
        plugins = load_plugins(cfg)
        plugins.register_object(Noop(), "bench-noop")
        plugins.collect()
        self.journal = Journal(cfg.state_path / "journal.db", fsync=False, checkpointer=True)
        self.d = Distributor(cfg, plugins, self.journal)
        self.dt = Wire(self.d.on_message, self.woken)
        self.d.attach(self.dt)
        self.workers: dict[str, tuple[Worker, Wire]] = {}
        for i in range(workers):
            wid = f"w{i + 1}"
            wcfg = load_config(
                workdir, wid, f'[worker]\nid = "{wid}"\nconcurrency = {concurrency}\n'
            )
            wp = load_plugins(wcfg)
            wp.register_object(Noop(), "bench-noop")
            wp.collect()
            w = Worker(wcfg, wp)
            if inline:
                w.pool.executor.shutdown()
                w.pool.executor = InlineExecutor()  # type: ignore[assignment]
            wt = Wire(w.on_message, self.woken)
            w.attach(wt)
            self.workers[wid] = (w, wt)
            w.announce()
        self.results = 0
        self._route()

    def _route(self) -> bool:
        """Move every published message to its subscribers; True if anything moved."""
        moved = False
        dt = self.dt
        for topic, payload in dt.out:
            moved = True
            parts = topic.split("/")
            if parts[1] == "_" and parts[2] == "w":  # <prefix>/_/w/<id>/tasks
                self.workers[parts[3]][1].deliver(topic, payload)
            elif parts[1] == "results":
                self.results += 1
        dt.out.clear()
        for _, wt in self.workers.values():
            for topic, payload in wt.out:
                moved = True
                dt.deliver(topic, payload)
            wt.out.clear()
        return moved

    def run(self, tasks: int, window: int, prefix: str = "t") -> float:
        """Submit ``tasks`` keeping ``window`` outstanding; seconds until the last result."""
        d, dt, submission = self.d, self.dt, self.submission
        start_results = self.results
        sent = 0
        start = time.perf_counter()
        while self.results - start_results < tasks:
            room = window - (sent - (self.results - start_results))
            while room > 0 and sent < tasks:
                topic, payload = submission(f"{prefix}{sent}")
                dt.deliver(topic, payload)
                sent += 1
                room -= 1
            d.run_once(0)
            moved = self._route()
            for w, _ in self.workers.values():
                w.run_once(0)
            moved = self._route() or moved
            if not moved:
                # nothing to do until a handler finishes: wait for a pool thread's wake-up
                self.woken.wait(0.05)
                self.woken.clear()
        return time.perf_counter() - start

    def close(self) -> None:
        for w, _ in self.workers.values():
            w.pool.shutdown()
        self.journal.close()


def measure(
    path: str,
    tasks: int,
    window: int = 500,
    workers: int = 2,
    concurrency: int = 8,
    inline: bool = False,
    profile: cProfile.Profile | None = None,
) -> dict[str, float]:
    """CPU µs per task of the whole process (every thread), after a warm-up."""
    tmp = Path(tempfile.mkdtemp(prefix="clawd-inproc-"))
    rig = Rig(tmp, path, workers, concurrency, inline)
    try:
        rig.run(min(1000, tasks), window, prefix="warm")
        cpu = time.process_time()
        if profile is not None:
            profile.enable()
        seconds = rig.run(tasks, window)
        if profile is not None:
            profile.disable()
        used = time.process_time() - cpu
        return {"tasks": tasks, "cpu_us_per_task": used / tasks * 1e6, "seconds": seconds}
    finally:
        rig.close()
        shutil.rmtree(tmp, ignore_errors=True)


@click.command()
@click.option("--path", "paths", default="realistic,noop", show_default=True)
@click.option("--tasks", default=20_000, show_default=True)
@click.option("--window", default=500, show_default=True, help="Tasks outstanding at most.")
@click.option("--concurrency", default=8, show_default=True)
@click.option("--runs", default=3, show_default=True)
@click.option("--inline", is_flag=True, help="Run handlers on the loop's thread.")
@click.option("--profile", is_flag=True, help="cProfile one inline run per path.")
@click.option("--top", "n", default=30, show_default=True)
def main(
    paths: str,
    tasks: int,
    window: int,
    concurrency: int,
    runs: int,
    inline: bool,
    profile: bool,
    n: int,
) -> None:
    """CPU per task of clawd's distributor and 2 workers, in one process."""
    for path in [p.strip() for p in paths.split(",") if p.strip()]:
        if profile:
            prof = cProfile.Profile()
            r = measure(path, tasks, window, 2, concurrency, inline=True, profile=prof)
            out = io.StringIO()
            stats = pstats.Stats(prof, stream=out)
            stats.sort_stats("tottime").print_stats(n)
            stats.sort_stats("cumulative").print_stats(n)
            print(f"== {path}: {r['cpu_us_per_task']:.1f} µs/task (profiled, inline)")
            print(out.getvalue())
            continue
        values = sorted(
            measure(path, tasks, window, 2, concurrency, inline)["cpu_us_per_task"]
            for _ in range(runs)
        )
        print(
            f"{path:10s} CPU µs per task (min / median / max of {runs}): "
            f"{values[0]:.1f} / {values[len(values) // 2]:.1f} / {values[-1]:.1f}"
            + (" (handlers inline)" if inline else "")
        )


if __name__ == "__main__":
    main()
