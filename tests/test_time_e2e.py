"""Delayed tasks, schedules and cancel end to end: a real mosquitto, clawd as processes,
tasks from mosquitto_pub and the CLI. Running tasks are exec commands held on a fifo the
test opens, so nothing here waits on a fixed sleep."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from clawd.envelope import encode
from clawd.journal import open_readonly
from tests.conftest import Broker, pub, run_cli, wait_until
from tests.listener import Listener

#: an exec command: records its run and pid, waits on its gate fifo if there is one
HELD = """#!/bin/sh
echo "$CLAW_TASK_ID" >> {dir}/runs
echo $$ > {dir}/pid-$CLAW_TASK_ID
if [ -p {dir}/gate-$CLAW_TASK_ID ]; then cat {dir}/gate-$CLAW_TASK_ID > /dev/null; fi
echo '"done"'
"""


def held_config(make_config: Any, tmp_path: Path, extra: str = "", concurrency: int = 4) -> Path:
    cmd = tmp_path / "held.sh"
    cmd.write_text(HELD.format(dir=tmp_path))
    cmd.chmod(0o755)
    return Path(
        make_config(
            f'[worker]\nconcurrency = {concurrency}\n\n[handlers.exec.held]\ncommand = ["{cmd}"]\n'
            + extra
        )
    )


def gate(tmp_path: Path, task_id: str) -> Path:
    path = tmp_path / f"gate-{task_id}"
    os.mkfifo(path)
    return path


def runs(tmp_path: Path) -> list[str]:
    f = tmp_path / "runs"
    return f.read_text().split() if f.exists() else []


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def submit(broker: Broker, **env: Any) -> None:
    pub(broker, "clawd/tasks/normal", encode({"type": "held", **env}))


def open_in_journal(tmp_path: Path, task_id: str) -> bool:
    db = tmp_path / "state" / "journal.db"
    if not db.exists():
        return False
    j = open_readonly(db)
    try:
        return task_id in j.lookup_many([task_id])
    finally:
        j.close()


# -- delay ---------------------------------------------------------------------------------


def test_a_delayed_task_does_not_start_before_its_time(
    broker: Broker, make_config: Any, start_clawd: Any, tmp_path: Path
) -> None:
    cfg = held_config(make_config, tmp_path)
    start_clawd("-c", str(cfg), "run")
    results = Listener(broker.url, "clawd/results/#")
    submit(broker, id="later", delay=2)
    submit(broker, id="now")
    [now] = results.json("clawd/results/now")
    [later] = results.json("clawd/results/later")
    results.close()
    assert now["status"] == later["status"] == "ok"
    assert later["started_at"] >= later["submitted_at"] + 2
    assert runs(tmp_path) == ["now", "later"]


def test_clawd_task_shows_delayed_until_and_bad_delays_are_rejected(
    broker: Broker, make_config: Any, start_clawd: Any, tmp_path: Path, clawd_env: Any
) -> None:
    cfg = held_config(make_config, tmp_path)
    start_clawd("-c", str(cfg), "run")
    results = Listener(broker.url, "clawd/results/#")
    submit(broker, id="far", not_before="2099-01-01T00:00:00Z")
    submit(broker, id="soon", not_before="2026-12-01T14:00:00")
    [far] = results.json("clawd/results/far")
    [soon] = results.json("clawd/results/soon")
    assert far["status"] == "rejected" and "366 days" in far["error"]
    assert soon["status"] == "rejected" and "no time zone" in soon["error"]
    submit(broker, id="hour", delay=3600)
    wait_until(lambda: open_in_journal(tmp_path, "hour"), what="the task journaled")
    out = run_cli("-c", str(cfg), "task", "hour", env=clawd_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("hour: delayed until ")
    results.close()


def test_a_delayed_task_across_a_distributor_restart(
    broker: Broker, make_config: Any, start_clawd: Any, tmp_path: Path
) -> None:
    cfg = held_config(make_config, tmp_path)
    first = start_clawd("-c", str(cfg), "run")
    results = Listener(broker.url, "clawd/results/#")
    submit(broker, id="across", delay=3)
    wait_until(lambda: open_in_journal(tmp_path, "across"), what="the task journaled")
    first.stop(signal.SIGKILL)
    start_clawd("-c", str(cfg), "run")
    [doc] = results.json("clawd/results/across")
    results.close()
    assert doc["status"] == "ok"
    assert doc["started_at"] >= doc["submitted_at"] + 3
    assert runs(tmp_path) == ["across"]


# -- schedules -----------------------------------------------------------------------------


def test_a_schedule_fires_and_no_slot_runs_twice_across_a_restart(
    broker: Broker, make_config: Any, start_clawd: Any, tmp_path: Path
) -> None:
    cfg = held_config(
        make_config, tmp_path, '\n[schedules.tick]\nevery = 1\ntask = {type = "held"}\n'
    )
    results = Listener(broker.url, "clawd/results/#")
    first = start_clawd("-c", str(cfg), "run")
    [doc] = results.wait(lambda m: m.topic.startswith("clawd/results/schedule:tick:"))
    fired = json.loads(doc.payload)
    assert fired["status"] == "ok"
    first.stop(signal.SIGTERM)
    seen = len(results.seen)
    start_clawd("-c", str(cfg), "run")
    later = results.wait(
        lambda m: (
            m.topic.startswith("clawd/results/schedule:tick:")
            and int(m.topic.rsplit(":", 1)[1]) > int(fired["id"].rsplit(":", 1)[1])
        ),
        count=2,
    )
    results.close()
    assert later and len(results.seen) > seen
    done = runs(tmp_path)
    assert done.count(fired["id"]) == 1
    # every run is of its own slot: none ran twice
    assert len(done) == len(set(done))


def test_a_bad_schedule_is_refused_with_its_file_and_key(
    make_config: Any, tmp_path: Path, clawd_env: Any
) -> None:
    cfg = held_config(
        make_config,
        tmp_path,
        '\n[schedules.nightly]\ncron = "0 25 * * *"\ntask = {type = "held"}\n',
    )
    out = run_cli("-c", str(cfg), "config", "check", env=clawd_env)
    assert out.returncode == 78
    assert f"{cfg}: [schedules.nightly] cron: hour field: 25 is out of range 0-23" in out.stderr


# -- cancel --------------------------------------------------------------------------------


def test_cancel_queued_delayed_and_running_tasks(
    broker: Broker, make_config: Any, start_clawd: Any, tmp_path: Path, clawd_env: Any
) -> None:
    cfg = held_config(make_config, tmp_path, concurrency=1)
    start_clawd("-c", str(cfg), "run")
    results = Listener(broker.url, "clawd/results/#")
    gate(tmp_path, "running")
    submit(broker, id="running")
    pidfile = tmp_path / "pid-running"
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), what="it to start")
    pid = int(pidfile.read_text())
    submit(broker, id="queued")
    submit(broker, id="delayed", delay=3600)
    wait_until(lambda: open_in_journal(tmp_path, "delayed"), what="the tasks journaled")
    # queued and delayed through the control topic, with mosquitto_pub
    pub(broker, "clawd/_/control", json.dumps({"cmd": "cancel", "ids": ["queued", "delayed"]}))
    for tid in ("queued", "delayed"):
        [doc] = results.json(f"clawd/results/{tid}")
        assert doc["status"] == "cancelled"
    # the running one with the CLI: its process group is killed
    out = run_cli("-c", str(cfg), "cancel", "running", env=clawd_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "running: cancelled"
    [doc] = results.json("clawd/results/running")
    assert doc["status"] == "cancelled" and doc["worker"]
    wait_until(lambda: not alive(pid), what="the command to be killed")
    # its slot is free again: the next task runs on the one-slot worker
    submit(broker, id="after")
    [after] = results.json("clawd/results/after")
    assert after["status"] == "ok"
    assert runs(tmp_path) == ["running", "after"]
    assert [m.topic for m in results.seen].count("clawd/results/running") == 1
    # cancelling it again, or an id nobody knows: one line each, exit 1
    out = run_cli("-c", str(cfg), "cancel", "running", "ghost", env=clawd_env)
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        "clawd: running: already finished (cancelled), not cancelled",
        "clawd: ghost: no such task (neither open nor finished)",
    ]
    results.close()


def test_cancel_racing_completion_ends_with_exactly_one_result(
    broker: Broker, make_config: Any, start_clawd: Any, tmp_path: Path, clawd_env: Any
) -> None:
    cfg = held_config(make_config, tmp_path)
    start_clawd("-c", str(cfg), "run")
    results = Listener(broker.url, "clawd/results/#")
    fifo = gate(tmp_path, "race")
    submit(broker, id="race")
    pidfile = tmp_path / "pid-race"
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), what="it to start")
    # release the command and cancel it at the same moment
    with open(fifo, "w") as w:
        w.write("go\n")
    pub(broker, "clawd/_/control", json.dumps({"cmd": "cancel", "ids": ["race"]}))
    [doc] = results.json("clawd/results/race")
    assert doc["status"] in ("ok", "cancelled")
    # a later task's result is a marker: nothing more about "race" came before it
    submit(broker, id="marker")
    results.json("clawd/results/marker")
    assert [m.topic for m in results.seen].count("clawd/results/race") == 1
    out = run_cli("-c", str(cfg), "task", "race", "--json", env=clawd_env)
    assert json.loads(out.stdout)["result"]["status"] == doc["status"]
    results.close()


def test_clawd_submit_delay_and_not_before(
    broker: Broker, make_config: Any, start_clawd: Any, tmp_path: Path, clawd_env: Any
) -> None:
    cfg = held_config(make_config, tmp_path)
    start_clawd("-c", str(cfg), "run")
    out = run_cli(
        "-c",
        str(cfg),
        "submit",
        "held",
        "--id",
        "cli-1",
        "--delay",
        "1",
        "--wait",
        "--json",
        env=clawd_env,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["status"] == "ok" and doc["started_at"] >= doc["submitted_at"] + 1
    out = run_cli(
        "-c",
        str(cfg),
        "submit",
        "held",
        "--id",
        "cli-2",
        "--not-before",
        "noon",
        "--wait",
        "--json",
        env=clawd_env,
    )
    # refused before anything is sent, by the daemon's own parser, with its message
    assert out.returncode == 1 and not out.stdout
    assert (
        out.stderr.startswith("clawd: rejected:") and "is not an RFC 3339 date-time" in out.stderr
    )


def test_a_stopping_worker_stops_the_commands_it_still_runs(
    broker: Broker, make_config: Any, start_clawd: Any, tmp_path: Path
) -> None:
    cmd = tmp_path / "held.sh"
    cmd.write_text(HELD.format(dir=tmp_path))
    cmd.chmod(0o755)
    cfg = make_config(
        f'[worker]\ndrain_timeout = 0.5\n\n[handlers.exec.held]\ncommand = ["{cmd}"]\n'
    )
    gate(tmp_path, "s1")  # never opened: the command runs until it is stopped
    d = start_clawd("-c", str(cfg), "run")
    submit(broker, id="s1")
    pid_file = tmp_path / "pid-s1"
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), what="s1 running")
    pid = int(pid_file.read_text())
    assert alive(pid)
    # the drain gives up after 0.5 s and hands s1 back: its command must not run on
    # beside the task's next attempt
    assert d.stop(signal.SIGTERM) == 0
    wait_until(lambda: not alive(pid), what=f"command {pid} stopped with its worker")
    assert "stopped 1 command(s) still running" in d.output()
