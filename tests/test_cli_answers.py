"""Every CLI failure answers: one line on stderr, a non-zero exit, no traceback, no hang."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from clawd.status_view import plugin_table, render_fitted
from tests.conftest import run_cli


def one_line_failure(r: Any, words: str) -> None:
    assert r.returncode != 0, r.stdout
    assert r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert words in r.stderr, r.stderr


# -- without a daemon ------------------------------------------------------------------


def test_broker_args_without_a_running_clawd(clawd_env: dict[str, str]) -> None:
    r = run_cli("broker", "args", env=clawd_env, timeout=10)
    one_line_failure(r, "no embedded broker is running")
    assert r.stdout == ""  # nothing that would send mosquitto_pub to port 1883


def test_submit_is_checked_with_the_daemons_parser_before_sending(
    clawd_env: dict[str, str], tmp_path: Path
) -> None:
    # no broker at all: these fail on their content, before anything connects
    r = run_cli("submit", "compute", "1", "--id", "a b", "--wait", env=clawd_env, timeout=10)
    one_line_failure(r, "rejected: invalid id 'a b': ids are 1-128 characters")
    r = run_cli("submit", "compute", "1", "--lane", "urgent", env=clawd_env, timeout=10)
    one_line_failure(r, "rejected: unknown lane 'urgent'")

    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"type": "compute", "input": "1"}\n{"type": "compute", "inptu": "2"}\n')
    r = run_cli("submit", "-f", str(tasks), env=clawd_env, timeout=10)
    one_line_failure(r, f'{tasks}:2: rejected: invalid task envelope: unknown field "inptu"')


def test_config_after_the_subcommand(clawd_env: dict[str, str], tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[retry]\nmax_attempts = "many"\n')
    for args in (("-c", str(cfg), "config", "check"), ("config", "check", "-c", str(cfg))):
        one_line_failure(run_cli(*args, env=clawd_env, timeout=10), "max_attempts")
    r = run_cli("run", "-c", str(tmp_path / "missing.toml"), env=clawd_env, timeout=10)
    one_line_failure(r, "missing.toml")
    assert r.returncode == 78


def test_plugins_fit_80_columns(clawd_env: dict[str, str], make_config: Any) -> None:
    r = run_cli("plugins", "-c", str(make_config()), env={**clawd_env, "COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    rows = r.stdout.splitlines()
    assert rows[0].split() == ["plugin", "from", "registers", "hooks"]
    assert any(row.startswith("testing ") for row in rows)  # the test drop-in
    assert len(rows) <= 24
    assert max(len(row) for row in rows) <= 80
    # what was cut is in --json
    full = json.loads(run_cli("plugins", "--json", env=clawd_env).stdout)
    assert {p["name"] for p in full} <= {row.split()[0] for row in rows[1:]}


def test_plugin_table_cuts_long_cells() -> None:
    rows = [
        {
            "name": "a-plugin-with-a-very-long-name",
            "source": "/srv/clawd/plugins/a-plugin-with-a-very-long-name.py",
            "handlers": [f"type{i}" for i in range(20)],
            "strategies": [],
            "hooks": ["clawd_before_task", "clawd_after_task", "clawd_dead_letter"],
        }
    ]
    console = Console(width=80, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(plugin_table(rows))
    lines = console.export_text().splitlines()
    assert len(lines) == 2 and max(len(line) for line in lines) <= 80
    assert "…" in lines[1]


def test_status_watch_fits_80x24_however_many_workers() -> None:
    snap = {
        "metrics": {
            "in_flight": 3,
            "delayed": 1,
            "lanes": {
                name: {"weight": 1, "depth": 5, "oldest_age": 1.5, "served": 2}
                for name in ("high", "normal", "low")
            },
            "counters": {"submitted": 120, "ok": 100, "failed": 2, "dead": 1, "retried": 4},
            "rates": {"submitted": 3.1},
            "breakers": {"types": {"compute": {"state": "open"}}},
            "workers": {},
        },
        "workers": {
            f"worker-with-a-rather-long-name-{i:02d}": {
                "state": "online",
                "capacity": 4,
                "in_flight": i % 4,
                "handlers": ["analyze", "compute", "transform", "agent.leader.tasks"],
            }
            for i in range(40)
        },
    }
    console = Console(width=80, height=24, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(render_fitted(snap, 80, 24))
    lines = console.export_text().splitlines()
    assert len(lines) <= 24 and max(len(line) for line in lines) <= 80
    assert "breakers: types/compute open" in lines
    assert lines[-1] == "... and 22 more workers (clawd status lists all)"


# -- with a daemon ---------------------------------------------------------------------


def test_what_the_daemon_rejects_reaches_the_waiting_client(
    clawd_env: dict[str, str], make_config: Any, start_clawd: Any
) -> None:
    cfg = str(make_config())
    start_clawd("run", "-c", cfg)
    r = run_cli("submit", "nosuch", "1", "--wait", "-c", cfg, env=clawd_env, timeout=10)
    assert r.returncode == 1
    assert (
        r.stderr == "rejected: unknown task type 'nosuch' (known: " + r.stderr.split("(known: ")[1]
    )
    # a wait that cannot end (no worker has the capability) gives up at --timeout
    r = run_cli(
        "submit", "compute", "1", "--requires", "gpu", "--wait", "--timeout", "0.5", "-c", cfg,
        env=clawd_env, timeout=10,
    )  # fmt: skip
    one_line_failure(r, "within 0.5 s")
    assert r.returncode == 2
    # a stream gives up at --timeout too
    r = run_cli("results", "--follow", "--timeout", "0.5", "-c", cfg, env=clawd_env, timeout=10)
    assert r.returncode == 0 and "Traceback" not in r.stderr


def test_unknown_ids_fail_with_a_message(
    clawd_env: dict[str, str], make_config: Any, start_clawd: Any
) -> None:
    cfg = str(make_config())
    start_clawd("run", "-c", cfg)
    ok = run_cli("submit", "compute", "2+2", "--id", "known-1", "--wait", "-c", cfg, env=clawd_env)
    assert ok.stdout == "4\n"
    one_line_failure(run_cli("results", "nope", "-c", cfg, env=clawd_env), "nope: unknown")
    both = run_cli("results", "known-1", "nope", "-c", cfg, env=clawd_env)
    one_line_failure(both, "nope: unknown")
    assert json.loads(both.stdout)["id"] == "known-1"  # what is known is still printed
    for verb in ("replay", "purge"):
        r = run_cli("dlq", verb, "nope", "-c", cfg, env=clawd_env, timeout=10)
        one_line_failure(r, "no dead letter with id nope")
