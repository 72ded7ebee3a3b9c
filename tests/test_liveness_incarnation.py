"""Liveness that depends neither on retained delivery nor on Last Will timing alone, on a
real mosquitto: a replayed Last Will of an earlier run does not take a live worker down,
and a distributor that gets no retained status finds workers from their heartbeats."""

from __future__ import annotations

import json
import signal
import subprocess

from tests.conftest import pub
from tests.listener import Listener


def _online(m, worker: str) -> bool:  # type: ignore[no-untyped-def]
    if m.topic != "clawd/metrics":
        return False
    return bool(json.loads(m.payload)["workers"].get(worker, {}).get("online", False))


def test_a_replayed_old_will_does_not_mark_a_live_worker_lost(
    tmp_path, broker, make_config, start_clawd, clawd_env
):
    cfg = str(make_config('[worker]\nid = "live"\n'))
    log = tmp_path / "exec.log"
    seen = Listener(broker.url, "clawd/results/+", "clawd/progress/+", "clawd/workers/+")
    try:
        d = start_clawd("-c", cfg, "run", env={"CLAWD_TEST_EXEC_LOG": str(log)})
        (status,) = seen.json("clawd/workers/live")
        assert status["state"] == "online" and status["boot"] > 0
        pub(broker, "clawd/tasks/normal", json.dumps({"id": "long", "type": "sleep", "input": 4}))
        seen.wait(lambda m: m.topic == "clawd/progress/long")  # it is running
        # what a broker replays after a restart: the Will of an earlier run of this worker
        # (an older session and boot time), and one of a worker too old to say its boot
        old = {**status, "state": "offline", "reason": "lost", "session": "0ld5e55i0n"}
        old["boot"] = status["boot"] - 3600
        pub(broker, "clawd/workers/live", json.dumps(old), "-r")
        del old["boot"]
        old["session"] = "01der"
        pub(broker, "clawd/workers/live", json.dumps(old), "-r")
        (result,) = seen.json("clawd/results/long", timeout=30)
        # not requeued, not run twice: the live worker kept it
        assert result["status"] == "ok" and result["attempts"] == 1
        assert result["worker"] == "live"
        runs = [json.loads(x) for x in log.read_text().splitlines()]
        assert [r["id"] for r in runs] == ["long"]
        # and it still gets work
        pub(broker, "clawd/tasks/normal/compute", "2+2")
        seen.wait(
            lambda m: m.topic.startswith("clawd/results/") and m.topic != "clawd/results/long"
        )
        out = d.output()
        assert "ignoring a offline status of an earlier run" in out, out
        assert "worker live lost" not in out and "restarted" not in out
    finally:
        seen.close()


def test_a_distributor_without_retained_status_finds_workers_from_heartbeats(
    tmp_path, broker, make_config, start_clawd, clawd_env
):
    # a short liveness timeout: heartbeats come every liveness_timeout / 4
    cfg = str(make_config('[distributor]\nliveness_timeout = 2.0\n\n[worker]\nid = "hb"\n'))
    seen = Listener(broker.url, "clawd/results/+", "clawd/metrics")
    try:
        worker = start_clawd(
            "-c", cfg, "run", "--role", "worker", env={"CLAWD_STATE_DIR": str(tmp_path / "w")}
        )
        dist = start_clawd("-c", cfg, "run", "--role", "distributor")
        seen.wait(lambda m: _online(m, "hb"))
        assert dist.stop(signal.SIGTERM) == 0
        # a broker that delivers no retained status to wildcard subscribers: the new
        # distributor must not learn of the worker that way
        subprocess.run(
            ["mosquitto_pub", *broker.args, "-t", "clawd/workers/hb", "-r", "-n"], check=True
        )
        dist = start_clawd("-c", cfg, "run", "--role", "distributor")
        pub(broker, "clawd/tasks/normal/compute", "6*7")
        (m,) = seen.wait(lambda m: m.topic.startswith("clawd/results/"), timeout=30)
        doc = json.loads(m.payload)
        assert doc["status"] == "ok" and doc["result"] == 42 and doc["worker"] == "hb"
        assert "worker hb online" in dist.output()
        assert worker.proc.poll() is None
    finally:
        seen.close()
