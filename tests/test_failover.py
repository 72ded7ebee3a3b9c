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
    assert r.acked == 200
    assert r.lost == 0, r.examples["lost"][:10]
    assert r.dup_results == 0, r.examples["dup result"][:10]
    assert r.unexpected == 0, r.examples["unexpected"][:10]
    # duplicates only of what ran when the leader died (its workers' slots at most)
    assert r.extra_execs <= max(r.in_flight, SLOTS), (r.extra_execs, r.in_flight)


def test_a_stalled_leader_is_replaced_and_writes_nothing_when_it_wakes(
    tmp_path: Path, pg_url: str
) -> None:
    r, tk = run_failover("stall", 200, workdir=tmp_path, journal_url=pg_url, lock_timeout=2.0)
    assert r.acked == 200
    assert r.lost == 0, r.examples["lost"][:10]
    assert r.dup_results == 0, r.examples["dup result"][:10]
    assert r.unexpected == 0, r.examples["unexpected"][:10]
    assert r.extra_execs <= max(r.in_flight, SLOTS), (r.extra_execs, r.in_flight)
    # woken, the old leader found itself deposed and stopped for a restart as standby
    assert tk.old_exit == EX_DEPOSED, tk.old_log[-3000:]
    assert "deposed" in tk.old_log or "lost its lock session" in tk.old_log, tk.old_log[-3000:]
