"""claw.events pub/sub/subexec/whoami against a real clawd, through the installed executable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Broker, pub
from tests.shell_helpers import Lines, shell_env, wait_results, wait_subscribed, wait_workers


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    """This module's broker logs subscriptions: the tests wait on them, not on sleeps."""
    b = Broker(tmp_path / "mosquitto", extra="log_type subscribe\n")
    b.start()
    yield b
    b.stop(9)


@pytest.fixture
def config(make_config: Any) -> Path:
    return make_config("[retry]\nmax_attempts = 2\nbackoff_base = 0.05\nbackoff_cap = 0.1\n")


@pytest.fixture
def env(config: Path, clawd_env: dict[str, str], start_clawd: Any) -> dict[str, str]:
    start_clawd("-c", str(config), "run")
    return shell_env(clawd_env, config)


def events(*args: str, env: dict[str, str], cwd: Path | None = None) -> Any:
    return subprocess.run(
        ["claw.events", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=30
    )


def subexec(channel: str, *command: str, env: dict[str, str], cwd: Path | None = None) -> Lines:
    return Lines(["claw.events", "subexec", channel, "--", *command], env, cwd)


def one_line_failure(r: Any) -> None:
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr


# -- plain channels --------------------------------------------------------------------


def test_pub_and_sub_on_a_plain_channel(env: dict[str, str], broker: Broker) -> None:
    reader = Lines(["claw.events", "sub", "agent.chat"], env)
    raw = Lines(["mosquitto_sub", *broker.args, "-t", "clawd/channels/agent.chat"], env)
    try:
        wait_subscribed(broker, "clawd/tasks/+/agent.chat")  # sub's second subscription
        wait_subscribed(broker, "clawd/channels/agent.chat")
        assert events("pub", "agent.chat", '{"hello": [1, 2]}', env=env).returncode == 0
        me = events("whoami", env=env).stdout.split(" ")[2].strip()
        line = json.loads(reader.take(1)[0])
        assert line["channel"] == "agent.chat"
        assert line["sender"] == me
        assert line["payload"] == {"hello": [1, 2]}
        assert isinstance(line["timestamp"], float) and line["timestamp"] > 1_600_000_000
        # on the wire it is the same document: mosquitto_sub can watch channels too
        assert json.loads(raw.take(1)[0]) == line

        # a message from any MQTT client is the payload, with no sender
        pub(broker, "clawd/channels/agent.chat", "plain words")
        line = json.loads(reader.take(1)[0])
        assert (line["payload"], line["sender"]) == ("plain words", None)
    finally:
        reader.stop()
        raw.stop()


def test_malformed_json_travels_as_a_string_with_a_warning(
    env: dict[str, str], broker: Broker
) -> None:
    reader = Lines(["claw.events", "sub", "agent.worker.results", "--count", "1"], env)
    wait_subscribed(broker, "clawd/channels/agent.worker.results")
    broken = '{"\n  "task_id": "7",\n  "result": "4"\n}'  # what the seed's worker.sh sends
    r = events("pub", "agent.worker.results", broken, env=env)
    assert r.returncode == 0
    assert "warning: message is not valid JSON" in r.stderr
    assert json.loads(reader.take(1)[0])["payload"] == broken
    assert reader.proc.wait(10) == 0  # --count 1

    strict = events("pub", "--strict", "agent.worker.results", broken, env=env)
    one_line_failure(strict)
    assert "not valid JSON" in strict.stderr


# -- tasks channels --------------------------------------------------------------------


def test_a_task_published_before_any_worker_waits_for_one(
    env: dict[str, str], broker: Broker, tmp_path: Path
) -> None:
    r = events("pub", "agent.late.tasks", '{"id": "late-1", "task": "x", "n": 3}', env=env)
    assert r.returncode == 0, r.stderr
    worker = subexec("agent.late.tasks", "sh", "-c", 'echo "$CLAW_MESSAGE"', env=env)
    try:
        (wid,) = wait_workers(broker, "agent.late.tasks", 1)
        done = wait_results(env, "late-1")["late-1"]
    finally:
        assert worker.stop() == 0
    assert (done["status"], done["attempts"], done["worker"]) == ("ok", 1, wid)
    msg = done["result"]  # the command printed its CLAW_MESSAGE
    assert msg["payload"] == {"id": "late-1", "task": "x", "n": 3}  # as published
    assert msg["channel"] == "agent.late.tasks"
    assert msg["sender"] == events("whoami", env=env).stdout.split(" ")[2].strip()
    assert isinstance(msg["timestamp"], float)
    # clawd's own fields are there too
    assert (msg["id"], msg["type"], msg["attempt"]) == ("late-1", "agent.late.tasks", 1)


def test_a_channel_is_a_tasks_channel_while_a_subexec_serves_it(
    env: dict[str, str], broker: Broker
) -> None:
    worker = subexec("agent.jobs", "sh", "-c", "claw.events whoami", env=env)
    try:
        (wid,) = wait_workers(broker, "agent.jobs", 1)
        assert events("pub", "agent.jobs", '{"id": "j-1"}', env=env).returncode == 0
        done = wait_results(env, "j-1")["j-1"]
        # whoami inside the command names the worker running it
        assert done["result"] == f"worker id {wid}"
    finally:
        assert worker.stop() == 0  # SIGTERM: drains, and leaves no retained status

    # nobody serves it any more: a plain message
    reader = Lines(["claw.events", "sub", "agent.jobs"], env)
    try:
        wait_subscribed(broker, "clawd/channels/agent.jobs")
        assert events("pub", "agent.jobs", '{"id": "j-2"}', env=env).returncode == 0
        assert json.loads(reader.take(1)[0])["payload"] == {"id": "j-2"}
    finally:
        reader.stop()
    r = subprocess.run(["clawd", "results", "j-2"], env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "j-2: unknown" in r.stderr


def test_a_failing_command_is_retried_then_dead_lettered(
    env: dict[str, str], broker: Broker
) -> None:
    worker = subexec("agent.fail.tasks", "sh", "-c", "echo oops >&2; exit 3", env=env)
    try:
        wait_workers(broker, "agent.fail.tasks", 1)
        assert events("pub", "agent.fail.tasks", '{"id": "f-1"}', env=env).returncode == 0
        done = wait_results(env, "f-1")["f-1"]
    finally:
        worker.stop()
    assert (done["status"], done["attempts"]) == ("failed", 2)  # [retry] max_attempts = 2
    assert "exited with code 3: oops" in done["error"]
    dead = subprocess.run(["clawd", "dlq", "show", "f-1"], env=env, capture_output=True, text=True)
    assert dead.returncode == 0 and json.loads(dead.stdout)["reason"] == "max_attempts"


def test_sigterm_lets_the_running_task_finish(
    env: dict[str, str], broker: Broker, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    release = tmp_path / "release"
    script = f"touch {started}; while [ ! -e {release} ]; do sleep 0.05; done; echo finished"
    worker = subexec("agent.slow.tasks", "sh", "-c", script, env=env)
    wait_workers(broker, "agent.slow.tasks", 1)
    assert events("pub", "agent.slow.tasks", '{"id": "s-1"}', env=env).returncode == 0
    _wait_for_file(started)
    os.kill(worker.proc.pid, signal.SIGTERM)  # while the task runs
    release.touch()
    assert worker.proc.wait(30) == 0
    assert wait_results(env, "s-1")["s-1"]["result"] == "finished"


def _wait_for_file(path: Path, timeout: float = 20) -> None:
    import time

    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.02)


# -- refusals, one line each -----------------------------------------------------------


def test_bad_input_is_refused_in_one_line(env: dict[str, str]) -> None:
    for args, words in [
        (("pub", "agent leader", "{}"), "invalid channel"),
        (("pub", "agent.x.tasks", '{"id": "a b"}'), "invalid id"),
        (("sub", "agent/#"), "invalid channel"),
        (("subexec", "--worker-id", "w/1", "agent.x.tasks", "--", "true"), "invalid id"),
    ]:
        r = events(*args, env=env)
        one_line_failure(r)
        assert words in r.stderr, (args, r.stderr)


def test_without_a_running_clawd_it_says_so(clawd_env: dict[str, str], tmp_path: Path) -> None:
    env = {**clawd_env, "PATH": shell_env(clawd_env, tmp_path)["PATH"]}
    for args in (("pub", "a.b", "{}"), ("sub", "a.b"), ("subexec", "a.tasks", "--", "true")):
        r = events(*args, env=env)
        one_line_failure(r)
        assert "no embedded broker is running" in r.stderr


def test_whoami_third_word_is_the_id(clawd_env: dict[str, str], tmp_path: Path) -> None:
    env = shell_env(clawd_env, tmp_path)
    assert events("whoami", env=env).stdout.split(" ")[:2] == ["client", "id"]
    inside = events("whoami", env={**env, "CLAW_WORKER_ID": "host-42"})
    assert inside.stdout == "worker id host-42\n"
    # the same verbs under clawd
    r = subprocess.run(["clawd", "whoami"], env=env, capture_output=True, text=True)
    assert r.stdout == events("whoami", env=env).stdout


def test_a_task_of_a_killed_subexec_runs_on_another(
    env: dict[str, str], broker: Broker, tmp_path: Path
) -> None:
    # the first run blocks until released; the worker running it is then killed -9
    release = tmp_path / "release"
    script = (
        f'echo "$CLAW_WORKER_ID $$" >> {tmp_path}/runs; '
        f"while [ ! -e {release} ]; do sleep 0.05; done; echo done"
    )
    workers = [subexec("agent.pair.tasks", "sh", "-c", script, env=env) for _ in range(2)]
    try:
        wait_workers(broker, "agent.pair.tasks", 2)
        assert events("pub", "agent.pair.tasks", '{"id": "k-1"}', env=env).returncode == 0
        runs = tmp_path / "runs"
        _wait_for_file(runs)
        first, pid = runs.read_text().split()
        victim = next(w for w in workers if first.endswith(f"-{w.proc.pid}"))
        os.kill(victim.proc.pid, signal.SIGKILL)
        os.kill(int(pid), signal.SIGKILL)  # its command, in its own process group
        release.touch()
        done = wait_results(env, "k-1")["k-1"]
    finally:
        for w in workers:
            w.stop(signal.SIGKILL)
    assert done["status"] == "ok" and done["result"] == "done"
    assert done["worker"] != first and done["attempts"] == 2
