"""Micro-benchmarks: two for instruction counts under callgrind, the rest timed in CPU.

``python -m bench.micro journal N [--turn T]``: the journal writes of the realistic path
for N tasks, T (50) per turn: admitted and dispatched in one commit, finished in the
next, marked published in the one after (which writes the marks only when they are
due); it prints CPU µs per task. ``python -m bench.micro reasoncode N [--plain]``: N
reason codes as paho builds one for every PUBACK it reads, with clawd's paho speed-ups
(or ``--plain``: paho as it comes). Run either for N and 5N under ``valgrind
--tool=callgrind`` and divide the difference by 4N: instructions per task or per PUBACK,
the same on a loaded machine and a quiet one. ``python -m bench.micro pool N
[--executor]``: N jobs through the worker's thread pool, or through the standard
library's ``ThreadPoolExecutor``: CPU µs per job. ``python -m bench.micro gc
[--freeze]``: the garbage collector's pauses over the in-process realistic path, without
and with the ``gc.freeze()`` the daemon makes after start-up.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import click

TURN = 50


@click.group()
def main() -> None:
    """Instruction-count micro-benchmarks (run under callgrind)."""


@main.command()
@click.argument("n", type=int)
@click.option("--turn", default=TURN, show_default=True, help="Tasks per turn.")
def journal(n: int, turn: int) -> None:
    """The realistic path's journal writes for N tasks; prints CPU µs per task."""
    import time

    from clawd.envelope import Task, result_doc
    from clawd.journal import Journal

    j = Journal(Path(tempfile.mkdtemp()) / "journal.db", fsync=False)
    start_cpu = time.process_time()
    for start in range(0, n, turn):
        tasks = [
            Task(id=f"t{i}", type="compute", lane="normal", input="1+1", submitted_at=1.0)
            for i in range(start, start + turn)
        ]
        for t in tasks:
            j.add(t, None)
            j.dispatched(t.id, 1)
        j.commit()
        for t in tasks:
            j.finish(t.id, "ok", result_doc(t, "ok", attempts=1, result=2), [])
        j.commit()
        for t in tasks:
            j.published(t.id)
        j.commit()
    used = time.process_time() - start_cpu
    j.close()
    click.echo(f"{used / n * 1e6:.1f} µs of CPU per task, {turn} per turn ({n:,} tasks)")


@main.command()
@click.argument("n", type=int)
@click.option("--plain", is_flag=True, help="paho as it comes, without clawd's speed-ups.")
def reasoncode(n: int, plain: bool) -> None:
    """N PUBACK reason codes, as paho makes one per PUBACK it parses."""
    from clawd.paho_compat import Compat
    from clawd.transport import PAHO

    Compat(PAHO, not plain)
    cls, puback = PAHO.reason_code, 4
    assert cls is not None
    for _ in range(n):
        cls(puback)


@main.command()
@click.argument("n", type=int)
@click.option("--executor", is_flag=True, help="concurrent.futures.ThreadPoolExecutor instead.")
def pool(n: int, executor: bool) -> None:
    """N jobs through the worker's thread pool (6 threads), timed in CPU."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from clawd.worker.pool import Threads

    done = threading.Event()
    count = [0]

    def job() -> None:
        count[0] += 1
        if count[0] == n:
            done.set()

    runner: Any = ThreadPoolExecutor(max_workers=6) if executor else Threads(6)
    start = time.process_time()
    for _ in range(n):
        runner.submit(job)
    done.wait()
    used = time.process_time() - start
    runner.shutdown()
    kind = "ThreadPoolExecutor" if executor else "clawd.worker.pool.Threads"
    click.echo(f"{kind}: {used / n * 1e6:.2f} µs of CPU per job ({n:,} jobs)")


@main.command()
@click.option("--freeze", is_flag=True, help="gc.freeze() first, as the daemon does.")
@click.option("--tasks", default=20_000, show_default=True)
def gc(freeze: bool, tasks: int) -> None:
    """The collector's pauses over the in-process realistic path (bench.inproc)."""
    import gc as collector
    import time

    from bench import inproc

    pauses: list[float] = []
    began = [0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - began[0])

    if freeze:
        collector.collect()
        collector.freeze()
    collector.callbacks.append(timed)
    try:
        inproc.measure("realistic", tasks, inline=True)
    finally:
        collector.callbacks.remove(timed)
    click.echo(
        f"{'frozen' if freeze else 'not frozen'}: {len(pauses)} collections, "
        f"{sum(pauses) * 1e3:.0f} ms in all, the longest {max(pauses) * 1e3:.1f} ms"
    )


if __name__ == "__main__":
    main()
