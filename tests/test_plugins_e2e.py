"""Plugin failures against the real daemon on a private mosquitto: fenced, named, survived."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Broker, lines, pub, run_cli, sub

GUARD_DIR = ROOT / "tests" / "dropins_guard"

BAD_HANDLERS = """
from clawd import hookimpl

@hookimpl
def clawd_register_handlers(register, config):
    raise RuntimeError("cannot register")
"""

BAD_FACTORY = """
from clawd import hookimpl

def factory(options):
    raise LookupError("no table")

@hookimpl
def clawd_register_strategies(register, config):
    register("broken", factory)
"""


def private_dir(tmp_path: Path, name: str, files: dict[str, str]) -> Path:
    d = tmp_path / name
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    for fname, text in files.items():
        (d / fname).write_text(text)
    return d


def wait_until(what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def wait_for_workers(broker: Broker, ids: set[str], timeout: float = 30) -> None:
    """Read the distributor's metrics snapshots until it counts ``ids`` online."""
    p = subprocess.Popen(
        ["mosquitto_sub", *broker.args, "-t", "clawd/metrics", "-W", str(timeout)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout is not None
        for line in p.stdout:
            workers = json.loads(line)["workers"]
            if all(workers.get(i, {}).get("online") for i in ids):
                return
        raise AssertionError(f"the distributor never saw workers {sorted(ids)} online")
    finally:
        p.kill()
        p.wait()


def test_failing_strategy_and_observers_are_named_and_the_daemon_keeps_going(
    tmp_path: Path, broker: Broker, make_config: Any, start_clawd: Any, clawd_env: dict[str, str]
) -> None:
    guard = tmp_path / "guard"
    shutil.copytree(GUARD_DIR, guard)
    guard.chmod(0o755)
    hook_log = tmp_path / "hooks.log"
    env = {**clawd_env, "CLAWD_TEST_HOOK_LOG": str(hook_log)}
    cfg = make_config('[distributor]\nstrategy = "boom"\n')
    cfg.write_text(cfg.read_text().replace("plugin_dirs = [", f'plugin_dirs = ["{guard}", '))
    d = start_clawd("-c", str(cfg), "run", "--worker-id", "w1", env=env)
    w2 = start_clawd("-c", str(cfg), "run", "--role", "worker", "--worker-id", "w2", env=env)
    wait_for_workers(broker, {"w1", "w2"})
    n = 6
    s = sub(broker, "clawd/results/+", n)
    for i in range(n):
        pub(broker, "clawd/tasks/normal/echo", json.dumps({"id": f"t{i}", "input": i}))
    results = {r["id"]: r for r in lines(s)}
    assert sorted(results) == [f"t{i}" for i in range(n)]
    assert all(r["status"] == "ok" for r in results.values())
    assert {r["worker"] for r in results.values()} <= {"w1", "w2"}
    assert d.proc.poll() is None and w2.proc.poll() is None

    out = d.output()
    # the strategy raised: named once, the dispatch chose round robin instead
    assert (
        "plugin boomstrat failed in strategy 'boom' choose: RuntimeError('boom strategy') "
        "(chose round robin instead); skipped" in out
    )
    # the failing observer: one line for six failures, on each side
    assert out.count("plugin m_noisy failed in clawd_task_finished:") == 1
    assert "plugin m_noisy failed in clawd_after_task: RuntimeError('noisy worker" in out
    assert "Traceback" not in out and "loop failed" not in out

    # every finished task went through the wrapper, then tryfirst, then trylast
    # (registration order alone would call them the other way round)
    def hook_lines() -> list[str] | None:
        got = hook_log.read_text().splitlines() if hook_log.exists() else []
        return got if len(got) == 4 * n else None

    got = wait_until("every task's hooks", hook_lines)
    groups = [got[i : i + 4] for i in range(0, 4 * n, 4)]
    for g in groups:
        tid = g[0].split()[1]
        assert g == [f"before {tid}", f"first {tid}", f"last {tid}", f"after {tid}"]
    assert sorted(g[0].split()[1] for g in groups) == sorted(results)


@pytest.mark.parametrize(
    ("name", "code", "message"),
    [
        (
            "badreg",
            BAD_HANDLERS,
            "failed in clawd_register_handlers: RuntimeError('cannot register')",
        ),
        ("badfactory", BAD_FACTORY, "strategy 'broken' of plugin 'badfactory' failed to start"),
    ],
)
def test_a_failing_registration_refuses_start_with_exit_78(
    tmp_path: Path, make_config: Any, clawd_env: dict[str, str], name: str, code: str, message: str
) -> None:
    bad = private_dir(tmp_path, "bad", {f"{name}.py": code})
    strategy = "broken" if name == "badfactory" else "round_robin"
    cfg = make_config(f'[distributor]\nstrategy = "{strategy}"\n')
    cfg.write_text(cfg.read_text().replace("plugin_dirs = [", f'plugin_dirs = ["{bad}", '))
    out = run_cli("-c", str(cfg), "run", env=clawd_env)
    assert out.returncode == 78, out.stderr
    (line,) = [x for x in out.stderr.splitlines() if x.startswith("clawd: ")]
    assert message in line
    assert "Traceback" not in out.stderr
    if name == "badreg":
        assert f"plugin 'badreg' ({bad / 'badreg.py'})" in line


@pytest.mark.parametrize(
    ("name", "code", "strategy", "message"),
    [
        (
            "badreg",
            BAD_HANDLERS,
            "round_robin",
            "plugin 'badreg' ({file}) failed in clawd_register_handlers: "
            "RuntimeError('cannot register')",
        ),
        (
            "badfactory",
            BAD_FACTORY,
            "broken",
            "strategy 'broken' of plugin 'badfactory' failed to start: LookupError('no table')",
        ),
    ],
)
def test_a_failing_registration_on_reload_keeps_the_running_plugins(
    tmp_path: Path,
    broker: Broker,
    make_config: Any,
    start_clawd: Any,
    name: str,
    code: str,
    strategy: str,
    message: str,
) -> None:
    extra = private_dir(tmp_path, "extra", {})
    cfg = make_config()
    text = cfg.read_text().replace("plugin_dirs = [", f'plugin_dirs = ["{extra}", ')
    cfg.write_text(text)
    d = start_clawd("-c", str(cfg), "run")
    (extra / f"{name}.py").write_text(code)
    cfg.write_text(text + f'\n[distributor]\nstrategy = "{strategy}"\n')
    d.proc.send_signal(signal.SIGHUP)
    wait_until(
        "the reload to be refused",
        lambda: "reload refused: keeping the running configuration" in d.output(),
    )
    out = d.output()
    assert "reload refused: " + message.format(file=extra / f"{name}.py") in out
    assert "Traceback" not in out
    # the old plugins are still in force: the drop-in handler still runs tasks
    s = sub(broker, "clawd/results/+", 1)
    pub(broker, "clawd/tasks/normal/reverse", json.dumps({"id": "r1", "input": "abc"}))
    (result,) = lines(s)
    assert result["status"] == "ok" and result["result"] == "cba"
    assert d.proc.poll() is None
