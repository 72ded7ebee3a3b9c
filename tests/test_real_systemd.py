"""clawd under a real systemd, installed as the README says.

One systemd (see tests/systemd_boot.py) for the module, one mosquitto on a free port of
the host's loopback (with a password, so the credential path is exercised), and clawd
installed non-editable into a virtualenv under /opt (a unit cannot run code from /root or
/tmp). The README's "Run under systemd" commands run verbatim inside, with the broker's
address changed to the test broker's.

For the watchdog scenarios a drop-in (what ``systemctl edit clawd`` writes) shortens
``WatchdogSec=`` to 3 s, ``TimeoutAbortSec=`` to 3 s and ``RestartSec=`` to 1 s, so a
"three times WatchdogSec" outage takes 10 s instead of 90.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import systemd_boot
from tests.conftest import ROOT, Broker

PASSWORD = "change-me"  # the README's example password
USER = "clawd"
WATCHDOG = 3  # seconds, set by the drop-in for the watchdog scenarios

unavailable = systemd_boot.unavailable()
pytestmark = pytest.mark.skipif(unavailable is not None, reason=str(unavailable))


def readme_steps(broker_url: str) -> str:
    """The README's systemd commands, verbatim but for the broker address."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Run under systemd", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    steps = next(b for b in blocks if "systemctl enable --now clawd" in b)
    assert "mqtt://127.0.0.1:1883" in steps
    return steps.replace("mqtt://127.0.0.1:1883", broker_url)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    work = tmp_path_factory.mktemp("systemd-broker")
    passwords = work / "passwords"
    passwords.touch(mode=0o600)
    subprocess.run(["mosquitto_passwd", "-b", str(passwords), USER, PASSWORD], check=True)
    b = Broker(
        work / "mosquitto",
        extra=f"password_file {passwords}\nallow_anonymous false\nlog_type all\n",
    )
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = systemd_boot.install_clawd(ROOT, tmp_path_factory.mktemp("systemd-src"))
    yield path
    systemd_boot.remove_install(path)


@pytest.fixture(scope="module")
def machine(
    tmp_path_factory: pytest.TempPathFactory, venv: Path, broker: Broker
) -> Iterator[systemd_boot.Machine]:
    m = systemd_boot.Machine(tmp_path_factory.mktemp("systemd-machine"))
    m.env["PATH"] = f"{venv}/bin:" + m.env["PATH"]
    try:
        m.boot()
    except RuntimeError:  # seen once in many boots: give it a second chance, then fail
        m.kill()
        m.boot()
    try:
        # notifications (READY, STATUS, RELOADING ...) are logged by PID 1 at debug level
        m.sh("systemd-analyze log-level debug")
        m.sh("set -e\n" + readme_steps(broker.url))
        yield m
    finally:
        m.save_journal()
        m.kill()


# -- helpers ---------------------------------------------------------------------------


def auth(broker: Broker) -> list[str]:
    return [*broker.args, "-u", USER, "-P", PASSWORD]


def round_trip(broker: Broker, expression: str, timeout: int = 60) -> dict[str, Any]:
    """Submit a compute task with MQTT v5 request/reply and return its result."""
    reply = f"test/reply/{uuid.uuid4().hex}"
    p = subprocess.run(
        ["mosquitto_rr", *auth(broker), "-V", "5", "-q", "1", "-W", str(timeout)]
        + ["-t", "clawd/tasks/normal/compute", "-e", reply, "-m", expression],
        capture_output=True,
        text=True,
        timeout=timeout + 10,
    )
    assert p.returncode == 0, p.stderr
    return dict(json.loads(p.stdout))


def retained(broker: Broker, topic: str, accept: Callable[[dict], bool]) -> dict[str, Any]:
    """The first message on ``topic`` that ``accept`` takes (retained ones included)."""
    p = subprocess.Popen(
        ["mosquitto_sub", *auth(broker), "-W", "30", "-t", topic],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    try:
        for line in p.stdout:
            doc = json.loads(line)
            if accept(doc):
                return dict(doc)
    finally:
        p.kill()
        p.wait()
    raise AssertionError(f"nothing accepted on {topic}")


STATE = ("ActiveState", "SubState", "StatusText", "NRestarts", "Result", "MainPID")


def wait_state(
    m: systemd_boot.Machine, unit: str, accept: Callable[[dict], bool], timeout: float = 60
) -> dict[str, str]:
    end = time.monotonic() + timeout
    while True:
        state = m.show(unit, *STATE)
        if accept(state):
            return state
        if time.monotonic() > end:
            raise AssertionError(f"{unit} never reached the expected state; last: {state}")
        time.sleep(0.2)


def reload(m: systemd_boot.Machine) -> None:
    """``systemctl reload clawd``: it returns once clawd runs the new configuration."""
    m.sh("systemctl reload clawd")
    state = m.show("clawd", *STATE)
    assert state["ActiveState"] == "active", state


def drop_in(m: systemd_boot.Machine, unit: str, text: str) -> None:
    """What ``systemctl edit UNIT`` writes: /etc/systemd/system/UNIT.d/override.conf."""
    unit = unit if "." in unit else f"{unit}.service"
    m.write(f"/etc/systemd/system/{unit}.d/override.conf", text)
    m.sh("systemctl daemon-reload")


def config(m: systemd_boot.Machine, broker: Broker, extra: str = "") -> None:
    m.write(
        "/etc/clawd/clawd.toml",
        f'[broker]\nurl = "{broker.url}"\nusername = "{USER}"\n\n{extra}',
    )


# -- the scenarios ---------------------------------------------------------------------


def test_readme_steps_start_both_units(machine: systemd_boot.Machine) -> None:
    state = machine.show("clawd", *STATE)
    assert (state["ActiveState"], state["SubState"], state["NRestarts"]) == (
        "active",
        "running",
        "0",
    )
    # the worker instance and the unit's own worker: two workers, both counted
    status = wait_state(machine, "clawd", lambda s: "2 workers" in s["StatusText"])
    assert re.match(
        r"\d+ queued, \d+ in flight, 2 workers; worker \S+-1: \d+ running$", status["StatusText"]
    ), status
    assert machine.show("clawd-worker@2", "ActiveState")["ActiveState"] == "active"
    journal = machine.journal("clawd")
    assert "clawd running: roles distributor, worker" in journal
    assert "configuration reloaded from /etc/clawd/clawd.toml" in journal
    assert "Traceback" not in journal


def test_ready_only_after_the_broker_acknowledged_subscriptions(
    machine: systemd_boot.Machine, broker: Broker
) -> None:
    log = broker.dir / "mosquitto.log"
    before = len(log.read_text())
    machine.sh("systemctl restart clawd")  # returns once systemd got READY=1
    since = log.read_text()[before:]  # what the broker had done by then
    assert "Sending SUBACK to clawd-distributor-clawd" in since
    assert re.search(r"Sending SUBACK to clawd-worker-\S+-1", since)
    notes = machine.notifications("clawd")
    assert any(n.startswith("READY=1") for n in notes), notes


def test_task_round_trip_through_the_unit(machine: systemd_boot.Machine, broker: Broker) -> None:
    result = round_trip(broker, "2^10")
    assert (result["status"], result["result"]) == ("ok", 1024)


def test_a_second_worker_instance_announces_its_own_id(
    machine: systemd_boot.Machine, broker: Broker
) -> None:
    host = machine.sh("hostname").stdout.strip()
    doc = retained(broker, f"clawd/workers/{host}-2", lambda d: d["state"] == "online")
    assert doc["id"] == f"{host}-2"
    main = retained(broker, f"clawd/workers/{host}-1", lambda d: d["state"] == "online")
    assert main["pid"] != doc["pid"]


def test_no_password_file_no_password(tmp_path: Path, machine: systemd_boot.Machine) -> None:
    anonymous = Broker(tmp_path / "anonymous")
    anonymous.start()
    try:
        machine.write("/etc/clawd/anonymous.toml", f'[broker]\nurl = "{anonymous.url}"\n')
        drop_in(
            machine,
            "clawd-worker@3",
            "[Service]\nEnvironment=CLAWD_CONFIG=/etc/clawd/anonymous.toml\n",
        )
        machine.sh("mv /etc/clawd/broker-password /etc/clawd/broker-password.away")
        try:
            machine.sh("systemctl start clawd-worker@3")
        finally:
            machine.sh("mv /etc/clawd/broker-password.away /etc/clawd/broker-password")
        state = machine.show("clawd-worker@3", *STATE)
        assert (state["ActiveState"], state["Result"]) == ("active", "success"), state
        machine.sh("systemctl stop clawd-worker@3")
    finally:
        anonymous.stop()


def test_reload_applies_a_good_config_and_keeps_the_old_one_on_a_bad_one(
    machine: systemd_boot.Machine, broker: Broker
) -> None:
    host = machine.sh("hostname").stdout.strip()
    pid = machine.show("clawd", "MainPID")["MainPID"]
    config(machine, broker, "[worker]\nconcurrency = 2\n")
    reload(machine)
    doc = retained(broker, f"clawd/workers/{host}-1", lambda d: d["capacity"] == 2)
    assert doc["state"] == "online"

    config(machine, broker, "[worker]\nconcurency = 3\n")
    refused = machine.sh("systemctl reload clawd", check=False)
    assert refused.returncode != 0  # the operator hears of it, and the old config stays
    state = machine.show("clawd", *STATE)
    assert (state["ActiveState"], state["MainPID"]) == ("active", pid), state
    journal = machine.journal("clawd")
    assert re.search(r'reload refused: .*clawd.toml.*\[worker\]: unknown key "concurency"', journal)
    assert "reload refused: keeping the running configuration" in journal
    assert "clawd: reload refused, the running configuration stays: " in journal
    assert round_trip(broker, "6*7")["result"] == 42
    config(machine, broker)  # a valid file again, for the next start
    notes = machine.notifications("clawd")
    assert [n.split("\n")[0] for n in notes if n.startswith(("RELOADING", "READY"))][-4:] == [
        "RELOADING=1",
        "READY=1",
        "RELOADING=1",
        "READY=1",
    ]


def test_exposure_of_both_units_stays_low(machine: systemd_boot.Machine) -> None:
    for unit in ("clawd.service", "clawd-worker@2.service"):
        out = machine.sh(f"systemd-analyze security {unit}", check=False).stdout
        level = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
        assert level is not None, out
        assert float(level.group(1)) <= 2.0, out


def test_broker_outage_longer_than_the_watchdog_is_ridden_out(
    machine: systemd_boot.Machine, broker: Broker
) -> None:
    drop_in(
        machine,
        "clawd.service",
        f"[Service]\nWatchdogSec={WATCHDOG}\nTimeoutAbortSec={WATCHDOG}\nRestartSec=1\n",
    )
    machine.sh("systemctl restart clawd")
    before = machine.show("clawd", *STATE)
    assert before["ActiveState"] == "active"
    broker.stop()
    seen = []
    try:
        end = time.monotonic() + 3 * WATCHDOG + 1
        while time.monotonic() < end:
            s = machine.show("clawd", *STATE)
            seen.append(s)
            assert (s["ActiveState"], s["MainPID"], s["NRestarts"]) == (
                "active",
                before["MainPID"],
                before["NRestarts"],
            ), s
            time.sleep(0.5)
    finally:
        broker.start()
    assert any("unreachable" in s["StatusText"] for s in seen), seen
    assert round_trip(broker, "1+1")["result"] == 2  # back by itself
    wait_state(machine, "clawd", lambda s: "unreachable" not in s["StatusText"])
    journal = machine.journal("clawd")
    assert "Watchdog timeout" not in journal
    assert re.search(r"broker mqtt://\S+ unreachable; reconnecting", journal)


def test_a_wedged_daemon_is_restarted_by_the_watchdog(
    machine: systemd_boot.Machine, broker: Broker
) -> None:
    before = machine.show("clawd", *STATE)
    assert before["ActiveState"] == "active"
    machine.sh(f"kill -STOP {before['MainPID']}")
    after = wait_state(
        machine,
        "clawd",
        lambda s: s["NRestarts"] != before["NRestarts"] and s["ActiveState"] == "active",
    )
    assert after["MainPID"] != before["MainPID"]
    assert "clawd.service: Watchdog timeout" in machine.journal("clawd")
    assert round_trip(broker, "3*3")["result"] == 9


def start_slow_task(
    machine: systemd_boot.Machine, broker: Broker, task: str
) -> subprocess.Popen[str]:
    """Submit a task of the exec type ``slow`` and return once its command is running;
    the returned mosquitto_sub prints the task's result."""
    results = subprocess.Popen(
        ["mosquitto_sub", *auth(broker), "-q", "1", "-C", "1", "-W", "90"]
        + ["-t", f"clawd/results/{task}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    wait_subscribed(broker, task)
    subprocess.run(
        ["mosquitto_pub", *auth(broker), "-q", "1", "-t", "clawd/tasks/normal/slow"]
        + ["-m", json.dumps({"id": task, "type": "slow", "input": ""})],
        check=True,
    )
    end = time.monotonic() + 30
    while machine.sh("pgrep -f 'sleep 2.5'", check=False).returncode != 0:
        assert time.monotonic() < end, "the task never started"
        time.sleep(0.1)
    return results


def test_stop_with_a_task_running_drains_it(machine: systemd_boot.Machine, broker: Broker) -> None:
    machine.sh("systemctl stop clawd-worker@2")
    assert machine.show("clawd-worker@2", "Result")["Result"] == "success"
    config(
        machine,
        broker,
        '[handlers.exec.slow]\ncommand = ["/bin/sh", "-c", "sleep 2.5; echo slept"]\n',
    )
    reload(machine)
    task = f"slow-{uuid.uuid4().hex[:8]}"
    results = start_slow_task(machine, broker, task)
    machine.sh("systemctl stop clawd")
    state = machine.show("clawd", *STATE)
    assert (state["ActiveState"], state["Result"]) == ("inactive", "success"), state
    machine.sh("systemctl start clawd")
    out, _ = results.communicate(timeout=100)
    doc = json.loads(out)
    assert (doc["status"], doc["result"]) == ("ok", "slept"), doc
    assert "STOPPING=1" in "\n".join(machine.notifications("clawd"))


def test_stop_hands_back_what_does_not_finish_in_time(
    machine: systemd_boot.Machine, broker: Broker
) -> None:
    config(
        machine,
        broker,
        "[worker]\ndrain_timeout = 0.5\n\n"
        '[handlers.exec.slow]\ncommand = ["/bin/sh", "-c", "sleep 2.5; echo slept"]\n',
    )
    reload(machine)
    task = f"long-{uuid.uuid4().hex[:8]}"
    results = start_slow_task(machine, broker, task)
    machine.sh("systemctl stop clawd")
    state = machine.show("clawd", *STATE)
    assert (state["ActiveState"], state["Result"]) == ("inactive", "success"), state
    assert "handing back 1 unfinished task(s)" in machine.journal("clawd")
    machine.sh("systemctl start clawd")  # the journaled task runs again, to the end
    out, _ = results.communicate(timeout=100)
    doc = json.loads(out)
    assert (doc["status"], doc["result"], doc["attempts"]) == ("ok", "slept", 2), doc
    config(machine, broker)


def wait_subscribed(broker: Broker, task: str) -> None:
    """Until mosquitto logged the subscription to the task's result topic."""
    log = broker.dir / "mosquitto.log"
    end = time.monotonic() + 10
    while f"clawd/results/{task}" not in log.read_text():
        assert time.monotonic() < end
        time.sleep(0.05)


def test_a_start_without_the_broker_waits_for_it(
    machine: systemd_boot.Machine, broker: Broker
) -> None:
    machine.sh("systemctl stop clawd")
    broker.stop()
    try:
        machine.sh("systemctl start --no-block clawd")
        waiting = wait_state(
            machine, "clawd", lambda s: s["StatusText"].startswith("waiting for broker at")
        )
        assert (waiting["ActiveState"], waiting["SubState"]) == ("activating", "start")
        assert "Connection refused" in waiting["StatusText"]
    finally:
        broker.start()
    state = wait_state(machine, "clawd", lambda s: s["ActiveState"] != "activating")
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
    assert state["NRestarts"] == waiting["NRestarts"]
    assert any(n.startswith("EXTEND_TIMEOUT_USEC=") for n in machine.notifications("clawd"))
    assert round_trip(broker, "7-5")["result"] == 2
