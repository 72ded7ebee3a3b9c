"""Private RabbitMQ nodes with the MQTT plugin: own node name, ports, data dirs and Erlang
cookie; they share the machine's epmd (port 4369), as every Erlang node does.

The machine's own RabbitMQ (node ``rabbit@localhost``, 5672/25672) is never touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

from tests.brokers.base import Server, Unavailable, free_port

SBIN = Path("/usr/lib/rabbitmq/bin")
SERVER = SBIN / "rabbitmq-server"
CTL = SBIN / "rabbitmqctl"
COOKIE = "clawd-broker-matrix-cookie"


class RabbitMQ(Server):
    name = "rabbitmq"
    protocols = ("3.1.1",)
    start_timeout = 120.0

    def __init__(self, workdir: Path, cookie: str = COOKIE) -> None:
        super().__init__(workdir)
        # the CLI tools take ports from dist_port + 10000 up: keep that under 65536
        self.amqp_port = free_port()
        self.dist_port = free_port(below=55000)
        self.node = f"clawd-test-{self.port}@localhost"
        home = self.dir / "home"
        home.mkdir(exist_ok=True)
        cookie_file = home / ".erlang.cookie"
        if not cookie_file.exists():
            cookie_file.write_text(cookie)
            cookie_file.chmod(0o400)
        (self.dir / "env.conf").write_text("")  # not the machine's rabbitmq-env.conf
        (self.dir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
            f"mqtt.listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "mqtt.allow_anonymous = true\nloopback_users = none\n"
            # a node kill must not stop the survivors: they keep serving
            "cluster_partition_handling = ignore\n"
        )
        self.env = {
            "HOME": str(home),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "env.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbitmq.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    @classmethod
    def check_installed(cls) -> None:
        if not SERVER.exists() or not shutil.which("erl"):
            raise Unavailable("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
        plugins = list(Path("/usr/lib/rabbitmq/lib").glob("*/plugins/rabbitmq_mqtt-*"))
        if not plugins:
            raise Unavailable("the rabbitmq_mqtt plugin is missing from this rabbitmq-server")

    def version(self) -> str:
        found = sorted(Path("/usr/lib/rabbitmq/lib").glob("rabbitmq_server-*"))
        return found[-1].name.split("-", 1)[1] if found else "?"

    def ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """rabbitmqctl against this node (its cookie, its name)."""
        return subprocess.run(
            [str(CTL), "-n", self.node, *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def _launch(self) -> subprocess.Popen[bytes]:
        return self.popen([str(SERVER)], env=self.env)

    def _ready(self) -> None:
        r = self.ctl("await_startup", "--timeout", str(int(self.start_timeout)))
        if r.returncode != 0:
            raise RuntimeError(f"{self.node} did not start: {r.stdout}{r.stderr}")

    def beam_pid(self) -> int | None:
        try:
            return int((self.dir / "rabbitmq.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        """kill -9 the Erlang VM itself (not just the wrapper), as a crash would."""
        pid = self.beam_pid()
        if pid is not None and self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.stop(signal.SIGKILL)

    def join(self, other: RabbitMQ) -> None:
        """Join ``other``'s cluster (stop_app, join_cluster, start_app)."""
        for args in (("stop_app",), ("join_cluster", other.node), ("start_app",)):
            r = self.ctl(*args)
            if r.returncode != 0:
                raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.node}: {r.stderr}")
