"""Load-aware routing sees live load: two real workers, least_loaded, slow tasks."""

from __future__ import annotations

import json
import os
from collections import Counter

from tests.conftest import pub
from tests.listener import Listener

GATE = """
import os

from clawd import hookimpl


def gate(ctx):
    # say where it runs, then block until the test writes a line into the task's fifo
    ctx.progress(0.0, os.environ["CLAWD_WORKER_ID"])
    with open(ctx.input) as f:
        return f.readline().strip()


@hookimpl
def clawd_register_handlers(register):
    register("gate", gate)
"""


def test_least_loaded_spreads_tasks_submitted_one_by_one(
    tmp_path, broker, dropins, make_config, start_clawd
):
    (dropins / "gate.py").write_text(GATE)
    cfg = make_config('[distributor]\nstrategy = "least_loaded"\n\n[worker]\nconcurrency = 4\n')
    seen = Listener(broker.url, "clawd/progress/+", "clawd/results/+", "clawd/metrics")
    fds = []
    try:
        start_clawd("-c", str(cfg), "run", env={"CLAWD_WORKER_ID": "wa"})
        start_clawd(
            "-c",
            str(cfg),
            "run",
            "--role",
            "worker",
            env={"CLAWD_WORKER_ID": "wb", "CLAWD_STATE_DIR": str(tmp_path / "state-wb")},
        )

        def both_online(m):
            if m.topic != "clawd/metrics":
                return False
            workers = json.loads(m.payload)["workers"]
            return all(workers.get(w, {}).get("online") for w in ("wa", "wb"))

        seen.wait(both_online)
        where = {}
        for i in range(4):
            fifo = tmp_path / f"gate-{i}"
            os.mkfifo(fifo)
            task = {"id": f"slow-{i}", "type": "gate", "input": str(fifo)}
            pub(broker, "clawd/tasks/normal", json.dumps(task))
            # wait until it runs before submitting the next one
            [started] = seen.json(f"clawd/progress/slow-{i}")
            where[task["id"]] = started["message"]
        assert Counter(where.values()) == {"wa": 2, "wb": 2}, where
        for i in range(4):
            fd = os.open(tmp_path / f"gate-{i}", os.O_RDWR)
            fds.append(fd)
            os.write(fd, f"done-{i}\n".encode())
        for i in range(4):
            [doc] = seen.json(f"clawd/results/slow-{i}")
            assert doc["status"] == "ok" and doc["result"] == f"done-{i}"
            assert doc["worker"] == where[f"slow-{i}"]
    finally:
        for fd in fds:
            os.close(fd)
        seen.close()
