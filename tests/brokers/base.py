"""What every private broker offers the matrix: start, stop, kill, restart, a URL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

#: ports the machine's own services use: never handed out, even when free right now
RESERVED = {1883, 4369, 5222, 5269, 5280, 5432, 5443, 5672, 6379, 8883, 15672, 25672}


class Unavailable(RuntimeError):
    """The broker's software is not installed here (the reason says what is missing)."""


def free_port(below: int = 65536) -> int:
    """A free loopback port under ``below`` (RabbitMQ's CLI adds 10 000 to its node's)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < below and port not in RESERVED:
            return port


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_listening(
    port: int, proc: subprocess.Popen[bytes] | None, what: str, timeout: float, log: Path
) -> None:
    deadline = time.monotonic() + timeout
    while not listening(port):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}) before listening:\n{tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not listening on {port} after {timeout:g}s:\n{tail(log)}")
        time.sleep(0.05)


def wait_closed(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while listening(port) and time.monotonic() < deadline:
        time.sleep(0.05)


def tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


class Server:
    """One private broker. Subclasses set ``name``, ``protocols`` (the MQTT versions it
    speaks, newest first) and ``keeps_sessions`` (what its docs promise across a restart),
    and implement :meth:`_launch` and :meth:`version`."""

    name = "?"
    protocols: tuple[str, ...] = ("3.1.1",)
    #: QoS 1 publishes are queued for an offline persistent session
    offline_queue = True
    #: (username, password) clients must present; None: anonymous
    credentials: tuple[str, str] | None = None
    #: how long a start may take on a loaded 2-core machine
    start_timeout = 30.0

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "server.log"

    @classmethod
    def check_installed(cls) -> None:
        """Raise :class:`Unavailable` when the software is missing."""

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def v5(self) -> bool:
        return "5" in self.protocols

    def shell_args(self) -> list[str]:
        """Connection arguments for mosquitto_pub/sub/rr in the broker's newest protocol."""
        return ["-h", "127.0.0.1", "-p", str(self.port), "-V", "5" if self.v5 else "311"]

    def version(self) -> str:
        return "?"

    def _launch(self) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        try:
            self.proc = self._launch_with(log)
        finally:
            log.close()
        wait_listening(self.port, self.proc, self.name, self.start_timeout, self.log_path)
        self._ready()

    def _launch_with(self, log: object) -> subprocess.Popen[bytes]:
        self._log = log
        return self._launch()

    def _ready(self) -> None:
        """Wait for whatever listening on the port does not yet prove."""

    def popen(self, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv,
            stdout=self._log,  # type: ignore[arg-type]
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=self.dir,
            start_new_session=True,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """Stop the broker we started (graceful by default: it saves what it persists)."""
        p = self.proc
        if p is None or p.poll() is not None:
            return
        # the whole process group: some brokers run behind a wrapper script
        os.killpg(p.pid, sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        wait_closed(self.port)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.kill()
