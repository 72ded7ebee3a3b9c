"""A private ejabberd (mod_mqtt, MQTT v5 and 3.1.1): own node name, config, spool, logs,
ports and Erlang cookie, started with ``ejabberdctl foreground`` (which runs it as the
``ejabberd`` user, so its directories are handed to that user)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.brokers.base import Server, Unavailable, free_port

CTL = shutil.which("ejabberdctl") or "/usr/sbin/ejabberdctl"
COOKIE = "clawd-broker-matrix-cookie"

CONFIG = """\
hosts:
  - localhost
loglevel: info
hide_sensitive_log_data: true
auth_method: [anonymous]
anonymous_protocol: login_anon
allow_multiple_connections: true
acl:
  anyone:
    user_regexp: ""
access_rules:
  mqtt_any:
    allow: all
listen:
  -
    port: {port}
    ip: "127.0.0.1"
    module: mod_mqtt
    backlog: 1000
modules:
  mod_mqtt:
    session_expiry: 1 hour
    max_queue: 100000
    queue_type: {queue_type}
"""


class Ejabberd(Server):
    name = "ejabberd"
    protocols = ("5", "3.1.1")
    start_timeout = 120.0
    #: anonymous login (login_anon) still wants a user name and some password
    credentials = ("clawd", "clawd-test")

    def __init__(self, workdir: Path, queue_type: str = "ram") -> None:
        super().__init__(workdir)
        self.dist_port = free_port()
        self.node = f"clawd-test-{self.port}@localhost"
        for sub in ("spool", "logs"):
            (self.dir / sub).mkdir(exist_ok=True)
        (self.dir / "ejabberd.yml").write_text(CONFIG.format(port=self.port, queue_type=queue_type))
        common = (
            f"ERLANG_NODE={self.node}\nINET_DIST_INTERFACE=127.0.0.1\n"
            f'ERL_EPMD_ADDRESS=127.0.0.1\nERL_OPTIONS="-setcookie {COOKIE}"\n'
            f"EJABBERD_BYPASS_WARNINGS=true\nEJABBERD_PID_PATH={self.dir}/ejabberd.pid\n"
        )
        # the node listens for its peers on a port of its own; ejabberdctl's client node,
        # given the same window, could not start beside it
        (self.dir / "ejabberdctl.cfg").write_text(
            f"{common}FIREWALL_WINDOW={self.dist_port}-{self.dist_port}\n"
        )
        (self.dir / "ctl-client.cfg").write_text(common)
        try:
            user = pwd.getpwnam("ejabberd")
        except KeyError:
            return
        if os.geteuid() == 0:
            for p in [self.dir, *self.dir.rglob("*")]:
                os.chown(p, user.pw_uid, user.pw_gid)
            # ejabberdctl's su must be able to reach the directory
            for parent in self.dir.parents:
                if parent == Path("/tmp"):
                    break
                parent.chmod(parent.stat().st_mode | 0o011)

    @classmethod
    def check_installed(cls) -> None:
        if not Path(CTL).exists():
            raise Unavailable("ejabberd is not installed (apt-get install ejabberd)")

    def version(self) -> str:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "ejabberd"], capture_output=True, text=True
        ).stdout
        return out.split("-")[0] or "?"

    def ctl_args(self, cfg: str = "ctl-client.cfg") -> list[str]:
        return [
            CTL,
            "--config-dir", str(self.dir),
            "--config", str(self.dir / "ejabberd.yml"),
            "--ctl-config", str(self.dir / cfg),
            "--logs", str(self.dir / "logs"),
            "--spool", str(self.dir / "spool"),
            "--node", self.node,
        ]  # fmt: skip

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.ctl_args(), *args], capture_output=True, text=True, timeout=timeout
        )

    def _launch(self) -> subprocess.Popen[bytes]:
        (self.dir / "ejabberd.pid").unlink(missing_ok=True)
        return self.popen([*self.ctl_args("ejabberdctl.cfg"), "foreground"])

    def _ready(self) -> None:
        r = self.ctl("status")
        if r.returncode != 0:
            raise RuntimeError(f"{self.node} did not start: {r.stdout}{r.stderr}")

    def beam_pid(self) -> int | None:
        try:
            return int((self.dir / "ejabberd.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """ejabberdctl's su runs the VM in a session of its own: signal the VM by its pid
        file (``ejabberdctl stop`` for a graceful stop), then the wrapper."""
        pid = self.beam_pid()
        if pid is not None and self.proc is not None and self.proc.poll() is None:
            if sig == signal.SIGTERM:
                self.ctl("stop", timeout=timeout)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        super().stop(sig, timeout)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False
