"""End to end: real mosquitto, real `clawd run` processes, real mosquitto_pub/sub/rr."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import lines, pub, run_cli, sub


def test_mosquitto_pub_compute_gives_result(broker, make_config, start_clawd):
    start_clawd("-c", str(make_config()), "run")
    s = sub(broker, "clawd/results/+", 1)
    pub(broker, "clawd/tasks/normal/compute", "2+2")
    (result,) = lines(s)
    assert result["status"] == "ok"
    assert result["result"] == 4
    assert result["type"] == "compute" and result["lane"] == "normal"
    assert result["attempts"] == 1
    assert result["duration_ms"] >= 0 and result["finished_at"] >= result["submitted_at"]


def test_mosquitto_rr_request_reply(broker, make_config, start_clawd):
    start_clawd("-c", str(make_config()), "run")
    out = subprocess.run(
        [
            "mosquitto_rr",
            *broker.args,
            "-V",
            "5",
            "-t",
            "clawd/tasks/normal/compute",
            "-e",
            "my/reply",
            "-m",
            "2^10",
            "-W",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["result"] == 1024 and doc["status"] == "ok"


def test_envelope_with_task_alias_and_id(broker, make_config, start_clawd):
    start_clawd("-c", str(make_config()), "run")
    s = sub(broker, "clawd/results/job-1", 1)
    pub(
        broker,
        "clawd/tasks/high",
        json.dumps({"id": "job-1", "type": "compute", "task": "(1+2)*3", "meta": {"who": "test"}}),
    )
    (result,) = lines(s)
    assert result["id"] == "job-1" and result["result"] == 9 and result["lane"] == "high"
    assert result["meta"] == {"who": "test"}


def test_cli_submit_wait_and_results(broker, make_config, start_clawd, clawd_env):
    cfg = make_config()
    start_clawd("-c", str(cfg), "run")
    out = run_cli(
        "-c", str(cfg), "submit", "compute", "10/4", "--id", "t-1", "--wait", env=clawd_env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2.5"
    stored = run_cli("-c", str(cfg), "results", "t-1", env=clawd_env)
    assert json.loads(stored.stdout)["result"] == 2.5


def test_division_by_zero_fails_without_retry(broker, make_config, start_clawd, clawd_env):
    cfg = make_config()
    start_clawd("-c", str(cfg), "run")
    dead = sub(broker, "clawd/dead/normal", 1)
    out = run_cli("-c", str(cfg), "submit", "compute", "1/0", "--wait", "--json", env=clawd_env)
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["status"] == "failed" and doc["attempts"] == 1
    assert "division by zero" in doc["error"]
    (letter,) = lines(dead)
    assert letter["reason"] == "non_retryable"


def test_bad_input_is_reported_and_good_tasks_complete(broker, make_config, start_clawd):
    d = start_clawd("-c", str(make_config()), "run")
    bad = [
        ("clawd/tasks/normal", "not json"),
        ("clawd/tasks/normal", '{"type": "compute", '),  # truncated
        ("clawd/tasks/normal", json.dumps({"input": 1})),  # missing type
        ("clawd/tasks/normal", json.dumps({"type": "nope", "input": 1})),  # unknown type
        ("clawd/tasks/normal", json.dumps({"type": "compute", "id": "a/b"})),  # bad id
        ("clawd/tasks/normal", json.dumps({"type": "compute", "id": "x" * 129})),
        ("clawd/tasks/nolane/compute", "1+1"),  # unknown lane
        ("clawd/tasks/normal/compute", "x" * (300 * 1024)),  # over the limit
    ]
    errors = sub(broker, "clawd/errors", len(bad), 20)
    rejected = sub(broker, "clawd/results/named-bad", 1)
    results = sub(broker, "clawd/results/+", 5, 20)  # 4 ok + named-bad rejected
    for i in range(3):
        pub(broker, "clawd/tasks/normal/compute", f"{i}+1")
    for topic, payload in bad:
        pub(broker, topic, payload)
    pub(
        broker,
        "clawd/tasks/normal",
        json.dumps({"type": "compute", "id": "named-bad", "input": "1", "lane": "low"}),
    )
    pub(broker, "clawd/tasks/normal/compute", "41+1")
    errs = lines(errors)
    assert len(errs) == len(bad)
    for e in errs:
        assert e["error"] and e["topic"].startswith("clawd/tasks/") and "payload_excerpt" in e
    joined = " | ".join(e["error"] for e in errs)
    for phrase in [
        "must be a JSON object envelope",
        "invalid JSON",
        'missing "type"',
        "unknown task type 'nope'",
        "invalid id",
        "unknown lane 'nolane'",
        "over the limit",
    ]:
        assert phrase in joined
    (rej,) = lines(rejected)
    assert rej["status"] == "rejected" and "lane" in rej["error"]
    oks = [r for r in lines(results) if r["status"] == "ok"]
    assert sorted(r["result"] for r in oks) == [1, 2, 3, 42]
    assert d.proc.poll() is None


def test_two_worker_processes_share_round_robin(broker, make_config, start_clawd, clawd_env):
    cfg = make_config('[distributor]\nstrategy = "round_robin"\n\n[worker]\nconcurrency = 1\n')
    start_clawd("-c", str(cfg), "run", "--role", "distributor")
    start_clawd("-c", str(cfg), "run", "--role", "worker", "--worker-id", "w-a")
    start_clawd("-c", str(cfg), "run", "--role", "worker", "--worker-id", "w-b")
    time.sleep(0.5)
    tasks = "".join(json.dumps({"type": "sleep", "input": 0.05}) + "\n" for _ in range(10))
    f = Path(cfg).parent / "tasks.jsonl"
    f.write_text(tasks)
    out = run_cli("-c", str(cfg), "submit", "-f", str(f), "--json", env=clawd_env, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "10 submitted: 10 ok" in out.stdout
    workers = {
        json.loads(x)["worker"]
        for x in run_cli("-c", str(cfg), "results", env=clawd_env).stdout.splitlines()
    }
    assert workers == {"w-a", "w-b"}


def test_capability_routing(broker, make_config, start_clawd, clawd_env):
    cfg = make_config()
    start_clawd("-c", str(cfg), "run", "--role", "distributor")
    gpu = make_config('[worker]\ncapabilities = ["gpu"]\n', name="gpu.toml")
    start_clawd("-c", str(gpu), "run", "--role", "worker", "--worker-id", "gpu-1")
    start_clawd("-c", str(cfg), "run", "--role", "worker", "--worker-id", "cpu-1")
    time.sleep(0.5)
    envs = [{"type": "echo", "input": i, "requires": ["gpu"]} for i in range(6)]
    f = Path(cfg).parent / "gpu.jsonl"
    f.write_text("".join(json.dumps(e) + "\n" for e in envs))
    out = run_cli("-c", str(cfg), "submit", "-f", str(f), env=clawd_env, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    docs = [
        json.loads(x) for x in run_cli("-c", str(cfg), "results", env=clawd_env).stdout.splitlines()
    ]
    assert len(docs) == 6 and {d["worker"] for d in docs} == {"gpu-1"}


def test_progress_is_published(broker, make_config, start_clawd):
    start_clawd("-c", str(make_config()), "run")
    prog = sub(broker, "clawd/progress/p-1", 1)
    pub(broker, "clawd/tasks/normal", json.dumps({"id": "p-1", "type": "reverse", "input": "abc"}))
    (p,) = lines(prog)
    assert p == {"id": "p-1", "progress": 0.5, "message": "halfway"}


def test_worker_status_retained_and_last_will(broker, make_config, start_clawd):
    cfg = make_config()
    start_clawd("-c", str(cfg), "run", "--role", "distributor")
    w = start_clawd("-c", str(cfg), "run", "--role", "worker", "--worker-id", "lw-1")
    (online,) = lines(sub(broker, "clawd/workers/lw-1", 1))
    assert online["state"] == "online" and "compute" in online["handlers"]
    s = sub(broker, "clawd/workers/lw-1", 2)
    w.proc.send_signal(signal.SIGKILL)
    states = [x["state"] for x in lines(s)]
    assert states == ["online", "offline"]


def test_a_burst_of_signals_still_stops_cleanly(make_config, start_clawd):
    # a signal handler that takes a lock deadlocks when the next signal lands inside it
    d = start_clawd("-c", str(make_config()), "run")
    for _ in range(50):
        d.proc.send_signal(signal.SIGTERM)
        d.proc.send_signal(signal.SIGHUP)
    assert d.proc.wait(20) == 0


def test_sigterm_exits_zero(make_config, start_clawd):
    d = start_clawd("-c", str(make_config()), "run")
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(30) == 0
    d.wait_for("STOPPING=1", timeout=2)  # still queued on the notify socket


def test_config_error_exits_78(tmp_path, clawd_env):
    bad = tmp_path / "bad.toml"
    bad.write_text("[worker]\nconcurency = 4\n")
    out = run_cli("-c", str(bad), "run", env=clawd_env)
    assert out.returncode == 78
    assert "concurency" in out.stderr and "concurrency" in out.stderr


def test_plugins_command_lists_builtins_and_dropins(make_config, clawd_env):
    out = run_cli("-c", str(make_config()), "plugins", "--json", env=clawd_env)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["compute"]["handlers"] == ["compute"]
    assert rows["compute"]["source"].startswith("entry point")
    assert set(rows["strategies"]["strategies"]) >= {
        "round_robin",
        "hash",
        "least_loaded",
        "fastest",
    }
    assert rows["reverse"]["handlers"] == ["reverse"] and rows["reverse"]["source"].endswith(
        "reverse.py"
    )


def test_embedded_broker_end_to_end(tmp_path, clawd_env, start_clawd):
    env = {**clawd_env, "CLAWD_STATE_DIR": str(tmp_path / "emb")}
    d = start_clawd("run", env=env)
    out = run_cli("submit", "compute", "2+2", "--wait", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "4"
    args = run_cli("broker", "args", env=env).stdout.split()
    s = subprocess.Popen(
        ["mosquitto_sub", *args, "-t", "clawd/results/+", "-C", "1", "-W", "10"],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.3)
    subprocess.run(
        ["mosquitto_pub", *args, "-t", "clawd/tasks/normal/compute", "-m", "2+2"], check=True
    )
    assert json.loads(s.communicate(timeout=15)[0])["result"] == 4
    info = json.loads((tmp_path / "emb" / "broker.json").read_text())
    assert d.stop(signal.SIGTERM) == 0
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(info["pid"], 0)


def test_a_second_clawd_on_the_same_state_dir_is_refused(make_config, start_clawd, clawd_env):
    cfg = make_config()
    first = start_clawd("-c", str(cfg), "run")
    second = run_cli("-c", str(cfg), "run", env=clawd_env)
    assert second.returncode == 78
    assert second.stderr.startswith(
        f"clawd: another clawd (pid {first.proc.pid}) is already running the distributor on "
        "state directory "
    )
    assert len(second.stderr.splitlines()) == 1
    assert first.proc.poll() is None
    # a worker of its own, with another id, is welcome on the same state directory
    start_clawd("-c", str(cfg), "run", "--role", "worker", "--worker-id", "another")
    # once the first has stopped, the lock is free again
    assert first.stop() == 0
    start_clawd("-c", str(cfg), "run", "--role", "distributor")


def test_an_unusable_state_dir_is_one_line(tmp_path, make_config, clawd_env):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {**clawd_env, "CLAWD_STATE_DIR": str(blocker / "state")}
    cfg = make_config().read_text().replace(f'state_dir = "{tmp_path / "state"}"\n', "")
    (tmp_path / "nostate.toml").write_text(cfg)
    out = run_cli("-c", str(tmp_path / "nostate.toml"), "run", env=env)
    assert out.returncode == 78
    assert out.stderr == (
        f"clawd: state directory {blocker / 'state'}: Not a directory; set [daemon] state_dir "
        "or CLAWD_STATE_DIR to a directory this user can write\n"
    )


def test_an_unreadable_credential_is_one_line(tmp_path, make_config, clawd_env):
    creds = tmp_path / "credentials"
    (creds / "broker-password").mkdir(parents=True)  # there, but not a readable file
    out = run_cli(
        "-c", str(make_config()), "run", env={**clawd_env, "CREDENTIALS_DIRECTORY": str(creds)}
    )
    assert out.returncode == 78
    assert out.stderr == (
        f"clawd: {creds}/broker-password: cannot read the broker password: Is a directory\n"
    )


def test_a_credentials_directory_clawd_may_not_enter_is_one_error(tmp_path, monkeypatch):
    # what a unit sees when systemd could not give it its credentials (root-owned, 0700)
    from clawd import config as cfgmod
    from clawd.errors import ConfigError

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "exists", denied)
    with pytest.raises(ConfigError) as caught:
        cfgmod.read_password(cfgmod.BrokerConfig(), {"CREDENTIALS_DIRECTORY": "/run/creds"})
    assert caught.value.problems == [
        "/run/creds/broker-password: cannot read the broker password credential: Permission denied"
    ]
