"""``clawd task ID`` against a real daemon: running, queued, finished, unknown, and the
journal when no distributor answers."""

from __future__ import annotations

import json
import signal

from tests.conftest import pub, run_cli
from tests.listener import Listener


def test_clawd_task_says_where_a_task_is(broker, make_config, start_clawd, clawd_env):
    cfg = str(make_config('[worker]\nid = "tw"\ndrain_timeout = 0.2\n'))
    d = start_clawd("-c", cfg, "run")
    seen = Listener(broker.url, "clawd/progress/+")
    try:
        out = run_cli("-c", cfg, "task", "nope", env=clawd_env)
        assert out.returncode == 1
        assert out.stderr.strip() == (
            "clawd: no task with id 'nope' (neither open nor finished in the journal)"
        )
        assert out.stdout == ""

        pub(broker, "clawd/tasks/normal", json.dumps({"id": "s1", "type": "sleep", "input": 30}))
        seen.wait(lambda m: m.topic == "clawd/progress/s1")
        out = run_cli("-c", cfg, "task", "s1", env=clawd_env)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("s1: running on tw since ")
        doc = json.loads(run_cli("-c", cfg, "task", "s1", "--json", env=clawd_env).stdout)
        assert doc["state"] == "running" and doc["worker"] == "tw" and doc["attempt"] == 1

        # a capability nobody has: it waits in its lane
        pub(
            broker,
            "clawd/tasks/normal",
            json.dumps({"id": "q1", "type": "compute", "input": "1", "requires": ["gpu"]}),
        )
        out = run_cli("-c", cfg, "task", "q1", "--json", env=clawd_env)
        assert json.loads(out.stdout)["state"] == "queued", out.stderr

        done = run_cli("-c", cfg, "submit", "compute", "2+3", "--id", "c1", "--wait", env=clawd_env)
        assert done.returncode == 0, done.stderr
        out = run_cli("-c", cfg, "task", "c1", env=clawd_env)
        assert out.returncode == 0, out.stderr
        first, second = out.stdout.splitlines()
        assert first.startswith("c1: ok after 1 attempt(s) on tw, finished ")
        assert second == "5"

        d.stop(signal.SIGTERM)
        # no distributor: the journal answers what it knows
        out = run_cli("-c", cfg, "task", "c1", "--json", "--timeout", "1", env=clawd_env)
        doc = json.loads(out.stdout)
        assert doc["state"] == "done" and doc["source"] == "journal"
        assert doc["result"]["result"] == 5
        out = run_cli("-c", cfg, "task", "q1", "--timeout", "1", env=clawd_env)
        assert (
            out.stdout.strip() == "q1: open (queued, delayed or running: no distributor answered)"
        )
        out = run_cli("-c", cfg, "task", "nope", "--timeout", "1", env=clawd_env)
        assert out.returncode == 1 and "no task with id 'nope'" in out.stderr
    finally:
        seen.close()
