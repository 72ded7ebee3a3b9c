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
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from clawd.envelope import encode
from clawd.errors import TaskError, TaskTimeout
from clawd.handler import HandlerSpec, TaskContext

log = logging.getLogger("clawd.worker")

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
    """Up to ``limit`` threads, started only when no thread is free, each running the
    queued jobs in turn.

    What :class:`~concurrent.futures.ThreadPoolExecutor` does for the pool, without what
    the pool never uses: a ``Future``, a work item and a semaphore round per job (7.8 µs of
    CPU a job against 0.6 µs, ``python -m bench.micro pool``). Its threads are daemon
    threads: a handler that never returns does not keep the process from exiting.
    """

    def __init__(self, limit: int, name: str = "clawd-task") -> None:
        self.limit = limit
        self.name = name
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        #: threads waiting for a job that no submit has claimed yet
        self._idle = 0
        self._closed = False

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the pool is shut down")
            if self._idle:
                self._idle -= 1  # that thread takes it
                start = False
            else:
                start = self._threads < self.limit
                self._threads += start
        self._jobs.put(job)
        if start:
            t = threading.Thread(target=self._run, name=f"{self.name}-{self._threads}", daemon=True)
            t.start()

    def _run(self) -> None:
        jobs = self._jobs
        while True:
            job = jobs.get()
            if job is None:
                return
            try:
                job()
            except BaseException:  # a job's own errors are its outcome; this is a bug
                log.exception("a pool thread's job failed")
            with self._lock:
                self._idle += 1

    def shutdown(self, cancel: bool = False) -> None:
        """Stop the threads once the jobs queued now have run (``cancel``: drop those)."""
        with self._lock:
            self._closed = True
            threads = self._threads
        if cancel:
            with contextlib.suppress(queue.Empty):
                while True:
                    self._jobs.get_nowait()
        for _ in range(threads):
            self._jobs.put(None)


class Pool:
    """Runs tasks; calls ``on_done(task_id, outcome, seconds)`` from a pool thread."""

    def __init__(self, slots: int) -> None:
        # spare threads: a timed-out thread handler keeps its thread until it returns
        self.executor = Threads(slots * 2 + 4)
        self._mp = multiprocessing.get_context("fork")

    def submit(
        self,
        spec: HandlerSpec,
        ctx: TaskContext,
        on_done: Callable[[str, Outcome, float], None],
        before: Callable[[], None] = lambda: None,
    ) -> None:
        def run() -> None:
            before()
            start = time.monotonic()
            ctx.started = start
            if spec.isolation == "process":
                out = self._run_process(spec, ctx)
            else:
                out = call_handler(spec, ctx)
            on_done(ctx.id, out, time.monotonic() - start)

        self.executor.submit(run)

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
        self.executor.shutdown(cancel=True)


def _kill_group(proc: Any) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.join(1)
