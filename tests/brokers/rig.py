"""clawd against one private broker: config, daemons, and the shell tools that watch them.

Everything that reads the broker goes through the real mosquitto clients (``mosquitto_pub``,
``mosquitto_sub``, ``mosquitto_rr``) in the broker's own protocol version, so the watcher
never depends on the client side under test.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from clawd.config_schema import BrokerConfig
from tests.brokers.base import Server
from tests.conftest import ROOT, Daemon, daemon_env, json_lines

#: clawd knows ``[broker] protocol`` (MQTT 3.1.1 and the fallback from v5)
HAS_PROTOCOL = "protocol" in {f.name for f in msgspec.structs.fields(BrokerConfig)}

CONFIG = """
[worker]
concurrency = 4
drain_timeout = 1.0

[distributor]
liveness_timeout = 3.0

[retry]
backoff_base = 0.2
backoff_cap = 1.0
"""


class Rig:
    """One broker and the clawd processes run against it."""

    def __init__(self, server: Server, workdir: Path, urls: Iterable[str] | None = None) -> None:
        self.server = server
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.exec_log = self.dir / "exec.jsonl"
        plugins = self.dir / "plugins"
        plugins.mkdir(mode=0o755, exist_ok=True)
        shutil.copy(ROOT / "tests" / "dropins" / "testing.py", plugins / "testing.py")
        plugins.chmod(0o755)
        url_list = list(urls) if urls is not None else [server.url]
        url = json.dumps(url_list if len(url_list) > 1 else url_list[0])
        broker = f"[broker]\nurl = {url}\n"
        if HAS_PROTOCOL:
            broker += 'protocol = "auto"\n'
        creds = getattr(server, "credentials", None)
        if creds is not None:
            pw = self.dir / "broker-password"
            pw.write_text(creds[1])
            pw.chmod(0o600)
            broker += f'username = "{creds[0]}"\npassword_file = "{pw}"\n'
        self.config = self.dir / "clawd.toml"
        self.config.write_text(
            f'{broker}\n[daemon]\nstate_dir = "{self.dir / "state"}"\n'
            f'plugin_dirs = ["{plugins}"]\nlog_level = "info"\n{CONFIG}'
        )
        self.env = daemon_env(CLAWD_TEST_EXEC_LOG=str(self.exec_log))
        self.daemons: list[Daemon] = []
        self.distributor: Daemon | None = None
        self.workers: dict[str, Daemon] = {}
        self.subs: list[ShellSub] = []
        self._n = 0

    # -- clawd ---------------------------------------------------------------------------

    def daemon(self, name: str, *args: str, timeout: float = 40) -> Daemon:
        """Start ``clawd run`` and wait for READY=1 (AssertionError with its log if not)."""
        self._n += 1
        d = Daemon(["-c", str(self.config), "run", *args], self.env, self.dir, f"{name}-{self._n}")
        self.daemons.append(d)
        try:
            d.wait_for("READY=1", timeout)
        finally:
            d.notify.path.unlink(missing_ok=True)
        return d

    def start_distributor(self) -> Daemon:
        self.distributor = self.daemon("dist", "--role", "distributor")
        return self.distributor

    def start_worker(self, wid: str) -> Daemon:
        d = self.workers[wid] = self.daemon(wid, "--role", "worker", "--worker-id", wid)
        return d

    def wait_worker_known(self, wid: str, since: int = 0, timeout: float = 30) -> None:
        """Wait until the distributor logged taking ``wid`` on (after offset ``since``)."""
        d = self.distributor
        assert d is not None
        wait_for(lambda: f"worker {wid} online" in d.output()[since:], timeout, f"{wid} online")

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "clawd", "-c", str(self.config), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def executions(self) -> list[dict[str, Any]]:
        return json_lines(self.exec_log)

    # -- shell ---------------------------------------------------------------------------

    def shell_args(self) -> list[str]:
        args = self.server.shell_args()
        creds = getattr(self.server, "credentials", None)
        if creds is not None:
            args += ["-u", creds[0], "-P", creds[1]]
        return args

    def pub(self, topic: str, lines: list[str]) -> subprocess.CompletedProcess[bytes]:
        """mosquitto_pub, QoS 1, one message per line (exits once every PUBACK is in)."""
        return subprocess.run(
            ["mosquitto_pub", *self.shell_args(), "-q", "1", "-t", topic, "-l"],
            input="".join(f"{x}\n" for x in lines).encode(),
            capture_output=True,
            timeout=60,
        )

    def sub(self, topic: str) -> ShellSub:
        s = ShellSub(self.shell_args(), topic, f"matrix-sub-{os.getpid()}-{len(self.subs)}")
        self.subs.append(s)
        return s

    def close(self) -> None:
        for s in self.subs:
            s.close()
        for d in self.daemons:
            d.stop(signal.SIGKILL if d.proc.poll() is None else signal.SIGTERM, timeout=5)

    def logs(self, n: int = 1500) -> str:
        return "\n".join(
            f"== {p.name}\n{p.read_text(errors='replace')[-n:]}"
            for p in sorted(self.dir.glob("*.log"))
        )


class ShellSub:
    """A real ``mosquitto_sub -v`` (debug on: its SUBACK is the event we wait for);
    collects ``topic -> payload`` of every message."""

    def __init__(self, args: list[str], topic: str, client_id: str) -> None:
        self.topic = topic
        self.messages: queue.Queue[tuple[str, str]] = queue.Queue()
        self.seen: dict[str, list[str]] = {}
        self.subscribed = threading.Event()
        self.proc = subprocess.Popen(
            # line-buffered: its debug lines (the SUBACK) are not flushed otherwise
            ["stdbuf", "-oL", "mosquitto_sub", *args, "-q", "1", "-i", client_id]
            + ["-t", topic, "-v", "-d"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        prefix = self.topic.split("/", 1)[0] + "/"
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.output.append(line)
            if line.startswith("Client ") and "received SUBACK" in line:
                self.subscribed.set()
            elif line.startswith(prefix) and " " in line:
                topic, payload = line.split(" ", 1)
                self.seen.setdefault(topic, []).append(payload)
                self.messages.put((topic, payload))
        self.subscribed.set()  # it exited: nobody waits for a SUBACK that will not come

    def wait_subscribed(self, timeout: float = 30) -> None:
        if not self.subscribed.wait(timeout) or self.proc.poll() is not None:
            raise AssertionError(f"mosquitto_sub did not subscribe: {self.output[-5:]}")

    def results(self) -> dict[str, dict[str, Any]]:
        """task id -> the last result document seen for it."""
        out = {}
        for topic, payloads in list(self.seen.items()):
            try:
                out[topic.rsplit("/", 1)[1]] = json.loads(payloads[-1])
            except ValueError:
                continue
        return out

    def wait_results(self, ids: set[str], timeout: float) -> dict[str, dict[str, Any]]:
        """Every result of ``ids`` seen within ``timeout`` (fewer when some never came)."""
        deadline = time.monotonic() + timeout
        while True:
            got = {k: v for k, v in self.results().items() if k in ids}
            left = deadline - time.monotonic()
            if len(got) == len(ids) or left <= 0 or self.proc.poll() is not None:
                return got
            with contextlib.suppress(queue.Empty):
                self.messages.get(timeout=min(left, 1.0))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    """Poll a condition nothing announces (a log line); AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)
