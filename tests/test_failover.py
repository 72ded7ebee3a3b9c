"""HA distributors on a real mosquitto and a private PostgreSQL: the leader killed or
stalled under load, a standby takes over, nothing acknowledged is lost. (How fast:
``python -m bench.failover``.)"""

from __future__ import annotations

from pathlib import Path

from clawd.daemon import EX_DEPOSED
from tests.faults.ha import run_failover
from tests.faults.harness import SLOTS
from tests.postgres import pg_server, pg_url  # noqa: F401


def test_leader_killed_under_load_standby_takes_over_nothing_lost(
    tmp_path: Path, pg_url: str
) -> None:
    r, tk = run_failover("kill", 200, workdir=tmp_path, journal_url=pg_url)
    assert r.acked == 200 and tk.submitted_during > 60  # a third submitted while none led
    assert tk.standby_quiet  # the standby did not touch the broker before it led
    assert r.lost == 0, r.examples["lost"][:10]
    assert r.dup_results == 0, r.examples["dup result"][:10]
    assert r.unexpected == 0, r.examples["unexpected"][:10]
    # duplicates only of what ran when the leader died (its workers' slots at most)
    assert r.extra_execs <= max(r.in_flight, SLOTS), (r.extra_execs, r.in_flight)


def test_a_stalled_leader_is_replaced_and_writes_nothing_when_it_wakes(
    tmp_path: Path, pg_url: str
) -> None:
    r, tk = run_failover("stall", 200, workdir=tmp_path, journal_url=pg_url, lock_timeout=2.0)
    assert r.acked == 200 and tk.submitted_during > 60  # a third submitted while none led
    assert tk.standby_quiet  # the standby did not touch the broker before it led
    assert r.lost == 0, r.examples["lost"][:10]
    assert r.dup_results == 0, r.examples["dup result"][:10]
    assert r.unexpected == 0, r.examples["unexpected"][:10]
    assert r.extra_execs <= max(r.in_flight, SLOTS), (r.extra_execs, r.in_flight)
    # woken, the old leader found itself deposed and stopped for a restart as standby
    assert tk.old_exit == EX_DEPOSED, tk.old_log[-3000:]
    assert "stopping (restarted, this distributor stands by)" in tk.old_log, tk.old_log[-3000:]


def test_the_cli_reads_a_shared_journal(tmp_path: Path, pg_url: str) -> None:
    """`clawd results` and `clawd dlq list` read the PostgreSQL journal the config names."""
    import json

    from clawd.envelope import Task, result_doc
    from clawd.journal import Journal
    from tests.conftest import run_cli

    j = Journal(pg_url)
    task = Task(id="j1", type="compute", lane="normal", input="1", submitted_at=1.0)
    j.add(task, None)
    doc = result_doc(task, "failed", attempts=2, error="boom", finished_at=5.0)
    j.finish("j1", "failed", doc, [])
    j.dead_letter("j1", "normal", "boom", {"id": "j1", "reason": "boom", "lane": "normal"})
    j.commit()
    j.close()
    cfg = tmp_path / "clawd.toml"
    cfg.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n\n[journal]\nurl = "{pg_url}"\n')
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parent.parent)}
    out = run_cli("-c", str(cfg), "results", "j1", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["error"] == "boom"
    out = run_cli("-c", str(cfg), "dlq", "list", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert "j1" in out.stdout


def test_a_leader_stopped_cleanly_hands_over_at_once(tmp_path: Path, pg_url: str) -> None:
    r, tk = run_failover("term", 150, workdir=tmp_path, journal_url=pg_url)
    assert r.acked == 150 and r.lost == 0, r.examples["lost"][:10]
    assert r.dup_results == 0 and r.unexpected == 0
    assert r.extra_execs <= max(r.in_flight, SLOTS), (r.extra_execs, r.in_flight)
    assert tk.old_exit == 0, tk.old_log[-3000:]


def test_a_journal_url_with_a_password_is_refused_without_echoing_it(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    cfg = tmp_path / "clawd.toml"
    cfg.write_text('[journal]\nurl = "postgresql://clawd:hunter2@db/clawd"\n')
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parent.parent)}
    out = run_cli("-c", str(cfg), "config", "show", env=env)
    assert out.returncode == 78
    assert "[journal] url" in out.stderr and "passfile" in out.stderr
    assert "hunter2" not in out.stderr + out.stdout
