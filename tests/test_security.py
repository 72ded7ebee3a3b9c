"""Security: broker authentication, TLS, the example ACL, fencing, secret hygiene, plugin dirs.

Every test talks to a real mosquitto configured with a password file made by
mosquitto_passwd, the shipped etc/mosquitto-acl.conf, and a TLS listener whose CA and
certificates openssl generated for this run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clawd.connection import Endpoint, Options
from clawd.errors import BrokerError
from clawd.transport import Transport
from tests.certs import Pki, make_pki
from tests.conftest import ROOT, Broker, client_id, free_port, run_cli, wait_until

ACL = ROOT / "etc" / "mosquitto-acl.conf"
#: user name -> password; worker user names are worker ids (see the ACL's comments)
USERS = {
    "producer": "producer-pw",
    "distributor": "distributor-pw",
    "w1": "w1-pw",
    "w2": "w2-pw",
}
CANARY = "canary-7f3a9c1e-do-not-leak"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@dataclass
class SecureBroker:
    broker: Broker
    tls_port: int
    pki: Pki
    passwords: dict[str, str]

    @property
    def port(self) -> int:
        return self.broker.port

    @property
    def log(self) -> str:
        return (self.broker.dir / "mosquitto.log").read_text(errors="replace")

    def args(self, user: str) -> list[str]:
        """mosquitto_pub/sub arguments: the plain listener, logged in as ``user``."""
        return [*self.broker.args, "-u", user, "-P", self.passwords[user], "-V", "5"]


def _passwd(path: Path, users: dict[str, str]) -> None:
    first = True
    for user, password in users.items():
        flags = ["-b", "-c"] if first else ["-b"]
        subprocess.run(["mosquitto_passwd", *flags, str(path), user, password], check=True)
        first = False


@pytest.fixture
def secure(tmp_path: Path, pki: Pki) -> Any:
    """A mosquitto with auth + ACL on both listeners and mutual TLS on the second."""
    passwords = {**USERS}
    made: list[Broker] = []

    def start(**override: str) -> SecureBroker:
        passwords.update(override)
        pw = tmp_path / "passwd"
        _passwd(pw, passwords)
        tls_port = free_port()
        # (the Broker fixture keeps mosquitto as this user: it must read tmp_path's keys)
        extra = (
            "per_listener_settings false\nallow_anonymous false\n"
            f"password_file {pw}\nacl_file {ACL}\n"
            f"listener {tls_port} 127.0.0.1\ncafile {pki.ca}\ncertfile {pki.server_cert}\n"
            f"keyfile {pki.server_key}\nrequire_certificate true\n"
        )
        b = Broker(tmp_path / "mosquitto", extra)
        b.start()
        made.append(b)
        # the TLS listener opens with the plain one, and the start-up probe's connection
        # is logged: connections counted from here on are the test's
        wait_until(
            lambda: f"port {tls_port}" in (log := b.log()) and "closed its connection" in log,
            what="the TLS listener",
        )
        return SecureBroker(b, tls_port, pki, passwords)

    yield start
    for b in made:
        b.stop(signal.SIGKILL)


def _transport(url: str, **kw: Any) -> Transport:
    return Transport(
        Endpoint.parse(url), Options(client_id=f"sec-{time.monotonic_ns()}", **kw), lambda m: None
    )


def _connect(url: str, timeout: float = 8, **kw: Any) -> tuple[str | None, float]:
    """Connect and disconnect; (None, seconds) on success, (error, seconds) on failure."""
    t0 = time.monotonic()
    t = _transport(url, **kw)
    try:
        t.start(timeout=timeout)
    except BrokerError as exc:
        return str(exc), time.monotonic() - t0
    t.stop()
    return None, time.monotonic() - t0


def _connections(s: SecureBroker, port: int) -> int:
    """Connections the broker has accepted on ``port`` so far (from its log)."""
    return len(re.findall(rf"New connection from \S+ on port {port}\.", s.log))


def _connections_after(s: SecureBroker, port: int, before: int) -> int:
    """Connections on ``port`` since there were ``before``, once the broker's log (written
    out by its loop) shows at least one."""
    wait_until(lambda: _connections(s, port) > before, what="the connection in the log")
    return _connections(s, port) - before


def _tls(pki: Pki, ca: Path | None = None, cert: bool = True) -> dict[str, Any]:
    kw: dict[str, Any] = {"tls_ca": str(ca or pki.ca)}
    if cert:
        kw |= {"tls_cert": str(pki.client_cert), "tls_key": str(pki.client_key)}
    return kw


# -- transport: who gets in -----------------------------------------------------------


def test_anonymous_and_wrong_password_are_refused_fast_and_clearly(secure):
    s = secure()
    url = f"mqtt://127.0.0.1:{s.port}"
    for kw in (
        {},
        {"username": "producer", "password": "wrong"},
        {"username": "nobody", "password": "x"},
    ):
        before = _connections(s, s.port)
        err, _ = _connect(url, timeout=30, **kw)
        assert err is not None, kw
        assert "refused the connection: Not authorized" in err
        assert "check [broker] username and the password" in err
        # a refusal that retrying cannot fix fails at the first attempt: no retry loop
        assert _connections_after(s, s.port, before) == 1
    assert _connect(url, username="producer", password=USERS["producer"])[0] is None


def test_tls_right_ca_and_credentials_connect(secure):
    s = secure()
    err, _ = _connect(
        f"mqtts://localhost:{s.tls_port}",
        username="producer",
        password=USERS["producer"],
        **_tls(s.pki),
    )
    assert err is None


def test_tls_wrong_ca_is_refused(secure):
    s = secure()
    err, took = _connect(
        f"mqtts://localhost:{s.tls_port}",
        username="producer",
        password=USERS["producer"],
        **_tls(s.pki, ca=s.pki.other_ca),
    )
    assert err is not None and "TLS certificate verification failed" in err and "tls_ca" in err
    assert took < 3


def test_tls_hostname_mismatch_is_refused(secure):
    # the server certificate names DNS:localhost only; 127.0.0.1 is not in it
    s = secure()
    url = f"mqtts://127.0.0.1:{s.tls_port}"
    err, took = _connect(url, username="producer", password=USERS["producer"], **_tls(s.pki))
    assert err is not None and "mismatch" in err and "127.0.0.1" in err
    assert took < 3
    # the same connection with hostname checking switched off gets through: the check is real
    ok, _ = _connect(
        url, username="producer", password=USERS["producer"], tls_insecure=True, **_tls(s.pki)
    )
    assert ok is None


def test_tls_without_client_certificate_is_refused(secure):
    s = secure()
    err, _ = _connect(
        f"mqtts://localhost:{s.tls_port}",
        timeout=3,
        username="producer",
        password=USERS["producer"],
        **_tls(s.pki, cert=False),
    )
    assert err is not None and "tls_cert" in err


def test_plain_mqtt_to_the_tls_listener_is_refused(secure):
    s = secure()
    err, _ = _connect(
        f"mqtt://localhost:{s.tls_port}", timeout=3, username="producer", password=USERS["producer"]
    )
    assert err is not None and "use mqtts://" in err


def test_unreadable_tls_files_are_a_clear_error(tmp_path, pki):
    with pytest.raises(BrokerError, match="tls_ca .*missing.crt: cannot load CA"):
        _transport("mqtts://localhost:1", tls_ca=str(tmp_path / "missing.crt"))
    with pytest.raises(BrokerError, match="tls_cert .*: cannot load the client certificate"):
        _transport(
            "mqtts://localhost:1", tls_ca=str(pki.ca), tls_cert=str(pki.ca), tls_key=str(pki.ca)
        )


# -- the daemon over TLS with credentials ---------------------------------------------


def _secure_config(
    tmp_path: Path,
    s: SecureBroker,
    name: str,
    user: str | None,
    password_file: Path | None,
    daemon: str = "",
    host: str = "localhost",
    ca: Path | None = None,
) -> Path:
    lines = [
        f'url = "mqtts://{host}:{s.tls_port}"',
        f'tls_ca = "{ca or s.pki.ca}"',
        f'tls_cert = "{s.pki.client_cert}"',
        f'tls_key = "{s.pki.client_key}"',
    ]
    if user:
        lines.append(f'username = "{user}"')
    if password_file:
        lines.append(f'password_file = "{password_file}"')
    path = tmp_path / name
    path.write_text(
        "[broker]\n"
        + "\n".join(lines)
        + f'\n\n[daemon]\nstate_dir = "{tmp_path / "state"}"\n{daemon}'
    )
    return path


def _secret(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text + "\n")
    p.chmod(0o600)
    return p


def test_daemon_and_cli_over_mutual_tls_with_passwords(tmp_path, secure, start_clawd, clawd_env):
    s = secure()
    cfg = _secure_config(
        tmp_path, s, "clawd.toml", "distributor", _secret(tmp_path, "dist-pw", USERS["distributor"])
    )
    start_clawd("-c", str(cfg), "run", "--worker-id", "w1")
    # the producer's password comes from a systemd credential, not from the config
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    _secret(creds, "broker-password", USERS["producer"])
    prod = _secure_config(tmp_path, s, "producer.toml", "producer", None)
    out = run_cli(
        "-c",
        str(prod),
        "submit",
        "compute",
        "6*7",
        "--id",
        "tls-1",
        "--wait",
        "--json",
        env={**clawd_env, "CREDENTIALS_DIRECTORY": str(creds)},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    assert doc["id"] == "tls-1" and doc["status"] == "ok" and doc["result"] == 42
    # without the credential the same producer is refused, with a message saying why
    out = run_cli("-c", str(prod), "submit", "compute", "1", "--wait", env=clawd_env)
    assert out.returncode != 0 and "Not authorized" in out.stderr, out.stderr


@pytest.mark.parametrize(
    "case, phrase",
    [
        ("wrong-password", "refused the connection: Not authorized"),
        ("wrong-ca", "TLS certificate verification failed"),
        ("hostname-mismatch", "IP address mismatch"),
    ],
)
def test_daemon_with_bad_credentials_exits_with_one_clear_line(
    tmp_path, secure, start_clawd, case, phrase
):
    s = secure()
    pw = _secret(tmp_path, "pw", "wrong" if case == "wrong-password" else USERS["distributor"])
    cfg = _secure_config(
        tmp_path,
        s,
        "clawd.toml",
        "distributor",
        pw,
        host="127.0.0.1" if case == "hostname-mismatch" else "localhost",
        ca=s.pki.other_ca if case == "wrong-ca" else None,
    )
    port = s.tls_port  # the daemon connects with mqtts:// in every case
    before = _connections(s, port)
    d = start_clawd("-c", str(cfg), "run", ready=False)
    code = d.proc.wait(15)
    out = d.output()
    # a refusal retrying cannot fix: EX_CONFIG, which the units' RestartPreventExitStatus stops
    assert code == 78, out
    # fails at the first attempt, does not retry until a timeout
    assert _connections_after(s, port, before) == 1, s.log
    assert "Traceback" not in out
    fatal = [line for line in out.splitlines() if line.startswith("clawd: ")]
    assert len(fatal) == 1 and phrase in fatal[0], out
    assert "cannot connect to broker at mqtts://" in fatal[0]
    if case == "wrong-password":
        # one attempt, not a loop hammering the broker
        assert s.log.count("as clawd-distributor-clawd") <= 1, s.log


# -- the example ACL ------------------------------------------------------------------


def _sub(
    s: SecureBroker, user: str, topic: str, count: int, wait: int = 4, also: str = ""
) -> subprocess.Popen[str]:
    """``also``: a second topic, subscribed first (the wait is for ``topic``)."""
    cid = client_id(user)
    p = subprocess.Popen(
        ["mosquitto_sub", *s.args(user), "-i", cid, "-v"]
        + (["-t", also] if also else [])
        + ["-t", topic, "-C", str(count), "-W", str(wait)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    s.broker.wait_subscribed(cid, topic, p)
    return p


def _pub(s: SecureBroker, user: str, topic: str, message: str) -> None:
    subprocess.run(
        ["mosquitto_pub", *s.args(user), "-q", "1", "-t", topic, "-m", message],
        capture_output=True,
        timeout=10,
    )


def test_acl_producer_cannot_publish_results(secure):
    s = secure()
    watcher = _sub(s, "distributor", "clawd/results/#", 1)
    _pub(s, "producer", "clawd/results/x", '{"forged": true}')
    _pub(s, "distributor", "clawd/results/y", '{"real": true}')
    out, _ = watcher.communicate(timeout=10)
    # the watcher saw the distributor's result only: the producer's never reached it
    assert out.splitlines() == ['clawd/results/y {"real": true}']
    # while the producer may publish tasks and read results
    tasks = _sub(s, "distributor", "clawd/tasks/#", 1)
    _pub(s, "producer", "clawd/tasks/normal/compute", "1+1")
    assert tasks.communicate(timeout=10)[0].splitlines() == ["clawd/tasks/normal/compute 1+1"]


def test_acl_worker_cannot_read_another_workers_tasks(secure):
    s = secure()
    own = _sub(s, "w1", "clawd/_/w/w1/tasks", 1)
    # each spy also reads its own grants: a grant to w2 published after w1's is the first
    # (and only) message it may get
    spy = _sub(s, "w2", "clawd/_/w/w1/tasks", 1, also="clawd/_/w/w2/tasks")
    spy_all = _sub(s, "w2", "clawd/_/w/+/tasks", 1)
    _pub(s, "distributor", "clawd/_/w/w1/tasks", "[]")
    _pub(s, "distributor", "clawd/_/w/w2/tasks", "marker")
    assert own.communicate(timeout=10)[0].splitlines() == ["clawd/_/w/w1/tasks []"]
    assert spy.communicate(timeout=10)[0].splitlines() == ["clawd/_/w/w2/tasks marker"]
    assert spy_all.communicate(timeout=10)[0].splitlines() == ["clawd/_/w/w2/tasks marker"]


def test_acl_worker_can_report_only_under_its_own_id(secure):
    s = secure()
    watcher = _sub(s, "distributor", "clawd/_/done/#", 1)
    _pub(s, "w2", "clawd/_/done/w1", '{"outcomes": []}')
    _pub(s, "w2", "clawd/_/done/w2", '{"outcomes": []}')
    assert watcher.communicate(timeout=10)[0].splitlines() == ['clawd/_/done/w2 {"outcomes": []}']


def _plugin_dir(tmp_path: Path) -> Path:
    d = tmp_path / "plugins"
    d.mkdir(mode=0o755)
    shutil.copy(ROOT / "tests" / "dropins" / "testing.py", d / "testing.py")
    d.chmod(0o755)
    return d


def test_forged_outcome_for_a_task_another_worker_holds_is_ignored(tmp_path, secure, start_clawd):
    s = secure()
    pw = _secret(tmp_path, "pw", USERS["distributor"])
    cfg = _secure_config(
        tmp_path,
        s,
        "clawd.toml",
        "distributor",
        pw,
        daemon=f'plugin_dirs = ["{_plugin_dir(tmp_path)}"]\n',
    )
    start_clawd("-c", str(cfg), "run", "--worker-id", "w1")
    results = _sub(s, "producer", "clawd/results/+", 1, wait=15)
    progress = _sub(s, "producer", "clawd/progress/fence-1", 1, wait=8)
    _pub(
        s,
        "producer",
        "clawd/tasks/normal",
        json.dumps({"id": "fence-1", "type": "sleep", "input": 1.5}),
    )
    assert progress.communicate(timeout=10)[0], "the task never started"
    forged = {
        "outcomes": [
            {"id": "fence-1", "attempt": 1, "status": "ok", "result": "forged", "ms": 1.0}
        ],
        "running": [["fence-1", 1]],
    }
    # w2 may publish under its own id only; it does not hold fence-1
    _pub(s, "w2", "clawd/_/done/w2", json.dumps(forged))
    _pub(s, "w2", "clawd/_/done/w1", json.dumps(forged))  # dropped by the ACL
    out, _ = results.communicate(timeout=20)
    (doc,) = [json.loads(line.split(" ", 1)[1]) for line in out.splitlines()]
    assert doc["id"] == "fence-1" and doc["result"] == 1.5 and doc["worker"] == "w1"
    # a last task: its result is the next one, nothing the forgeries caused comes before it
    after = _sub(s, "producer", "clawd/results/+", 1, wait=15)
    _pub(s, "producer", "clawd/tasks/normal", json.dumps({"id": "after", "type": "echo"}))
    out, _ = after.communicate(timeout=20)
    assert [line.split(" ", 1)[0] for line in out.splitlines()] == ["clawd/results/after"]


# -- secret hygiene -------------------------------------------------------------------


def test_canary_password_appears_nowhere(tmp_path, secure, start_clawd, clawd_env):
    s = secure(distributor=CANARY)
    pw = _secret(tmp_path, "pw", CANARY)
    # an exec task type that reports its own environment
    daemon = 'log_level = "debug"\n\n[handlers.exec.env]\ncommand = ["/usr/bin/env"]\n'
    cfg = _secure_config(tmp_path, s, "clawd.toml", "distributor", pw, daemon=daemon)
    cid = client_id("canary-watch")
    everything = subprocess.Popen(
        ["mosquitto_sub", *s.args("distributor"), "-i", cid, "-t", "clawd/#", "-v", "-W", "12"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    s.broker.wait_subscribed(cid, "clawd/#", everything)
    # the daemon's own environment carries the canary too: a child must inherit none of it
    d = start_clawd("-c", str(cfg), "run", "--worker-id", "w1", env={"BROKER_PASSWORD": CANARY})
    env = {**clawd_env}
    child = run_cli("-c", str(cfg), "submit", "env", "{}", "--wait", "--json", env=env)
    assert child.returncode == 0, child.stdout + child.stderr
    child_env = json.loads(child.stdout)["result"]
    assert "PATH=" in child_env and "CLAW_TASK_TYPE=env" in child_env
    for args in (
        ("submit", "compute", "2+2", "--wait"),
        ("submit", "compute", "1/0", "--wait"),
        ("submit", "nosuchtype", "x"),
    ):
        run_cli("-c", str(cfg), *args, env=env)
    _pub(s, "producer", "clawd/tasks/normal", "not json")
    status = run_cli("-c", str(cfg), "status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    show = run_cli("-c", str(cfg), "config", "show", env=env)
    assert show.returncode == 0 and str(pw) in show.stdout  # the path, never the content
    # read until a marker published last, and one metrics snapshot (every 2 s), went by
    _pub(s, "distributor", "clawd/test/end", "end")
    got: list[str] = []
    assert everything.stdout is not None
    for line in everything.stdout:  # -W ends it at the latest
        got.append(line)
        if {"clawd/metrics", "clawd/test/end"} <= {x.split(" ", 1)[0] for x in got}:
            break
    everything.terminate()
    everything.wait(10)
    seen = "".join(got)
    d.stop()
    topics = {line.split(" ", 1)[0] for line in seen.splitlines()}
    # the capture really covered results, errors, worker status and metrics
    assert {"clawd/errors", "clawd/metrics", "clawd/workers/w1"} <= topics, topics
    assert any(t.startswith("clawd/results/") for t in topics)
    for name, text in [
        ("log", d.log_path.read_text(errors="replace")),
        ("clawd/#", seen),
        ("status", status.stdout + status.stderr),
        ("config show", show.stdout + show.stderr),
        ("exec child environment", child_env),
    ]:
        assert text and CANARY not in text, name


# -- plugin directories ---------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777])
def test_writable_plugin_dir_is_refused(tmp_path, broker, start_clawd, mode):
    d = _plugin_dir(tmp_path)
    d.chmod(mode)
    cfg = tmp_path / "clawd.toml"
    cfg.write_text(
        f'[broker]\nurl = "{broker.url}"\n\n[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        f'plugin_dirs = ["{d}"]\n'
    )
    p = start_clawd("-c", str(cfg), "run", ready=False)
    code = p.proc.wait(20)
    out = p.output()
    assert code != 0 and "Traceback" not in out
    assert str(d) in out and "writable" in out, out


def test_plugin_dir_owned_by_another_user_is_refused(tmp_path, broker, start_clawd):
    d = _plugin_dir(tmp_path)
    if os.geteuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    os.chown(d, 65534, 65534)
    cfg = tmp_path / "clawd.toml"
    cfg.write_text(
        f'[broker]\nurl = "{broker.url}"\n\n[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        f'plugin_dirs = ["{d}"]\n'
    )
    p = start_clawd("-c", str(cfg), "run", ready=False)
    code = p.proc.wait(20)
    out = p.output()
    assert code != 0 and "Traceback" not in out
    assert str(d) in out and "owned by uid 65534" in out, out
