"""Fixtures: a private mosquitto per test on a free port, clawd daemons as real processes."""

from __future__ import annotations

import getpass
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clawd.systemd import NotifyListener

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """A mosquitto process of this test's own."""

    def __init__(self, workdir: Path, extra: str = "") -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def args(self) -> list[str]:
        return ["-h", "127.0.0.1", "-p", str(self.port)]

    def start(self) -> None:
        conf = self.dir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
            # started as root, mosquitto becomes user "mosquitto" and can then write neither
            # its log nor its persistence file here: a restart would silently lose sessions
            f"user {getpass.getuser()}\n"
            f"persistence true\npersistence_location {self.dir}/\n"
            "max_queued_messages 0\nmax_inflight_messages 0\n"
            f"log_dest file {self.dir}/mosquitto.log\n"
            # "subscribe" logs each subscription as it is made: what sub() waits for
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            f"log_type subscribe\n{self.extra}"
        )
        proc = self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=subprocess.PIPE)

        def listening() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(listening, what="mosquitto to listen")

    def log(self) -> str:
        return (self.dir / "mosquitto.log").read_text(errors="replace")

    def wait_subscribed(
        self, client_id: str, topic: str, proc: subprocess.Popen[Any] | None = None
    ) -> None:
        """Wait until the broker has made ``client_id``'s subscription to ``topic`` (its log
        says so before the SUBACK goes out): from then on it gets what is published."""
        line = re.compile(rf"^\d+: {re.escape(client_id)} \d {re.escape(topic)}$", re.M)

        def subscribed() -> bool:
            done = proc is not None and proc.poll() is not None
            if line.search(self.log()) is not None:
                return True
            if done and proc is not None and proc.returncode != 0:
                err = proc.stderr.read() if proc.stderr else ""
                raise AssertionError(f"{client_id} failed before subscribing: {err}")
            return done  # it exited content: it got its retained messages and left

        wait_until(subscribed, what=f"{client_id} to subscribe to {topic}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "mosquitto")
    b.start()
    yield b
    b.stop(signal.SIGKILL)


def write_config(path: Path, broker_url: str, state_dir: Path, extra: str = "") -> Path:
    path.write_text(
        f'[broker]\nurl = "{broker_url}"\n\n[daemon]\nstate_dir = "{state_dir}"\n\n{extra}'
    )
    return path


class Daemon:
    """A `clawd run` subprocess; started only when systemd-style READY=1 arrives."""

    def __init__(self, args: list[str], env: dict[str, str], tmp: Path, name: str) -> None:
        self.notify = NotifyListener(tmp / f"notify-{name}.sock")
        self.sock = self.notify.sock
        #: every notification received so far
        self.notes = self.notify.messages
        self.log_path = tmp / f"{name}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = {**env, "NOTIFY_SOCKET": str(self.notify.path)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clawd", *args],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_for(self, field: str, timeout: float = 20) -> str:
        try:
            return self.notify.wait_for(field, self.proc, timeout)
        except RuntimeError as exc:
            raise AssertionError(f"{exc}:\n{self.output()}") from None

    def output(self) -> str:
        if not self.log.closed:  # stop() closes it
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        self.notify.close()
        return self.proc.returncode


def json_lines(path: Path) -> list[Any]:
    """The complete lines of a JSON-lines file that a running process may be appending
    to: a last line without its newline is still being written, and is left out."""
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().split("\n")[:-1] if x.strip()]


def daemon_env(**extra: str) -> dict[str, str]:
    """This environment without clawd's and systemd's variables, this checkout first on
    the path, and ``extra``: what a test's clawd process starts from."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("CLAWD_", "NOTIFY_", "WATCHDOG_"))
    }
    env["PYTHONPATH"] = str(ROOT)
    return {**env, **extra}


@pytest.fixture
def clawd_env(tmp_path: Path) -> dict[str, str]:
    return daemon_env(CLAWD_STATE_DIR=str(tmp_path / "state"))


@pytest.fixture
def start_clawd(tmp_path: Path, clawd_env: dict[str, str]) -> Iterator[Any]:
    started: list[Daemon] = []

    def start(*args: str, env: dict[str, str] | None = None, ready: bool = True) -> Daemon:
        d = Daemon(list(args), {**clawd_env, **(env or {})}, tmp_path, f"clawd{len(started)}")
        started.append(d)
        if ready:
            d.wait_for("READY=1")
        return d

    yield start
    for d in started:
        d.stop(signal.SIGKILL if d.proc.poll() is None else signal.SIGTERM, timeout=5)


def run_cli(
    *args: str, env: dict[str, str], input: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clawd", *args],
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


_client_ids = itertools.count()


def client_id(name: str = "test-sub") -> str:
    """An MQTT client id no other client of this test run has."""
    return f"{name}-{os.getpid()}-{next(_client_ids)}"


def sub(
    broker: Broker, topic: str, count: int, timeout: float = 15, *extra: str
) -> subprocess.Popen[str]:
    """Start a real mosquitto_sub that exits after ``count`` messages; returns once the
    broker has made its subscription."""
    cid = client_id()
    p = subprocess.Popen(
        [
            "mosquitto_sub",
            *broker.args,
            "-i",
            cid,
            "-t",
            topic,
            "-C",
            str(count),
            "-W",
            str(int(timeout)),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    broker.wait_subscribed(cid, topic, p)
    return p


def pub(broker: Broker, topic: str, message: str | bytes, *extra: str) -> None:
    """Publish with the real mosquitto_pub (the payload goes through stdin: any size, any bytes)."""
    data = message.encode() if isinstance(message, str) else message
    subprocess.run(
        ["mosquitto_pub", *broker.args, "-q", "1", "-t", topic, "-s", *extra],
        input=data,
        check=True,
        timeout=10,
    )


def lines(p: subprocess.Popen[str]) -> list[dict[str, Any]]:
    out, err = p.communicate(timeout=30)
    return [json.loads(x) for x in out.splitlines() if x.strip()]


@pytest.fixture
def dropins(tmp_path: Path) -> Path:
    """The test handlers and the example reverse plugin in a drop-in dir clawd accepts."""
    d = tmp_path / "plugins"
    d.mkdir(mode=0o755)
    for src in [ROOT / "tests" / "dropins" / "testing.py", ROOT / "plugins" / "reverse.py"]:
        shutil.copy(src, d / src.name)
    d.chmod(0o755)
    return d


@pytest.fixture
def make_config(tmp_path: Path, broker: Broker, dropins: Path) -> Any:
    """Write a config for this test's broker and state dir, with the test drop-ins."""

    def make(extra: str = "", name: str = "clawd.toml") -> Path:
        """``extra`` is TOML after the [daemon] table (other tables, or more keys for it)."""
        path = tmp_path / name
        path.write_text(
            f'[broker]\nurl = "{broker.url}"\n\n[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
            f'plugin_dirs = ["{dropins}"]\n\n{extra}'
        )
        return path

    return make


def wait_until(predicate: Any, timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something true, and return that; fail the test
    after ``timeout`` seconds. The one place tests wait on a condition they cannot be told
    about (a file's content, a process's state): everything else waits on an event."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or predicate}")
        time.sleep(0.02)
