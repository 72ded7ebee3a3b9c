"""A worker that left is forgotten after [distributor] forget_after: a real daemon, a
real worker process stopped, and its retained status cleared on the broker."""

from __future__ import annotations

import json
import signal
import subprocess

from tests.listener import Listener


def test_a_stopped_worker_is_forgotten_and_its_retained_status_cleared(
    tmp_path, broker, make_config, start_clawd
):
    cfg = make_config('[distributor]\nforget_after = 1.0\n\n[worker]\nid = "stays"\n')
    seen = Listener(broker.url, "clawd/workers/+", "clawd/metrics")
    try:
        start_clawd("-c", str(cfg), "run")
        leaver = start_clawd(
            "-c",
            str(cfg),
            "run",
            "--role",
            "worker",
            "--worker-id",
            "leaves",
            env={"CLAWD_STATE_DIR": str(tmp_path / "state-2")},
        )
        seen.wait(
            lambda m: (
                m.topic == "clawd/metrics"
                and json.loads(m.payload)["workers"].get("leaves", {}).get("online", False)
            )
        )
        assert leaver.stop(signal.SIGTERM) == 0
        seen.wait(lambda m: m.topic == "clawd/workers/leaves" and m.payload == b"")
        # gone from the broker's retained state and from the distributor's snapshot
        out = subprocess.run(
            [
                "mosquitto_sub",
                *broker.args,
                "-t",
                "clawd/workers/+",
                "--retained-only",
                "-W",
                "1",
                "-F",
                "%t",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert out.stdout.split() == ["clawd/workers/stays"]
        seen.seen.clear()
        snap = seen.wait(lambda m: m.topic == "clawd/metrics")[0]
        assert list(json.loads(snap.payload)["workers"]) == ["stays"]
    finally:
        seen.close()
