"""The local scaler: starts and stops worker processes on the distributor's machine.

A built-in plugin (entry point ``local_scaler``) implementing ``clawd_scale``. With
``[scaler] enabled = true`` it keeps between ``min_workers`` and ``max_workers`` worker
processes of its own running, following ``recommended_workers``, changing at most once per
``cooldown`` seconds. It counts and stops only the workers it started (ids
``<host>-scaled-<n>``); a worker it did not start is never touched. Stopping is SIGTERM,
so a worker drains: running tasks finish, the rest are handed back.

Each worker runs in a process group of its own (a new session): a terminal's Ctrl-C does
not reach it, and :func:`shutdown` can kill the whole group if a drain overruns.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from clawd import hookimpl

log = logging.getLogger("clawd.scaler")

#: seconds past ``[worker] drain_timeout`` before a stopping worker's group is killed
GRACE = 5.0
#: variables that belong to this daemon's own supervision, never to its children
_PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")


class LocalScaler:
    """The worker processes this machine's scaler started, and the decisions about them.

    :param env: the environment for workers; None: this process's at start time.
    :param clock: seconds, monotonic (injectable for tests).
    :param host: the host part of worker ids; None: the short host name.
    """

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        host: str | None = None,
    ) -> None:
        self.env = env
        self.clock = clock
        self.host = host or socket.gethostname().split(".")[0]
        #: n -> a running worker this scaler started
        self.running: dict[int, subprocess.Popen[bytes]] = {}
        #: n -> (a worker sent SIGTERM, when)
        self.stopping: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
        self.drain_timeout = 30.0
        self._last_change = -math.inf
        self._lock = threading.Lock()
        self._atexit = False

    # -- deciding ------------------------------------------------------------------------

    def worker_id(self, n: int) -> str:
        return f"{self.host}-scaled-{n}"

    @property
    def own_ids(self) -> set[str]:
        """Ids of every worker this scaler started that has not exited yet."""
        return {self.worker_id(n) for n in (*self.running, *self.stopping)}

    def target(self, signals: Mapping[str, Any], config: Any) -> int:
        """How many workers of its own this scaler should run.

        ``recommended_workers`` is the total the queue needs; workers online that this
        scaler did not start already provide part of it. The rest is clamped to
        ``[min_workers, max_workers]``.
        """
        s = config.scaler
        try:
            recommended = int(signals["recommended_workers"])
        except (KeyError, TypeError, ValueError):
            raise ValueError("signals have no integer recommended_workers") from None
        own = self.own_ids
        others = sum(1 for w in signals.get("online_workers") or () if w not in own)
        return min(s.max_workers, max(s.min_workers, recommended - others))

    def scale(self, signals: Mapping[str, Any], config: Any) -> None:
        """Start or stop workers toward :meth:`target`; at most one change per cooldown."""
        with self._lock:
            self.drain_timeout = config.worker.drain_timeout
            self._reap()
            if not config.scaler.enabled:
                if self.running:
                    log.info("scaler disabled: stopping the %d worker(s) it started", len(self))
                    self._stop(len(self.running))
                return
            want, have = self.target(signals, config), len(self.running)
            now = self.clock()
            if want == have or now - self._last_change < config.scaler.cooldown:
                return
            self._last_change = now
            why = signals.get("reason", "")
            log.info("scaling local workers %d -> %d: %s", have, want, why)
            if want > have:
                self._start(want - have, config)
            else:
                self._stop(have - want)

    def __len__(self) -> int:
        return len(self.running)

    # -- processes -----------------------------------------------------------------------

    def command(self, config: Any, worker_id: str) -> list[str]:
        """The argv of one worker: ``[scaler] command`` or this clawd, plus its id."""
        argv = list(config.scaler.command)
        if not argv:
            argv = [sys.executable, "-m", "clawd"]
            if config.sources:  # the same file this daemon runs with (its conf.d follows)
                argv += ["-c", config.sources[0]]
            argv += ["run", "--role", "worker"]
        return [*argv, "--worker-id", worker_id]

    def _environment(self, worker_id: str) -> dict[str, str]:
        base = os.environ if self.env is None else self.env
        env = {k: v for k, v in base.items() if k not in _PRIVATE_ENV}
        env["CLAWD_WORKER_ID"] = worker_id
        return env

    def _start(self, count: int, config: Any) -> None:
        for _ in range(count):
            n = next(
                i
                for i in range(1, len(self.running) + len(self.stopping) + 2)
                if i not in self.running and i not in self.stopping
            )
            wid = self.worker_id(n)
            argv = self.command(config, wid)
            try:
                proc = subprocess.Popen(
                    argv,
                    env=self._environment(wid),
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as exc:
                log.error("cannot start worker %s: %s: %s", wid, argv[0], exc.strerror or exc)
                return
            self.running[n] = proc
            log.info("started worker %s (pid %d)", wid, proc.pid)
            if not self._atexit:
                atexit.register(self.shutdown)
                self._atexit = True

    def _stop(self, count: int) -> None:
        now = self.clock()
        for n in sorted(self.running, reverse=True)[:count]:
            proc = self.running.pop(n)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            self.stopping[n] = (proc, now)
            log.info("stopping worker %s (pid %d): it drains first", self.worker_id(n), proc.pid)

    def _reap(self) -> None:
        """Forget workers that exited; kill the group of one whose drain overran."""
        for n, proc in list(self.running.items()):
            if proc.poll() is not None:
                del self.running[n]
                log.warning(
                    "worker %s (pid %d) exited by itself with status %s",
                    self.worker_id(n),
                    proc.pid,
                    proc.returncode,
                )
        now = self.clock()
        for n, (proc, since) in list(self.stopping.items()):
            if proc.poll() is not None:
                del self.stopping[n]
                log.info("worker %s stopped (status %s)", self.worker_id(n), proc.returncode)
            elif now - since > self.drain_timeout + GRACE:
                log.warning("worker %s did not stop in time: killing it", self.worker_id(n))
                _kill_group(proc)

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop every worker this scaler started and wait for them; kill stragglers.

        :param timeout: seconds to wait for drains; None: ``[worker] drain_timeout`` plus
            a few seconds.
        """
        with self._lock:
            self._stop(len(self.running))
            procs = [p for p, _ in self.stopping.values()]
            self.stopping.clear()
        end = time.monotonic() + (self.drain_timeout + GRACE if timeout is None else timeout)
        for proc in procs:
            try:
                proc.wait(max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not stop in time: killing it", proc.pid)
                _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # only while unreaped: until then its pid, and so its group id, cannot be reused
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


#: the plugin's state: hook implementations are module functions, so it lives here
scaler = LocalScaler()


@hookimpl(optionalhook=True)
def clawd_scale(signals: dict[str, Any], config: Any) -> None:
    """Follow ``recommended_workers`` with local worker processes (``[scaler]``)."""
    if config.scaler.enabled or len(scaler):
        scaler.scale(signals, config)


def shutdown(timeout: float | None = None) -> None:
    """Stop every worker the local scaler started; for the daemon's shutdown."""
    scaler.shutdown(timeout)
