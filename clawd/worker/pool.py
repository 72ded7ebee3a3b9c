"""Running handlers without ever blocking the worker's loop.

``thread`` handlers run on a thread pool; a thread cannot be killed, so one that
overruns its time limit is reported as timed out and its slot freed while the thread is
left to finish (the pool has spare threads for that). ``process`` handlers run in a
forked child that is killed, with its whole process group, at the limit: that is the
isolation for code that may never return.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

from clawd.envelope import encode
from clawd.errors import TaskError, TaskTimeout
from clawd.handler import HandlerSpec, TaskContext
from clawd.handlers import _process as commands

log = logging.getLogger("clawd.worker")

#: seconds a job waits behind a slow one before it gets a thread of its own
SPILL = 0.001
#: a handler whose runs took longer than this on average gets a thread per task at once
SLOW = 0.0005

#: seconds between looks at whether a ``process`` handler's task was cancelled
CANCEL_TICK = 0.1

#: an outcome as the worker reports it: {"status", "result"|"error", "retryable", "code"?}
Outcome = dict[str, Any]


def call_handler(spec: HandlerSpec, ctx: TaskContext) -> Outcome:
    """Run a handler in this thread and turn what happens into an outcome."""
    try:
        result = spec.func(ctx)
        encode(result)  # fail here, clearly, rather than when publishing
        return {"status": "ok", "result": result}
    except TaskError as exc:
        out: Outcome = {"status": "error", "error": exc.message, "retryable": exc.retryable}
        if exc.code:
            out["code"] = exc.code
        return out
    except TypeError as exc:
        if "serializ" in str(exc) or "Encoding objects" in str(exc):
            return {
                "status": "error",
                "error": f"result is not JSON-serialisable: {exc}",
                "retryable": False,
            }
        return _crash(spec, exc)
    except Exception as exc:
        return _crash(spec, exc)


def _crash(spec: HandlerSpec, exc: Exception) -> Outcome:
    tb = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" at {tb[0].filename}:{tb[0].lineno}" if tb else ""
    return {
        "status": "error",
        "error": f"handler {spec.name!r} raised {exc!r}{where}",
        "retryable": True,
    }


def _child(spec: HandlerSpec, ctx: TaskContext, conn: Any) -> None:
    os.setpgrp()  # so the parent can kill everything this child starts

    def report(fraction: float, message: str | None) -> None:
        conn.send(("progress", fraction, message))

    ctx.report = report
    conn.send(("done", call_handler(spec, ctx)))
    conn.close()


class Threads:
    """Up to ``limit`` threads that run queued jobs in turn, one thread per burst of fast
    jobs and one per job as soon as jobs turn out slow.

    A grant of eight tasks woke eight threads, which passed the GIL between them to run
    jobs of a few microseconds each. Here a burst goes to one thread, which runs its jobs
    back to back; a job still queued after :data:`SPILL` seconds (the one before it is
    slow) gets a thread of its own when the owner's loop calls :meth:`spill`, so slow
    handlers keep their concurrency. A job gets a thread at once when it is ``eager``
    (known to be slow), or when every busy thread has run its job longer than that.

    What :class:`~concurrent.futures.ThreadPoolExecutor` did for the pool, without what it
    never used: a ``Future``, a work item and a semaphore round per job (11.5 µs of CPU a
    job against 2-3 µs, side by side in ``python -m bench.micro pool``). The threads are
    daemon threads: a handler that never returns does not keep the process from exiting.
    """

    def __init__(self, limit: int, name: str = "clawd-task", spill: float = SPILL) -> None:
        self.limit = limit
        self.name = name
        self.spill_after = spill
        self._cond = threading.Condition(threading.Lock())
        #: (job, monotonic time it was queued)
        self._jobs: deque[tuple[Callable[[], None], float]] = deque()
        self._threads = 0
        #: threads waiting for a job; notified and not awake yet; started and not at the
        #: queue yet
        self._idle = self._notified = self._starting = 0
        #: when each busy thread's job started, by thread
        self._since: dict[int, float] = {}
        #: every thread this pool started (their idents)
        self.idents: set[int] = set()
        self._closed = False

    def submit(self, job: Callable[[], None], eager: bool = False) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the pool is shut down")
            now = time.monotonic()
            self._jobs.append((job, now))
            coming = self._notified + self._starting
            if eager:
                self._provide(len(self._jobs) - coming)
            elif not coming and not any(t > now - self.spill_after for t in self._since.values()):
                # no thread is on its way and none runs a job that may end soon: the
                # burst's runner; the rest of the burst waits for it, or for spill()
                self._provide(1)

    def spill(self) -> float | None:
        """Give the jobs that have waited :attr:`spill_after` threads of their own; in how
        many seconds to look again, or None while no job waits."""
        if not self._jobs:
            return None  # the usual case, every turn of the worker's loop: no lock for it
        with self._cond:
            jobs = self._jobs
            if not jobs:
                return None
            wait = jobs[0][1] + self.spill_after - time.monotonic()
            if wait > 0:
                return wait
            self._provide(len(jobs) - self._notified - self._starting)
            return None  # every thread is busy: the jobs go as threads free up

    def _provide(self, n: int) -> None:
        for _ in range(n):
            if self._idle > self._notified:
                self._notified += 1
                self._cond.notify()  # each notify wakes a waiter not woken yet
            elif self._threads < self.limit:
                self._threads += 1
                self._starting += 1
                name = f"{self.name}-{self._threads}"
                threading.Thread(target=self._run, name=name, daemon=True).start()
            else:
                return

    def _run(self) -> None:
        cond, jobs, since = self._cond, self._jobs, self._since
        me = threading.get_ident()
        with cond:
            self.idents.add(me)
            self._starting -= 1
            while True:
                if jobs:
                    job = jobs.popleft()[0]
                    since[me] = time.monotonic()
                    cond.release()
                    try:
                        job()
                    except BaseException:  # a job's own errors are its outcome: a bug
                        log.exception("a pool thread's job failed")
                    finally:
                        cond.acquire()
                        del since[me]
                    continue
                if self._closed:
                    self._threads -= 1
                    return
                self._idle += 1
                cond.wait()
                self._idle -= 1
                self._notified -= 1

    def shutdown(self, cancel: bool = False) -> None:
        """Stop the threads once the jobs queued now have run (``cancel``: drop those)."""
        with self._cond:
            self._closed = True
            if cancel:
                self._jobs.clear()
            self._notified = self._idle
            self._cond.notify_all()
            # nobody calls spill() on a pool being replaced: what is queued gets threads now
            self._provide(len(self._jobs) - self._notified - self._starting)


class Pool:
    """Runs tasks; calls ``on_done(task_id, outcome, seconds)`` from a pool thread."""

    def __init__(self, slots: int) -> None:
        # spare threads: a timed-out thread handler keeps its thread until it returns
        self.executor = Threads(slots * 2 + 4)
        self._mp = multiprocessing.get_context("fork")
        #: seconds a run of each handler took, on average (recent runs weigh most)
        self.seconds: dict[str, float] = {}

    def submit(
        self,
        spec: HandlerSpec,
        ctx: TaskContext,
        on_done: Callable[[str, Outcome, float], None],
        before: Callable[[], None] = lambda: None,
    ) -> None:
        seconds = self.seconds

        def run() -> None:
            before()
            start = time.monotonic()
            ctx.started = start
            if spec.isolation == "process":
                out = self._run_process(spec, ctx)
            else:
                out = call_handler(spec, ctx)
            took = time.monotonic() - start
            seconds[spec.name] = seconds.get(spec.name, took) * 0.8 + took * 0.2
            on_done(ctx.id, out, took)

        eager = spec.isolation == "process" or seconds.get(spec.name, 0.0) > SLOW
        self.executor.submit(run, eager)

    def spill(self) -> float | None:
        """See :meth:`Threads.spill`: the worker's loop calls it every turn."""
        return self.executor.spill()

    def _run_process(self, spec: HandlerSpec, ctx: TaskContext) -> Outcome:
        parent, child = self._mp.Pipe(duplex=False)
        report = ctx.report
        proc = self._mp.Process(target=_child, args=(spec, ctx, child), daemon=True)
        proc.start()
        child.close()
        deadline = None if ctx.timeout is None else time.monotonic() + ctx.timeout
        try:
            while True:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not parent.poll(CANCEL_TICK if wait is None else min(wait, CANCEL_TICK)):
                    if ctx.cancelled.is_set():
                        _kill_group(proc)
                        return {"status": "error", "error": "cancelled", "retryable": False}
                    if wait is None or wait > CANCEL_TICK:
                        continue
                    _kill_group(proc)
                    raise TaskTimeout(f"handler {spec.name!r} ran past its {ctx.timeout:g} s limit")
                try:
                    msg = parent.recv()
                except EOFError:
                    proc.join(1)
                    return {
                        "status": "error",
                        "retryable": True,
                        "error": f"handler {spec.name!r} process died (exit {proc.exitcode})",
                    }
                if msg[0] == "progress":
                    report(msg[1], msg[2])
                else:
                    proc.join(1)
                    return dict(msg[1])
        except TaskTimeout as exc:
            return {"status": "error", "error": exc.message, "retryable": True, "code": "timeout"}
        finally:
            parent.close()

    def shutdown(self) -> None:
        """No new task runs; the commands that tasks still run are stopped (their
        tasks were handed back or cancelled: nothing waits for them any more)."""
        self.executor.shutdown(cancel=True)
        stopped = commands.stop_running(self.executor.idents)
        if stopped:
            log.info("stopped %d command(s) still running", stopped)


def _kill_group(proc: Any) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.join(1)
