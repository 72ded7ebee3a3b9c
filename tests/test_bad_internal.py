"""Bad input on the internal and status topics: every topic clawd reads besides the task
lanes. Nothing here may stop, restart or wedge the daemon; each message that does not
read is reported once on <prefix>/errors with its topic, and no task is lost.

Published with the real mosquitto_pub to a running `clawd run` (distributor and worker).
docs/security.md carries the catalogue as a table.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT, Broker, lines, sub

WORKER = "w-real"


class Bad(NamedTuple):
    name: str
    topic: str  # after the "clawd/" prefix
    payload: bytes
    retained: bool = False


#: payloads that are no message of any topic
GARBAGE = {
    "non-JSON": b"not json",
    "array": b"[]",
    "number": b"1",
    "string": b'"x"',
    "null": b"null",
    "huge number": b"1e999",
    "huge integer": b"1" * 400,
    "10 000-deep nesting": b"[" * 10_000 + b"]" * 10_000,
    "non-UTF-8": b'{"x": "\xff\xfe"}',
    "300 KB of text": b"x" * 300_000,
}

#: every topic clawd subscribes to or reads, other than the task lanes
TOPICS = {
    "report of an unknown worker": "_/done/ghost",
    "report of the running worker": f"_/done/{WORKER}",
    "status of an unknown worker": "workers/ghost",
    "status of the running worker": f"workers/{WORKER}",
    "control": "_/control",
    "progress": "progress/some-task",
    "grant": f"_/w/{WORKER}/tasks",
    "metrics": "metrics",
}

#: JSON objects of the right kind with fields of the wrong type or shape
WRONG_SHAPE = [
    Bad("report: outcomes a number", "_/done/ghost", b'{"outcomes": 5}'),
    Bad("report: running entry too short", "_/done/ghost", b'{"running": [["x"]]}'),
    Bad("report: running entry too long", "_/done/ghost", b'{"running": [["x", 1, 2]]}'),
    Bad("report: outcome without attempt", "_/done/ghost", b'{"outcomes": [{"id": "x"}]}'),
    Bad("report: outcome a list", f"_/done/{WORKER}", b'{"outcomes": [[1]]}'),
    Bad("report: handback a number list", f"_/done/{WORKER}", b'{"handback": [1]}'),
    Bad("status: capacity text", "workers/ghost", b'{"state": "online", "capacity": "x"}'),
    Bad("status: handlers a number", "workers/ghost", b'{"state": "online", "handlers": 5}'),
    Bad("control: unknown command", "_/control", b'{"cmd": "nope"}'),
    Bad("control: no command", "_/control", b"{}"),
    Bad("control: replay ids a number", "_/control", b'{"cmd": "replay", "ids": 5}'),
    Bad("grant: tasks a number", f"_/w/{WORKER}/tasks", b'{"tasks": 5}'),
    Bad("grant: task without type", f"_/w/{WORKER}/tasks", b'{"tasks": [{"id": "x"}]}'),
    Bad("grant: no tasks", f"_/w/{WORKER}/tasks", b"{}"),
    Bad("metrics: lanes a number", "metrics", b'{"lanes": 5}'),
    Bad("metrics: lane a number", "metrics", b'{"lanes": {"normal": 5}}'),
]

#: retained before clawd starts: read at subscription time, reported, never obeyed
RETAINED = [
    Bad("retained status: array", "workers/ghost-r1", b"[]", True),
    Bad(
        "retained status: capacity text",
        "workers/ghost-r2",
        b'{"state": "online", "capacity": "x"}',
        True,
    ),
    Bad("retained report: number", "_/done/ghost-r", b"1", True),
    Bad("retained control: string", "_/control", b'"replay"', True),
]

CATALOGUE: list[Bad] = [
    *(
        Bad(f"{t}: {g}", topic, payload)
        for t, topic in TOPICS.items()
        for g, payload in GARBAGE.items()
    ),
    *WRONG_SHAPE,
]


def _publish(broker: Broker, bad: Bad, path: Path) -> None:
    path.write_bytes(bad.payload)
    retain = ["-r"] if bad.retained else []
    subprocess.run(
        [
            "mosquitto_pub",
            *broker.args,
            "-q",
            "1",
            "-t",
            f"clawd/{bad.topic}",
            "-f",
            str(path),
            *retain,
        ],
        check=True,
        timeout=10,
    )


def _config(tmp_path: Path, b: Broker) -> Path:
    cfg = tmp_path / "clawd.toml"
    # autoscaling limits: the worker then reads clawd/metrics too
    cfg.write_text(
        f'[broker]\nurl = "{b.url}"\n\n[daemon]\nstate_dir = "{tmp_path / "state"}"\n\n'
        f'[worker]\nid = "{WORKER}"\nmin_concurrency = 2\nmax_concurrency = 4\n'
    )
    return cfg


@pytest.fixture
def logged_broker(tmp_path: Path) -> Any:
    b = Broker(tmp_path / "mosquitto", "log_type all\n")
    b.start()
    yield b
    b.stop()


def test_catalogue_is_in_the_docs() -> None:
    doc = (ROOT / "docs" / "security.md").read_text()
    rows = [*TOPICS, *GARBAGE, *(b.name for b in WRONG_SHAPE + RETAINED)]
    missing = [r for r in rows if f"| {r} |" not in doc]
    assert not missing, f"docs/security.md lacks rows for: {missing}"


def test_internal_catalogue_end_to_end(tmp_path, logged_broker, start_clawd):
    b = logged_broker
    payload_file = tmp_path / "payload"
    errors = sub(b, "clawd/errors", len(RETAINED) + len(CATALOGUE) + 2, 90)
    for bad in RETAINED:
        _publish(b, bad, payload_file)
    d = start_clawd("-c", str(_config(tmp_path, b)), "run")
    status = sub(b, f"clawd/workers/{WORKER}", 1)
    (before,) = lines(status)
    good = {f"good-{i}": i for i in range(0, len(CATALOGUE), 5)}
    results = sub(b, "clawd/results/+", len(good), 90, "-v")
    for i, bad in enumerate(CATALOGUE):
        if f"good-{i}" in good:
            task = {"id": f"good-{i}", "type": "compute", "input": f"{i}+1"}
            _publish(b, Bad("", "tasks/normal", json.dumps(task).encode()), payload_file)
        _publish(b, bad, payload_file)
    # one last bad message to each of the distributor and the worker: had anything above
    # made a second error (or none), these would not be the ones the count ends on
    sentinels = [
        Bad("", "_/control", b'{"cmd": "sentinel"}'),
        Bad("", f"_/w/{WORKER}/tasks", b"sentinel"),
    ]
    for bad in sentinels:
        _publish(b, bad, payload_file)
    errs = lines(errors)
    expected = Counter(f"clawd/{x.topic}" for x in [*RETAINED, *CATALOGUE, *sentinels])
    assert Counter(e["topic"] for e in errs) == expected
    assert all(e["error"] and len(e["payload_excerpt"]) <= 210 for e in errs)
    assert any("sentinel" in e["error"] for e in errs)  # the distributor's: unknown command
    assert any(e["payload_excerpt"] == "sentinel" for e in errs)  # the worker's
    # nothing lost: every good task has its result, first attempt
    out, _ = results.communicate(timeout=90)
    docs = {
        t.rsplit("/", 1)[1]: json.loads(p) for t, p in (x.split(" ", 1) for x in out.splitlines())
    }
    assert {k: v["result"] for k, v in docs.items()} == {k: i + 1 for k, i in good.items()}
    assert all(v["status"] == "ok" for v in docs.values())
    # the daemon never went down, restarted or lost its broker connection
    assert d.proc.poll() is None
    (after,) = lines(sub(b, f"clawd/workers/{WORKER}", 1))
    assert after["state"] == "online" and after["session"] == before["session"]
    log = (b.dir / "mosquitto.log").read_text(errors="replace")
    clawd_clients = re.findall(r"as (clawd-(?:distributor|worker)-\S+)", log)
    assert len(clawd_clients) == 2, clawd_clients  # each connected exactly once
    assert "Traceback" not in d.output()


# -- fuzzing through the real daemon ------------------------------------------------------

TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=20)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    [
        "outcomes",
        "running",
        "handback",
        "id",
        "attempt",
        "status",
        "state",
        "capacity",
        "handlers",
        "session",
        "cmd",
        "ids",
        "tasks",
        "lanes",
        "depth",
        "type",
        "input",
    ]
)
OBJECTS = st.dictionaries(FIELDS | TEXT, JSON, max_size=5)


def _encode(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8", "surrogatepass")


PAYLOADS = st.binary(max_size=200) | JSON.map(_encode) | OBJECTS.map(_encode)


def test_fuzz_internal_topics_end_to_end(tmp_path, broker, start_clawd):
    """Arbitrary bytes, JSON and field soup on every internal topic of one running daemon;
    afterwards it is alive and runs a task as before."""
    d = start_clawd("-c", str(_config(tmp_path, broker)), "run")
    payload_file = tmp_path / "payload"
    sent: list[str] = []

    @settings(
        max_examples=int(os.environ.get("CLAWD_FUZZ_EXAMPLES", "200")),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(st.sampled_from(sorted(TOPICS.values())), PAYLOADS, st.booleans())
    def publish(topic: str, payload: bytes, retained: bool) -> None:
        # the running worker's own retained status stays its own: overwriting it is the
        # ACL's to forbid, and a fuzzer that did it would only test the broker
        retained = retained and topic != f"workers/{WORKER}"
        _publish(broker, Bad("", topic, payload, retained), payload_file)
        sent.append(topic)

    publish()
    assert len(sent) >= 100 or "CLAWD_FUZZ_EXAMPLES" in os.environ
    result = sub(broker, "clawd/results/after-fuzz", 1)
    _publish(
        broker,
        Bad("", "tasks/normal", b'{"id": "after-fuzz", "type": "compute", "input": "6*7"}'),
        payload_file,
    )
    got = lines(result)
    assert got, d.output()[-3000:]
    (doc,) = got
    assert doc["status"] == "ok" and doc["result"] == 42
    assert d.proc.poll() is None
