"""clawd end to end over MQTT 3.1.1: on mosquitto with ``protocol = "3.1.1"``, and on amqtt
(a broker that speaks 3.1.1 only) with ``protocol = "auto"`` falling back by itself.

Submit and wait, a shell producer, ``clawd task`` (its reply travels on the ``reply_to``
topic in the request's payload, there being no v5 response topic) and ``clawd cancel``.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, lines, pub, run_cli, sub, wait_until


class Amqtt:
    """An amqtt broker process of this test's own (MQTT 3.1.1 only)."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = workdir / "amqtt.yaml"
        conf.write_text(
            "listeners:\n  default:\n    type: tcp\n"
            f"    bind: 127.0.0.1:{self.port}\n"
            "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
            "    allow_anonymous: true\n"
        )
        self.log = workdir / "amqtt.log"
        script = "from amqtt.scripts.broker_script import main; main()"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", script, "-c", str(conf)], stdout=out, stderr=out
            )

        def listening() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(self.log.read_text())
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(listening, timeout=30, what="amqtt to listen")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def amqtt(tmp_path: Path) -> Iterator[Amqtt]:
    pytest.importorskip("amqtt", reason="amqtt is in the [test] extra; pip install -e '.[test]'")
    b = Amqtt(tmp_path / "amqtt")
    yield b
    b.stop()


def _write(tmp_path: Path, url: str, protocol: str) -> str:
    path = tmp_path / "clawd.toml"
    path.write_text(
        f'[broker]\nurl = "{url}"\nprotocol = "{protocol}"\n\n'
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n\n[worker]\nid = "w311"\n'
    )
    return str(path)


def _submit_task_and_cancel(cfg: str, env: dict[str, str]) -> None:
    args = ("submit", "compute", "2+2", "--id", "c311", "--wait", "--json")
    out = run_cli("-c", cfg, *args, env=env)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["status"] == "ok" and doc["result"] == 4 and doc["id"] == "c311"
    # an operator request: the distributor answers on the payload's reply_to topic
    out = run_cli("-c", cfg, "task", "c311", "--json", "--timeout", "20", env=env)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["state"] == "done" and doc.get("source") != "journal", doc
    out = run_cli("-c", cfg, "cancel", "nope", "--timeout", "20", env=env)
    assert "nope" in out.stdout + out.stderr and "no distributor answered" not in out.stderr


def test_mosquitto_with_protocol_311_end_to_end(tmp_path, broker, start_clawd, clawd_env):
    cfg = _write(tmp_path, broker.url, "3.1.1")
    d = start_clawd("-c", cfg, "run")
    _submit_task_and_cancel(cfg, clawd_env)
    # a shell producer (3.1.1 as well) gets the same service
    results = sub(broker, "clawd/results/+", 1, 30, "-V", "mqttv311")
    pub(broker, "clawd/tasks/normal/compute", "6*7", "-V", "mqttv311")
    (doc,) = lines(results)
    assert doc["status"] == "ok" and doc["result"] == 42
    # every connection clawd made was a 3.1.1 one: mosquitto logs "p2" (v5 is "p5")
    log = broker.log()
    connects = re.findall(r"New client connected from \S+ as (clawd-\S+) \(p(\d)", log)
    assert connects and {p for _, p in connects} == {"2"}, log
    assert d.proc.poll() is None


def test_amqtt_with_protocol_auto_falls_back_end_to_end(tmp_path, amqtt, start_clawd, clawd_env):
    cfg = _write(tmp_path, amqtt.url, "auto")
    d = start_clawd("-c", cfg, "run")
    _submit_task_and_cancel(cfg, clawd_env)
    assert "falling back to MQTT 3.1.1" in d.output()
    assert "TLS" not in d.output()
