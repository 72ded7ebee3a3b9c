"""The ``exec`` task types: external commands, sealed off and killed whole.

Each test writes its command into tmp_path as a small script.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from clawd.config import Config, ExecConfig, load
from clawd.errors import BadInput, PluginError, TaskError, TaskTimeout
from clawd.handler import TaskContext
from clawd.handlers import exec as exec_plugin
from clawd.handlers.exec import MAX_MESSAGE, ExecHandler, task_message
from clawd.plugins import Plugins

SECRET = "clawd-secret-canary-93f2"


def script(tmp_path: Path, body: str, name: str = "cmd.sh") -> str:
    """An executable /bin/sh script in tmp_path; returns its path."""
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def py_script(tmp_path: Path, body: str, name: str = "cmd.py") -> str:
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n" + body)
    path.chmod(0o755)
    return str(path)


def run(
    command: list[str],
    data: Any = None,
    *,
    timeout: float | None = 10,
    progress: list[tuple[float, str | None]] | None = None,
    **config: Any,
) -> Any:
    handler = ExecHandler("job", ExecConfig(command=command, **config))
    ctx = TaskContext(
        id="task-1",
        type="job",
        input=data,
        lane="high",
        attempt=2,
        meta={"by": "test"},
        timeout=timeout,
    )
    if progress is not None:
        ctx.report = lambda fraction, message: progress.append((fraction, message))
    return handler(ctx)


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie waiting for its parent."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat_line.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for_files(*paths: Path, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not all(p.exists() and p.read_text().strip() for p in paths):
        assert time.monotonic() < deadline, f"the script did not write {paths}"
        time.sleep(0.01)


# -- what the command gets ---------------------------------------------------------------


def test_task_arrives_as_json_on_stdin(tmp_path: Path) -> None:
    out = run([script(tmp_path, "cat\n")], {"n": [1, 2]})
    assert out == {
        # the shape claw.events scripts read: payload is the task as published
        "channel": "job",
        "sender": None,
        "timestamp": 0.0,
        "payload": {"id": "task-1", "type": "job", "input": {"n": [1, 2]}},
        "id": "task-1",
        "type": "job",
        "lane": "high",
        "input": {"n": [1, 2]},
        "attempt": 2,
        "meta": {"by": "test"},
    }


def test_claw_message_holds_the_same_json(tmp_path: Path) -> None:
    cmd = script(tmp_path, 'cat > stdin.json; printf "%s" "$CLAW_MESSAGE"\n')
    out = run([cmd], "héllo", cwd=str(tmp_path))
    assert out == json.loads((tmp_path / "stdin.json").read_text())
    assert out["input"] == "héllo"


def test_task_id_and_type_variables(tmp_path: Path) -> None:
    cmd = script(tmp_path, 'echo "$CLAW_TASK_ID $CLAW_TASK_TYPE"\n')
    assert run([cmd]) == "task-1 job"


def test_environment_is_minimal_and_without_the_daemons_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAWD_TEST_SECRET", SECRET)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    cmd = py_script(tmp_path, "import json, os\nprint(json.dumps(dict(os.environ)))\n")
    env = run([cmd], env={"GREETING": "hi"}, cwd=str(tmp_path))
    assert SECRET not in json.dumps(env)
    assert set(env) == {
        "PATH",
        "LANG",
        "LC_ALL",
        "HOME",
        "GREETING",
        "CLAW_MESSAGE",
        "CLAW_TASK_ID",
        "CLAW_TASK_TYPE",
    }
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert env["HOME"] == str(tmp_path)
    assert env["GREETING"] == "hi"


def test_home_is_tmp_without_cwd(tmp_path: Path) -> None:
    assert run([script(tmp_path, 'echo "$HOME"\n')]) == "/tmp"


@pytest.mark.parametrize(
    "payload",
    [
        "$(touch {canary})",
        "`touch {canary}`",
        "x; touch {canary}",
        "x && touch {canary}",
        "x\ntouch {canary}\n",
        "x | touch {canary}",
        "-rf {canary}",
        "--output={canary}",
        '\' "; touch {canary}; echo "',
    ],
)
def test_input_never_reaches_a_shell_or_the_command_line(tmp_path: Path, payload: str) -> None:
    canary = tmp_path / "CANARY"
    text = payload.format(canary=canary)
    # a script that passes on what it got the way old scripts did, quoted
    cmd = script(tmp_path, 'printf "%s" "$CLAW_MESSAGE" > seen.json; echo "$@" > argv.txt\n')
    run([cmd], {"text": text, "list": [text]}, cwd=str(tmp_path))
    assert not canary.exists()
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["input"]["text"] == text
    assert (tmp_path / "argv.txt").read_text() == "\n"  # no arguments at all


def test_relative_command_runs_from_cwd(tmp_path: Path) -> None:
    script(tmp_path, "echo relative\n", name="w.sh")
    assert run(["./w.sh"], cwd=str(tmp_path)) == "relative"


def test_command_found_on_the_minimal_path() -> None:
    assert run(["echo", "a", "b"]) == "a b"


# -- what comes back ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("echo '{\"a\": [1, 2]}'\n", {"a": [1, 2]}),
        ("echo 42\n", 42),
        ("echo hello\n", "hello"),
        ("printf 'two\\n\\n'\n", "two\n"),  # only one trailing newline goes
        ("printf 'no newline'\n", "no newline"),
        ("true\n", ""),
    ],
)
def test_stdout_is_the_result(tmp_path: Path, body: str, expected: Any) -> None:
    assert run([script(tmp_path, body)]) == expected


def test_nonzero_exit_is_retryable_with_code_and_stderr(tmp_path: Path) -> None:
    body = "".join(f"echo line{i} >&2\n" for i in range(30)) + "exit 3\n"
    with pytest.raises(TaskError) as info:
        run([script(tmp_path, body)])
    assert info.value.retryable is True
    assert "exited with code 3" in info.value.message
    assert "line29" in info.value.message
    assert "line5\n" not in info.value.message  # only the last lines


def test_exit_65_is_bad_input_not_retried(tmp_path: Path) -> None:
    with pytest.raises(BadInput) as info:
        run([script(tmp_path, "echo 'field x is missing' >&2\nexit 65\n")])
    assert info.value.retryable is False
    assert "field x is missing" in info.value.message


def test_killed_by_a_signal(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="killed by SIGSEGV") as info:
        run([script(tmp_path, "kill -SEGV $$\n")])
    assert info.value.retryable is True


def test_progress_lines_are_reported_not_kept_as_errors(tmp_path: Path) -> None:
    reports: list[tuple[float, str | None]] = []
    body = (
        "echo 'progress: 0.25' >&2\n"
        "echo 'progress: 0.5 halfway there' >&2\n"
        "echo 'progress: 7' >&2\n"
        "echo 'a real warning' >&2\n"
        "echo 'progress: soon' >&2\n"
        "exit 3\n"
    )
    with pytest.raises(TaskError) as info:
        run([script(tmp_path, body)], progress=reports)
    assert reports == [(0.25, None), (0.5, "halfway there"), (1.0, None)]
    assert "a real warning" in info.value.message
    assert "progress: soon" in info.value.message  # not a fraction: ordinary stderr
    assert "halfway" not in info.value.message


def test_progress_with_success(tmp_path: Path) -> None:
    reports: list[tuple[float, str | None]] = []
    body = "echo 'progress: 0.5 half' >&2\necho done\n"
    assert run([script(tmp_path, body)], progress=reports) == "done"
    assert reports == [(0.5, "half")]


# -- limits ------------------------------------------------------------------------------


def test_timeout_is_task_timeout(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(TaskTimeout, match="ran past its 0.5 s limit"):
        run([script(tmp_path, "sleep 30\n")], timeout=0.5)
    assert time.monotonic() - start < 0.5 + 1.0


def test_timeout_kills_children_ignoring_sigterm_and_grandchildren(tmp_path: Path) -> None:
    body = (
        "trap '' TERM\n"
        "echo $$ > shell.pid\n"
        # a child that ignores SIGTERM (inherited) and starts a grandchild in the background
        "sh -c 'sleep 100 & echo $! > grandchild.pid; exec sleep 100' &\n"
        "echo $! > child.pid\n"
        "wait\n"
        "wait\n"
    )
    pidfiles = [tmp_path / f"{n}.pid" for n in ("shell", "child", "grandchild")]
    start = time.monotonic()
    with pytest.raises(TaskTimeout):
        run([script(tmp_path, body)], timeout=1.0, cwd=str(tmp_path))
    wait_for_files(*pidfiles)
    pids = [int(p.read_text()) for p in pidfiles]
    while any(alive(pid) for pid in pids) and time.monotonic() - start < 1.0 + 1.0:
        time.sleep(0.01)
    assert not [pid for pid in pids if alive(pid)], "processes outlived the task"
    assert time.monotonic() - start < 1.0 + 1.0


def test_processes_left_behind_are_killed_when_the_command_exits(tmp_path: Path) -> None:
    body = "sleep 100 > /dev/null 2>&1 &\necho $! > bg.pid\nsleep 100 &\necho finished\n"
    start = time.monotonic()
    # the second sleep holds stdout open: without the cleanup this would wait 100 s
    assert run([script(tmp_path, body)], cwd=str(tmp_path), timeout=30) == "finished"
    assert time.monotonic() - start < 2
    pid = int((tmp_path / "bg.pid").read_text())
    deadline = time.monotonic() + 1
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(pid)


@pytest.mark.parametrize(("stream", "body"), [("stdout", "yes\n"), ("stderr", "yes >&2\n")])
def test_output_flood_is_capped(tmp_path: Path, stream: str, body: str) -> None:
    start = time.monotonic()
    with pytest.raises(TaskError) as info:
        run([script(tmp_path, body)], max_output=10_000, timeout=20)
    assert f"wrote over 10000 bytes on {stream}" in info.value.message
    assert info.value.retryable is False
    assert time.monotonic() - start < 2


def test_output_up_to_the_cap_is_fine(tmp_path: Path) -> None:
    out = run([script(tmp_path, "head -c 9999 /dev/zero | tr '\\0' x\n")], max_output=10_000)
    assert out == "x" * 9999


def test_large_stdin_and_stdout_together_do_not_deadlock(tmp_path: Path) -> None:
    # both ways over the 64 KiB pipe buffer: needs writing and reading at once
    data = "y" * 60_000  # twice in the message: 120 KB each way
    out = run([script(tmp_path, "cat\n")], data, max_output=1_000_000)
    assert out["input"] == data


def test_claw_message_over_128_kib_is_a_clear_error(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    cmd = script(tmp_path, f"touch {marker}\n")
    with pytest.raises(BadInput) as info:
        run([cmd], "x" * 200_000)
    assert "too large for the CLAW_MESSAGE environment variable" in info.value.message
    assert info.value.retryable is False
    assert not marker.exists()


def test_claw_message_limit_is_exact(tmp_path: Path) -> None:
    cmd = script(tmp_path, 'printf "%s" "$CLAW_MESSAGE" | wc -c\n')
    # the input is in the message twice: at the top level and in "payload"
    room = MAX_MESSAGE - len(_empty_message())
    data = "x" * (room // 2)
    assert MAX_MESSAGE - 1 <= run([cmd], data) <= MAX_MESSAGE  # the largest that fits
    with pytest.raises(BadInput, match="CLAW_MESSAGE"):
        run([cmd], data + "x")


def _empty_message() -> bytes:
    # the message run() sends for an empty string input
    ctx = TaskContext(
        id="task-1", type="job", input="", lane="high", attempt=2, meta={"by": "test"}
    )
    return task_message(ctx)


# -- configuration mistakes --------------------------------------------------------------


def test_missing_executable(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="no such file") as info:
        run([str(tmp_path / "nope.sh")])
    assert info.value.retryable is False


def test_not_executable(tmp_path: Path) -> None:
    path = tmp_path / "plain.sh"
    path.write_text("#!/bin/sh\necho hi\n")
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    with pytest.raises(TaskError, match="is not executable"):
        run([str(path)])


def test_name_not_on_path() -> None:
    with pytest.raises(TaskError, match="not an executable found on PATH"):
        run(["clawd-no-such-command"])


def test_relative_path_without_cwd() -> None:
    with pytest.raises(TaskError, match="relative path"):
        run(["./worker.sh"])


def test_cwd_that_is_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="is not a directory"):
        run(["echo"], cwd=str(tmp_path / "missing"))


def test_empty_command_is_refused_at_registration() -> None:
    with pytest.raises(PluginError, match="command is empty"):
        ExecHandler("job", ExecConfig(command=[]))


def test_registers_one_type_per_configured_command(tmp_path: Path) -> None:
    cmd = script(tmp_path, "echo from-config\n")
    toml = tmp_path / "clawd.toml"
    toml.write_text(
        f'[handlers.exec.hello]\ncommand = ["{cmd}"]\ntimeout = 7\ndescription = "says hi"\n'
        '[handlers.exec.other]\ncommand = ["echo", "other"]\n'
    )
    config = load(str(toml), env={"CLAWD_STATE_DIR": str(tmp_path)})
    plugins = Plugins(config)
    plugins.register_object(exec_plugin, "exec")
    plugins.collect()
    hello = plugins.handlers["hello"]
    assert (hello.timeout, hello.isolation, hello.description) == (7, "thread", "says hi")
    assert plugins.handlers["other"].description == "runs echo other"
    ctx = TaskContext(id="t", type="hello", input=None, timeout=hello.timeout)
    assert hello.func(ctx) == "from-config"


def test_no_commands_no_types() -> None:
    plugins = Plugins(Config())
    plugins.register_object(exec_plugin, "exec")
    plugins.collect()
    assert plugins.handlers == {}


def test_secret_stays_out_even_when_the_task_mentions_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAWD_TEST_SECRET", SECRET)
    assert SECRET in os.environ.values()
    out = run([script(tmp_path, "env\n")], "$CLAWD_TEST_SECRET")
    assert SECRET not in out
