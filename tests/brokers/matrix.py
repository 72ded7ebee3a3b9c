"""The broker matrix: the same checks against every standard broker that installs here.

One row per broker: connect (distributor and worker reach READY and find each other),
submit (``clawd submit --wait``), shell (``mosquitto_pub`` a task, ``mosquitto_sub`` sees
its result), kill9 (a worker killed mid-task: every task still ends, lost = 0), restart
(the broker restarted: clawd carries on), queued (submissions published while the
distributor was down, then a broker restart: how many the broker kept), reqrep (MQTT v5
request/reply with ``mosquitto_rr``, and ``clawd task ID``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.brokers.aedes import Aedes
from tests.brokers.base import Server, Unavailable
from tests.brokers.ejabberd import Ejabberd
from tests.brokers.mosquitto import Mosquitto
from tests.brokers.pybrokers import Amqtt, Mqttools
from tests.brokers.rabbitmq import RabbitMQ
from tests.brokers.rig import Rig, ShellSub, wait_for

SERVERS: dict[str, type[Server]] = {
    s.name: s for s in (Mosquitto, RabbitMQ, Ejabberd, Amqtt, Aedes, Mqttools)
}
FAST = ("connect", "submit", "shell", "reqrep")
CHECKS = ("connect", "submit", "shell", "kill9", "restart", "offline", "queued", "reqrep")
#: submissions published while the distributor is down, before the broker restarts
QUEUED = 20


@dataclass
class Check:
    #: "pass" | "fail" | "n/a" | "limit" (the broker lacks it: documented, not clawd's bug)
    status: str
    detail: str = ""


@dataclass
class Row:
    broker: str
    version: str = "?"
    protocols: str = ""
    checks: dict[str, Check] = field(default_factory=dict)
    seconds: float = 0.0

    def ok(self, name: str) -> bool:
        c = self.checks.get(name)
        return c is not None and c.status == "pass"


class Failed(Exception):
    """A check failed; the message is the table's reason."""


class Limitation(Failed):
    """The broker lacks what the check needs (documented behaviour, not a clawd bug)."""


def why(rig: Rig, exc: BaseException) -> str:
    """The most telling line of a failure: clawd's own error from its logs when there is."""
    text = str(exc)
    if isinstance(exc, Limitation):
        return text
    for d in reversed(rig.daemons):
        for line in reversed(d.output().splitlines()):
            if re.search(r" (ERROR|CRITICAL) |refus|unsupported|not authori", line, re.I):
                return f"{text.splitlines()[0][:120]}; clawd: {line.strip()[-240:]}"
    return text.splitlines()[0][:300] if text else type(exc).__name__


def run_row(name: str, workdir: Path, checks: tuple[str, ...] = CHECKS) -> Row:
    """Start broker ``name`` in ``workdir``, run ``checks`` in order, stop everything."""
    cls = SERVERS[name]
    row = Row(broker=name, protocols="/".join(cls.protocols))
    t0 = time.monotonic()
    try:
        cls.check_installed()
    except Unavailable as exc:
        row.checks = {c: Check("n/a", f"not installed: {exc}") for c in checks}
        return row
    server = cls(workdir / name)
    row.version = server.version()
    # short: the daemons' notify sockets live here (AF_UNIX paths stop at 107 bytes)
    rig = Rig(server, workdir / f"{name[:4]}-c")
    try:
        server.start()
        for c in checks:
            if c != "connect" and not row.ok("connect"):
                refused = row.checks["connect"].status == "limit"
                row.checks[c] = (
                    Check("limit", "clawd refuses this broker (see connect)")
                    if refused
                    else Check("fail", "clawd did not connect")
                )
                continue
            try:
                row.checks[c] = CHECK_FUNCS[c](rig) or Check("pass")
            except Limitation as exc:
                row.checks[c] = Check("limit", why(rig, exc))
            except (Failed, AssertionError, RuntimeError, subprocess.TimeoutExpired) as exc:
                row.checks[c] = Check("fail", why(rig, exc))
            except Exception as exc:  # one broken check must not lose the rest of the row
                row.checks[c] = Check("fail", f"{type(exc).__name__}: {exc}"[:300])
    except RuntimeError as exc:
        for c in checks:
            row.checks.setdefault(c, Check("fail", f"broker did not start: {exc}"[:300]))
    finally:
        rig.close()
        server.close()
        row.seconds = time.monotonic() - t0
        (workdir / f"{name}-logs.txt").write_text(rig.logs(4000))
    return row


# -- the checks ----------------------------------------------------------------------------


def connect(rig: Rig) -> Check | None:
    try:
        rig.start_distributor()
    except AssertionError:
        # a broker clawd cannot be correct on (QoS 0 only, ...) is refused, precisely
        for line in rig.daemons[-1].output().splitlines():
            if "cannot use the broker at" in line:
                raise Limitation(line.split(": ", 1)[-1].strip()) from None
        raise
    rig.start_worker("w1")
    rig.wait_worker_known("w1")
    return None


def submit(rig: Rig) -> Check | None:
    r = rig.cli("submit", "compute", "2+2", "--wait", "--timeout", "40")
    if r.returncode != 0 or r.stdout.strip() != "4":
        raise Failed(f"clawd submit --wait: exit {r.returncode}: {(r.stdout + r.stderr)[-300:]}")
    return None


def _new_sub(rig: Rig, topic: str = "clawd/results/+") -> ShellSub:
    s = rig.sub(topic)
    s.wait_subscribed()
    return s


def _expect(sub: ShellSub, ids: set[str], timeout: float) -> dict[str, dict[str, object]]:
    got = sub.wait_results(ids, timeout)
    missing = ids - set(got)
    if missing:
        raise Failed(f"lost {len(missing)}/{len(ids)}: no result for {sorted(missing)[:3]}")
    bad = {k: v.get("status") for k, v in got.items() if v.get("status") != "ok"}
    if bad:
        raise Failed(f"results not ok: {bad}")
    return got


def _pub(rig: Rig, topic: str, lines: list[str]) -> None:
    r = rig.pub(topic, lines)
    if r.returncode != 0:
        raise Failed(f"mosquitto_pub exit {r.returncode}: {r.stderr.decode()[-200:]}")


def shell(rig: Rig) -> Check | None:
    sub = _new_sub(rig)
    tid = f"sh-{uuid.uuid4().hex[:8]}"
    _pub(rig, "clawd/tasks/normal/compute", [json.dumps({"id": tid, "input": "3+3"})])
    got = _expect(sub, {tid}, 40)
    if got[tid].get("result") != 6:
        raise Failed(f"result {got[tid]}")
    # the bare shell form: any payload that is not a JSON object becomes the input
    sub2 = _new_sub(rig, "clawd/results/#")
    _pub(rig, "clawd/tasks/normal/compute", ["7*6"])
    deadline = time.monotonic() + 40
    while not any(r.get("result") == 42 for r in sub2.results().values()):
        if time.monotonic() > deadline:
            raise Failed("bare mosquitto_pub -m '7*6': no result 42 on mosquitto_sub")
        time.sleep(0.05)
    return None


def kill9(rig: Rig) -> Check | None:
    sub = _new_sub(rig)
    ids = {f"k9-{uuid.uuid4().hex[:6]}-{i}" for i in range(4)}
    _pub(
        rig,
        "clawd/tasks/normal",
        [json.dumps({"id": i, "type": "sleep", "input": 2.0}) for i in sorted(ids)],
    )
    running = lambda: {e["id"] for e in rig.executions() if e["id"] in ids}  # noqa: E731
    deadline = time.monotonic() + 40
    while running() != ids:
        if time.monotonic() > deadline:
            raise Failed(f"only {len(running())}/4 tasks started on w1")
        time.sleep(0.05)
    w1 = rig.workers["w1"]
    os.killpg(w1.proc.pid, signal.SIGKILL)
    d = rig.distributor
    assert d is not None
    since = len(d.output())
    rig.start_worker("w2")
    rig.wait_worker_known("w2", since)
    got = _expect(sub, ids, 60)
    attempts = sorted(int(v.get("attempts", 0)) for v in got.values())  # type: ignore[call-overload]
    if max(attempts) < 2:
        raise Failed(f"results without a second attempt: {attempts}")
    return Check("pass", f"4/4 ok after kill -9, attempts {attempts}, lost 0")


def restart(rig: Rig) -> Check | None:
    """The broker restarts under clawd: once the daemons are back on it, tasks run again
    (what the broker kept from before is the ``queued`` check)."""
    live = [d for d in rig.daemons if d.proc.poll() is None]
    before = {id(d): d.output().count("connected to ") for d in live}
    rig.server.restart()
    for d in live:
        wait_for(
            lambda d=d: d.output().count("connected to ") > before[id(d)],
            60,
            f"{d.log_path.stem} to reconnect after the broker restart",
        )
    sub = _new_sub(rig)
    tid = f"rs-{uuid.uuid4().hex[:8]}"
    _pub(rig, "clawd/tasks/normal/compute", [json.dumps({"id": tid, "input": "1+1"})])
    _expect(sub, {tid}, 60)
    return None


def _while_down(rig: Rig, restart_broker: bool) -> tuple[int, int]:
    """Distributor down, QUEUED submissions acknowledged by the broker (and the broker
    restarted, if asked), distributor back: (how many reached it, QUEUED)."""
    d = rig.distributor
    assert d is not None
    d.stop(signal.SIGTERM)
    ids = [f"q-{uuid.uuid4().hex[:6]}-{i}" for i in range(QUEUED)]
    _pub(rig, "clawd/tasks/normal/compute", [json.dumps({"id": i, "input": "2*3"}) for i in ids])
    if restart_broker:
        rig.server.restart()
    sub = _new_sub(rig)
    rig.start_distributor()
    fresh = f"qf-{uuid.uuid4().hex[:8]}"
    _pub(rig, "clawd/tasks/normal/compute", [json.dumps({"id": fresh, "input": "1+2"})])
    _expect(sub, {fresh}, 60)
    # the queued ones were in the distributor's session before the fresh one was sent:
    # whatever the broker kept arrives first; stragglers get a bounded grace
    got = sub.wait_results(set(ids), 10 if sub.results().keys() & set(ids) else 0.5)
    return len(got), QUEUED


def offline(rig: Rig) -> Check | None:
    """Submissions published while the distributor is away are queued for it."""
    kept, n = _while_down(rig, restart_broker=False)
    if kept < n:
        raise Limitation(
            f"kept {kept}/{n}: the broker does not queue QoS 1 messages for an offline "
            f"persistent session ({KEEPS_WHY.get(rig.server.name, '?')})"
        )
    return Check("pass", f"kept {kept}/{n}")


def queued(rig: Rig) -> Check | None:
    """The same across a broker restart: which brokers keep queued submissions."""
    kept, n = _while_down(rig, restart_broker=True)
    if kept < n:
        raise Limitation(
            f"kept {kept}/{n} across the broker restart ({KEEPS_WHY.get(rig.server.name, '?')})"
        )
    return Check("pass", f"kept {kept}/{n}")


def reqrep(rig: Rig) -> Check | None:
    if not rig.server.v5:
        return Check("n/a", "broker speaks MQTT 3.1.1 only: no response topic")
    reply = f"matrix/reply/{uuid.uuid4().hex[:8]}"
    r = subprocess.run(
        ["mosquitto_rr", *rig.shell_args(), "-q", "1", "-t", "clawd/tasks/normal/compute"]
        + ["-e", reply, "-m", "5+5", "-W", "40"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if r.returncode != 0:
        raise Failed(f"mosquitto_rr exit {r.returncode}: {(r.stdout + r.stderr)[-200:]}")
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    if doc.get("result") != 10:
        raise Failed(f"mosquitto_rr: {doc}")
    t = rig.cli("task", str(doc["id"]))
    if t.returncode != 0 or "ok" not in t.stdout:
        raise Failed(f"clawd task {doc['id']}: exit {t.returncode}: {(t.stdout + t.stderr)[-200:]}")
    return None


CHECK_FUNCS = {
    "connect": connect,
    "submit": submit,
    "shell": shell,
    "kill9": kill9,
    "restart": restart,
    "offline": offline,
    "queued": queued,
    "reqrep": reqrep,
}

#: what each broker does with an offline persistent session across its own restart
KEEPS_WHY = {
    "mosquitto": "persistence file",
    "rabbitmq": "durable queues",
    "ejabberd": "mod_mqtt keeps sessions and their queues in RAM tables",
    "amqtt": "no persistence",
    "aedes": "in-memory persistence",
    "mqttools": "no sessions",
}
