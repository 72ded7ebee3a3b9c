"""The embedded broker: a private mosquitto that clawd starts, supervises and stops.

With ``broker.url = "embedded"`` the first ``clawd run`` starts mosquitto on a loopback
port (the same port again after a restart, when free) and a unix socket under the state
dir, and records both in ``<state_dir>/broker.json``; every other clawd command with the
same state dir reads that file to find it.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from clawd.connection import url_text
from clawd.errors import BrokerError

log = logging.getLogger("clawd.broker")

INSTALL_HINT = (
    "the embedded broker needs the mosquitto binary, which was not found on PATH; "
    "install it (Debian/Ubuntu: apt-get install mosquitto mosquitto-clients; "
    "Fedora: dnf install mosquitto; macOS: brew install mosquitto) "
    'or point [broker] url at an existing broker, e.g. url = "mqtt://127.0.0.1:1883"'
)

CONF = """\
# written by clawd for its embedded broker; edits are overwritten on start
listener {port} 127.0.0.1
listener 0 {sock}
allow_anonymous true
# without it every small publish to a client waits ~40 ms for a delayed ACK (Nagle)
set_tcp_nodelay true
# mosquitto started as root switches to user "mosquitto", who cannot use our state dir
user {user}
persistence true
persistence_location {dir}/
autosave_interval 5
# the distributor drains the broker into its journal, but while it is down every
# accepted submission must wait here: no per-client queue limit may drop one
max_queued_messages 0
max_inflight_messages 0
log_dest file {dir}/mosquitto.log
log_type error
log_type warning
log_type notice
"""


def _free_port(preferred: int | None = None) -> int:
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise BrokerError("no free loopback port for the embedded broker")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def info_path(state_dir: Path) -> Path:
    return state_dir / "broker.json"


def find(state_dir: Path) -> dict[str, Any] | None:
    """The running embedded broker of this state dir, or None."""
    try:
        info = json.loads(info_path(state_dir).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not _alive(int(info.get("pid", 0))):
        return None
    return info


def resolve_url(config: Any) -> str:
    """The broker URL to connect to; for ``embedded``, the running embedded broker's."""
    url = url_text(config.broker.url)
    if url != "embedded":
        return url
    info = find(config.state_path)
    if info is None:
        raise BrokerError(
            f"no embedded broker is running for state dir {config.state_path}; "
            "start one with `clawd run` (or set [broker] url)"
        )
    return str(info["url"])


class EmbeddedBroker:
    """A mosquitto process owned by this clawd process."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "broker"
        self.state_dir = state_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.url = ""
        self.restarts = 0

    def start(self) -> str:
        exe = shutil.which("mosquitto") or next(
            (
                p
                for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
                if os.access(p, os.X_OK)
            ),
            None,
        )
        if exe is None:
            raise BrokerError(INSTALL_HINT)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        prior = None
        with contextlib.suppress(OSError, ValueError, AttributeError):
            prior = json.loads(info_path(self.state_dir).read_text()).get("port")
        self.port = _free_port(prior)
        sock = self.dir / "mqtt.sock"
        if sock.exists():
            sock.unlink()
        conf = self.dir / "mosquitto.conf"
        conf.write_text(
            CONF.format(port=self.port, sock=sock, dir=self.dir, user=getpass.getuser())
        )
        self.proc = subprocess.Popen(
            [exe, "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._wait_ready()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        info = {"url": self.url, "port": self.port, "unix": str(sock), "pid": self.proc.pid}
        info_path(self.state_dir).write_text(json.dumps(info) + "\n")
        log.info("embedded broker (mosquitto pid %d) on %s and %s", self.proc.pid, self.url, sock)
        return self.url

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = (self.proc.stderr.read() if self.proc.stderr else b"").decode(
                    errors="replace"
                )
                raise BrokerError(f"embedded mosquitto exited at start: {err.strip()[-500:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise BrokerError("embedded mosquitto did not start listening within 10 s")

    def check(self) -> bool:
        """Restart the broker if it died; True when it had to."""
        if self.proc is None or self.proc.poll() is None:
            return False
        log.error("embedded mosquitto exited (status %s); restarting it", self.proc.returncode)
        self.restarts += 1
        self.start()
        return True

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError):
            info_path(self.state_dir).unlink()
