"""``[journal] retention``: finished tasks leave the journal; dead letters stay."""

from __future__ import annotations

import json

from tests.conftest import lines, pub, run_cli, sub, wait_until


def test_a_pruned_task_is_unknown_and_its_id_runs_again(
    broker, make_config, start_clawd, clawd_env
):
    cfg = make_config('[journal]\nretention = "1s"\n')
    start_clawd("-c", str(cfg), "run")
    dead = sub(broker, "clawd/dead/normal", 1)
    pub(
        broker, "clawd/tasks/normal", json.dumps({"id": "doomed", "type": "compute", "task": "1/0"})
    )
    assert lines(dead)[0]["id"] == "doomed"
    first = sub(broker, "clawd/results/job-1", 1)
    pub(broker, "clawd/tasks/normal", json.dumps({"id": "job-1", "type": "compute", "task": "2+2"}))
    assert lines(first)[0]["result"] == 4

    def pruned():
        out = run_cli("-c", str(cfg), "results", "job-1", env=clawd_env)
        return out if out.returncode == 1 else None

    out = wait_until(pruned, timeout=20, what="job-1 to be pruned")
    assert out.stdout == ""
    assert "job-1: unknown" in out.stderr and "1s ago and pruned" in out.stderr
    assert "Traceback" not in out.stderr
    # the dead letter finished first, and is still there: an operator's to replay or purge
    kept = run_cli("-c", str(cfg), "results", "doomed", env=clawd_env)
    assert kept.returncode == 0 and json.loads(kept.stdout)["status"] == "failed"
    letters = run_cli("-c", str(cfg), "dlq", "list", env=clawd_env)
    assert "doomed" in letters.stdout, letters.stdout + letters.stderr
    # the id is forgotten: submitted again, it runs again instead of repeating the old result
    again = sub(broker, "clawd/results/job-1", 1)
    pub(broker, "clawd/tasks/normal", json.dumps({"id": "job-1", "type": "compute", "task": "3+3"}))
    assert lines(again)[0]["result"] == 6


def test_within_the_retention_an_id_is_deduplicated(broker, make_config, start_clawd, clawd_env):
    cfg = make_config()  # the default retention: a week
    start_clawd("-c", str(cfg), "run")
    first = sub(broker, "clawd/results/job-2", 1)
    pub(broker, "clawd/tasks/normal", json.dumps({"id": "job-2", "type": "compute", "task": "2+2"}))
    assert lines(first)[0]["result"] == 4
    again = sub(broker, "clawd/results/job-2", 1)
    pub(broker, "clawd/tasks/normal", json.dumps({"id": "job-2", "type": "compute", "task": "3+3"}))
    assert lines(again)[0]["result"] == 4  # the stored outcome stands
    missing = run_cli("-c", str(cfg), "results", "job-2", "nope", env=clawd_env)
    assert missing.returncode == 1 and json.loads(missing.stdout)["result"] == 4
    assert "nope: unknown: never submitted here, or finished more than 7d ago" in missing.stderr
