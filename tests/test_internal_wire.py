"""Messages on clawd's internal and status topics that do not decode: a real daemon, the
real mosquitto_pub. Each is answered on clawd/errors, and clawd goes on working."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import pub, run_cli
from tests.listener import Listener

BAD = [
    # (topic, payload, retained, what the error names)
    ("clawd/_/done/w1", "[]", False, "unreadable worker report"),
    ("clawd/workers/ghost", "1", False, "unreadable worker status"),
    ("clawd/workers/ghost2", '{"state": "online", "capacity": -3}', True, "worker status"),
    ("clawd/_/control", '"x"', False, "unreadable control command"),
    ("clawd/_/control", '{"cmd": "reboot"}', False, "unknown control command 'reboot'"),
    ("clawd/progress/t1", "\xff", False, "unreadable progress report"),
]


def test_bad_internal_messages_are_reported_and_clawd_keeps_running(
    broker, make_config, start_clawd, clawd_env
):
    cfg = make_config('[worker]\nid = "wire-w"\n')
    d = start_clawd("-c", str(cfg), "run")
    errors = Listener(broker.url, "clawd/errors", "clawd/metrics")
    try:
        for topic, payload, retained, _ in BAD:
            pub(broker, topic, payload, *(["-r"] if retained else []))
        errs = [
            json.loads(m.payload)
            for m in errors.wait(lambda m: m.topic == "clawd/errors", count=len(BAD))
        ]
        for (topic, payload, _, what), err in zip(BAD, errs, strict=True):
            assert err["topic"] == topic and what in err["error"], err
            assert err["payload_excerpt"] == payload
            assert set(err) == {"error", "topic", "payload_excerpt"}
        # a bad retained status is reported, not obeyed: no worker "ghost2" appears
        [snap] = errors.json("clawd/metrics")
        assert "ghost2" not in snap["workers"] and "ghost" not in snap["workers"]
        out = run_cli("-c", str(cfg), "submit", "compute", "6*7", "--wait", env=clawd_env)
        assert out.returncode == 0 and out.stdout.strip() == "42", out.stderr
        assert d.proc.poll() is None
        assert "Traceback" not in d.output()
    finally:
        errors.close()


def test_a_bad_retained_status_is_reported_again_after_a_restart_not_obeyed(
    broker, make_config, start_clawd, clawd_env
):
    cfg = make_config('[worker]\nid = "wire-w"\n')
    subprocess.run(
        ["mosquitto_pub", *broker.args, "-q", "1", "-r", "-t", "clawd/workers/w1", "-m", "1"],
        check=True,
        timeout=10,
    )
    errors = Listener(broker.url, "clawd/errors")
    try:
        d = start_clawd("-c", str(cfg), "run")
        [err] = errors.json("clawd/errors")
        assert err["topic"] == "clawd/workers/w1" and "worker status" in err["error"]
        out = run_cli("-c", str(cfg), "submit", "compute", "1+1", "--wait", env=clawd_env)
        assert out.returncode == 0 and out.stdout.strip() == "2", out.stderr
        assert d.proc.poll() is None
    finally:
        errors.close()
