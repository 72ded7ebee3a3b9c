"""Groups and chains end to end: a real mosquitto, clawd as processes, workflows from
mosquitto_pub and from ``clawd submit -f --group``. Tasks that must stay running are
exec commands held on a fifo the test opens, so nothing here waits on a fixed sleep;
``echo`` (the test drop-in) returns its input."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

from clawd.journal import open_readonly
from tests.conftest import Broker, pub, run_cli, sub, wait_until
from tests.listener import Listener
from tests.test_time_e2e import alive, gate, held_config, runs

MAP_REDUCE = (
    '{"type": "group", "id": "squares", "tasks": ['
    '{"type": "compute", "input": "1^2"}, {"type": "compute", "input": "2^2"}, '
    '{"type": "compute", "input": "3^2"}], "then": {"type": "analyze"}}'
)


def open_groups(tmp_path: Path) -> list[str]:
    db = tmp_path / "state" / "journal.db"
    if not db.exists():
        return []
    j = open_readonly(db)
    try:
        return [row[0] for row in j.open_groups()]
    finally:
        j.close()


def test_map_reduce_from_one_mosquitto_pub(
    broker: Broker, make_config: Any, start_clawd: Any
) -> None:
    start_clawd("-c", str(make_config()), "run")
    progress = sub(broker, "clawd/progress/squares", 4)
    results = Listener(broker.url, "clawd/results/#")
    pub(broker, "clawd/tasks/normal", MAP_REDUCE)
    [doc] = results.json("clawd/results/squares")
    assert doc["status"] == "ok" and doc["type"] == "group"
    assert doc["result"]["count"] == 3 and doc["result"]["sum"] == 14
    assert doc["members"] == [{"id": f"squares.{i}", "status": "ok"} for i in range(3)]
    assert doc["then"] == {"id": "squares.then", "status": "ok"}
    [then] = results.json("clawd/results/squares.then")
    assert then["result"] == doc["result"]
    results.close()
    reports = [json.loads(line) for line in progress.communicate(timeout=30)[0].splitlines()]
    assert [(r["done"], r["total"]) for r in reports] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert reports[-1]["progress"] == 1.0 and reports[-1]["id"] == "squares"


def test_a_failed_member_skips_the_then_unless_failures_are_allowed(
    broker: Broker, make_config: Any, start_clawd: Any, tmp_path: Path
) -> None:
    start_clawd("-c", str(make_config()), "run")
    results = Listener(broker.url, "clawd/results/#")
    members = '[{"type": "compute", "input": "1/0"}, {"type": "compute", "input": "6*7"}]'
    pub(
        broker,
        "clawd/tasks/normal",
        f'{{"type": "group", "id": "strict", "tasks": {members}, "then": {{"type": "echo"}}}}',
    )
    pub(
        broker,
        "clawd/tasks/normal",
        f'{{"type": "group", "id": "lenient", "tasks": {members}, "then": {{"type": "echo"}},'
        ' "allow_failures": true}',
    )
    [strict] = results.json("clawd/results/strict")
    [lenient] = results.json("clawd/results/lenient")
    assert strict["status"] == "failed" and "strict.0 (failed)" in strict["error"]
    assert strict["then"] == {"id": "strict.then", "status": "skipped"}
    assert [m["status"] for m in strict["members"]] == ["failed", "ok"]
    assert lenient["status"] == "ok" and lenient["result"] == [None, 42]
    assert not any(m.topic == "clawd/results/strict.then" for m in results.seen)
    results.close()


def test_a_chain_runs_each_then_with_the_result_before_it(
    broker: Broker, make_config: Any, start_clawd: Any, tmp_path: Path
) -> None:
    start_clawd("-c", str(make_config()), "run")
    results = Listener(broker.url, "clawd/results/#")
    pub(
        broker,
        "clawd/tasks/normal",
        '{"type": "compute", "id": "c", "input": "2+2",'
        ' "then": {"type": "echo", "then": {"type": "echo", "id": "last"}}}',
    )
    [last] = results.json("clawd/results/last")
    [first] = results.json("clawd/results/c")
    [middle] = results.json("clawd/results/c.then")
    assert first["result"] == middle["result"] == last["result"] == 4
    results.close()


def test_clawd_submit_group_from_a_file(
    broker: Broker, make_config: Any, start_clawd: Any, tmp_path: Path, clawd_env: Any
) -> None:
    cfg = make_config()
    start_clawd("-c", str(cfg), "run")
    members = tmp_path / "numbers.jsonl"
    members.write_text("".join(f'{{"type": "compute", "input": "{n}*10"}}\n' for n in range(5)))
    out = run_cli(
        "-c",
        str(cfg),
        "submit",
        "-f",
        str(members),
        "--group",
        "tens",
        "--then",
        "analyze",
        "--json",
        env=clawd_env,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["status"] == "ok" and doc["result"]["sum"] == 100
    assert "group tens: ok, 5 member(s) (5 ok), then tens.then ok" in out.stderr
    # a member that fails fails the group: exit status 1, and the reason
    members.write_text('{"type": "compute", "input": "1/0"}\n{"type": "compute", "input": "1"}\n')
    out = run_cli(
        "-c",
        str(cfg),
        "submit",
        "-f",
        str(members),
        "--group",
        "bad",
        "--then",
        "analyze",
        env=clawd_env,
    )
    assert out.returncode == 1
    assert "failed: 1 member(s) did not succeed: bad.0 (failed)" in out.stderr
    assert "then bad.then skipped" in out.stderr
    # a bad member is refused before anything is sent
    members.write_text('{"type": "compute", "input": "1", "bogus": 1}\n')
    out = run_cli("-c", str(cfg), "submit", "-f", str(members), "--group", "g3", env=clawd_env)
    assert out.returncode == 1 and "member 0 " in out.stderr and '"bogus"' in out.stderr


def test_a_bad_group_gets_a_clear_error_and_a_rejected_result(
    broker: Broker, make_config: Any, start_clawd: Any
) -> None:
    start_clawd("-c", str(make_config()), "run")
    errors = sub(broker, "clawd/errors", 2)
    results = Listener(broker.url, "clawd/results/#")
    pub(broker, "clawd/tasks/normal", '{"type": "group", "id": "empty", "tasks": []}')
    pub(
        broker,
        "clawd/tasks/normal",
        '{"type": "group", "id": "dup", "tasks": [{"type": "compute", "id": "x", "input": "1"},'
        ' {"type": "compute", "id": "x", "input": "2"}]}',
    )
    out = [json.loads(line) for line in errors.communicate(timeout=30)[0].splitlines()]
    assert "is empty" in out[0]["error"] and out[0]["id"] == "empty"
    assert "id 'x' is also member 0" in out[1]["error"]
    [doc] = results.json("clawd/results/dup")
    assert doc["status"] == "rejected"
    results.close()


def test_a_group_survives_a_distributor_killed_mid_way_and_runs_once(
    broker: Broker, make_config: Any, start_clawd: Any, tmp_path: Path
) -> None:
    held_config(make_config, tmp_path)  # writes the held command
    handler = f'[handlers.exec.held]\ncommand = ["{tmp_path / "held.sh"}"]\n'
    # the first distributor has no worker: the group is journaled and waits
    alone = make_config(f'roles = ["distributor"]\n\n{handler}', name="alone.toml")
    first = start_clawd("-c", str(alone), "run")
    results = Listener(broker.url, "clawd/results/#")
    group = (
        '{"type": "group", "id": "g", "tasks": [{"type": "held", "input": 1},'
        ' {"type": "held", "input": 2}], "then": {"type": "held"}}'
    )
    pub(broker, "clawd/tasks/normal", group)
    wait_until(lambda: open_groups(tmp_path) == ["g"], what="the group journaled")
    first.stop(signal.SIGKILL)
    start_clawd("-c", str(make_config(handler, name="both.toml")), "run")
    [doc] = results.json("clawd/results/g")
    assert doc["status"] == "ok" and doc["then"]["status"] == "ok"
    # submitted again: its stored result stands, nothing runs again
    pub(broker, "clawd/tasks/normal", group)
    results.wait(lambda m: m.topic == "clawd/results/g", count=2)
    results.close()
    assert sorted(runs(tmp_path)) == ["g.0", "g.1", "g.then"]
    assert open_groups(tmp_path) == []


def test_clawd_cancel_of_a_group_cancels_its_running_members(
    broker: Broker, make_config: Any, start_clawd: Any, tmp_path: Path, clawd_env: Any
) -> None:
    cfg = held_config(make_config, tmp_path)
    start_clawd("-c", str(cfg), "run")
    gate(tmp_path, "c.0")
    gate(tmp_path, "c.1")
    results = Listener(broker.url, "clawd/results/#")
    pub(
        broker,
        "clawd/tasks/normal",
        '{"type": "group", "id": "c", "tasks": [{"type": "held"}, {"type": "held"}],'
        ' "then": {"type": "held"}}',
    )
    wait_until(lambda: sorted(runs(tmp_path)) == ["c.0", "c.1"], what="both members running")
    out = run_cli("-c", str(cfg), "task", "c", env=clawd_env)
    assert out.stdout == "c: group, 0/2 members done (2 open), then c.then waiting\n", out.stderr
    out = run_cli("-c", str(cfg), "cancel", "c", env=clawd_env)
    assert out.returncode == 0, out.stderr
    [doc] = results.json("clawd/results/c")
    assert doc["status"] == "cancelled"
    assert [m["status"] for m in doc["members"]] == ["cancelled", "cancelled"]
    assert doc["then"] == {"id": "c.then", "status": "skipped"}
    [m0] = results.json("clawd/results/c.0")
    assert m0["status"] == "cancelled"
    results.close()
    # and the members' commands were stopped, not left waiting on their gates
    for member in ("c.0", "c.1"):
        pid = int((tmp_path / f"pid-{member}").read_text())
        wait_until(lambda pid=pid: not alive(pid), what=f"{member}'s command stopped")
    assert "c.then" not in runs(tmp_path)


def test_mosquitto_rr_gets_the_group_result_on_its_response_topic(
    broker: Broker, make_config: Any, start_clawd: Any
) -> None:
    start_clawd("-c", str(make_config()), "run")
    out = subprocess.run(
        ["mosquitto_rr", *broker.args, "-V", "5", "-q", "1", "-t", "clawd/tasks/normal"]
        + ["-e", "my/reply", "-m", MAP_REDUCE, "-W", "20"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["id"] == "squares" and doc["status"] == "ok" and doc["result"]["sum"] == 14
