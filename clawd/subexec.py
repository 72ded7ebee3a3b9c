"""``claw.events subexec CHANNEL -- COMMAND...``: an ad-hoc worker serving one channel.

It is an ordinary clawd worker (:class:`clawd.worker.core.Worker`) whose only task type is
the channel, handled by the exec machinery (:class:`clawd.handlers.exec.ExecHandler`):
one process per task, its own process group, a time limit, stdout as the result. The
distributor learns the channel as a task type from the worker's announcement, so several
``subexec`` on one channel are competing consumers: each task runs once, on one of them.

Unlike a configured ``[handlers.exec]`` command, which runs under the daemon with a
minimal environment, a subexec command is the user's own: it runs in the directory and
with the environment ``subexec`` was started with (as ``xargs`` or ``find -exec`` do),
plus ``CLAW_MESSAGE``, ``CLAW_WORKER_ID`` and where the broker is, so ``claw.events pub``
inside it reaches the same clawd with no flags.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import socket
import time
from typing import Any

from clawd import broker as embedded
from clawd import config as cfgmod
from clawd.channels import WORKER_ENV, safe_id
from clawd.config import ExecConfig
from clawd.connection import Endpoint, Options
from clawd.handler import HandlerSpec, TaskContext
from clawd.handlers.exec import ExecHandler
from clawd.plugins import Plugins
from clawd.transport import Transport
from clawd.worker.core import Worker

log = logging.getLogger("clawd.subexec")

#: environment variables that tell ``claw.events`` (and clawd) where the broker is
BROKER_ENV = "CLAWD_BROKER_URL"
PREFIX_ENV = "CLAWD_PREFIX"
#: what a subexec command does not inherit: the service manager's sockets
_NOT_INHERITED = ("NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_FDS", "LISTEN_PID")


def default_worker_id() -> str:
    return safe_id(f"{socket.gethostname().split('.')[0]}-{os.getpid()}")


class ChannelCommand(ExecHandler):
    """The exec handler of a subexec: the user's environment, not the daemon's minimal one."""

    def __init__(self, channel: str, config: ExecConfig, base_env: dict[str, str]) -> None:
        super().__init__(channel, config)
        self.base_env = base_env

    def environment(self, ctx: TaskContext, message: bytes) -> dict[str, str]:
        claw = super().environment(ctx, message)  # also refuses an oversized message
        env = dict(self.base_env)
        env.update({k: v for k, v in claw.items() if k.startswith("CLAW_")})
        return env


class Subexec:
    """Serve ``channel`` with ``argv`` until stopped; a SIGINT/SIGTERM drains first."""

    def __init__(
        self,
        config: Any,
        channel: str,
        argv: list[str],
        *,
        worker_id: str | None = None,
        concurrency: int = 1,
        timeout: float = 300.0,
        config_path: str | None = None,
    ) -> None:
        self.config = config
        self.channel = channel
        w = config.worker
        w.id = worker_id or default_worker_id()
        w.concurrency = w.min_concurrency = w.max_concurrency = concurrency
        self.url = embedded.resolve_url(config)
        base_env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
        base_env[BROKER_ENV] = self.url
        base_env[PREFIX_ENV] = config.broker.prefix
        base_env[WORKER_ENV] = w.id
        if config_path:
            base_env["CLAWD_CONFIG"] = os.path.abspath(config_path)
        handler = ChannelCommand(
            channel,
            ExecConfig(command=argv, timeout=timeout, cwd=os.getcwd()),
            base_env,
        )
        # no plugins loaded: this worker serves the channel and nothing else
        plugins = Plugins(config)
        plugins.handlers[channel] = HandlerSpec(
            channel, handler, timeout, "thread", f"runs {shlex.join(argv)}", "subexec"
        )
        self.worker = Worker(config, plugins)
        self._stop = False

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop = True  # only an assignment: see Daemon._on_signal

    def run(self) -> int:
        """Connect, announce, serve until a signal, drain; returns an exit status."""
        cfg, w = self.config, self.worker
        b = cfg.broker
        t = Transport(
            Endpoint.parse_all(self.url),
            Options(
                client_id=f"clawd-worker-{w.id}",
                protocol=b.protocol,
                clean_start=True,
                will=w.will(),
                subscriptions=w.subscriptions(),
                keepalive=b.keepalive,
                username=b.username,
                password=cfgmod.read_password(b),
                tls_ca=b.tls_ca,
                tls_cert=b.tls_cert,
                tls_key=b.tls_key,
                tls_insecure=b.tls_insecure,
                driven=True,
            ),
            w.on_message,
            on_state=lambda up, why: w.announce() if up else None,
        )
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        w.attach(t)
        t.start(timeout=5)
        try:
            t.wait_subscribed(5)
            log.info("worker %s serves channel %s", w.id, self.channel)
            while not self._stop:
                w.run_once(0.2)
            w.drain(cfg.worker.drain_timeout)
            # an ad-hoc worker leaves no retained status behind (its id is not reused)
            cleared = t.publish_tracked(w.topics.worker(w.id), b"", retain=True)
            end = time.monotonic() + 2.0
            while not cleared.acknowledged and time.monotonic() < end:
                t.poll(0.05)  # everything before it is out once the broker has it
        finally:
            t.stop()
        return 0
