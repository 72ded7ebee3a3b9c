"""The bad-input catalogue: every entry rejected with one clear error, nothing else harmed.

The same list runs against parse_submission (unit) and through a real `clawd run`,
published with the real mosquitto_pub; docs/security.md carries it as a table.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clawd.envelope import ID_PATTERN, Envelope, Rejected, encode, parse_submission
from tests.conftest import ROOT, Broker, lines, sub

LANES = {"high", "normal", "low"}
LIMIT = 256 * 1024


class Bad(NamedTuple):
    name: str
    topic: str  # after the "clawd/" prefix
    payload: bytes
    phrase: str  # what the error on clawd/errors must say


def _env(**fields: Any) -> bytes:
    return json.dumps({"type": "compute", "input": "1+1", **fields}).encode()


def _nested(depth: int) -> bytes:
    return b'{"type": "echo", "input": ' + b"[" * depth + b"]" * depth + b"}"


BAD_IDS = {
    "slash": "a/b",
    "plus": "a+b",
    "hash": "a#b",
    "NUL": "a\x00b",
    "TAB": "a\tb",
    "U+0085": "a\x85b",
    "$SYS": "$SYS",
    "129 chars": "x" * 129,
    "empty": "",
    "space": "a b",
}

CATALOGUE: list[Bad] = [
    Bad("malformed JSON", "tasks/normal", b'{"type": "compute", "input": ', "invalid JSON"),
    Bad("not an object on a lane topic", "tasks/normal", b"2+2", "must be a JSON object"),
    Bad("JSON array on a lane topic", "tasks/normal", b"[1, 2]", "must be a JSON object"),
    Bad("trailing garbage", "tasks/normal", _env() + b" x", "trailing characters"),
    Bad("NaN", "tasks/normal", b'{"type": "compute", "input": NaN}', "NaN and Infinity"),
    Bad("Infinity", "tasks/normal", b'{"type": "compute", "input": -Infinity}', "NaN and Infinity"),
    Bad(
        "number out of range",
        "tasks/normal",
        b'{"type": "compute", "input": 1e999}',
        "out of range",
    ),
    Bad(
        "duplicate key",
        "tasks/normal",
        b'{"type": "compute", "type": "echo", "input": 1}',
        'field "type" appears more than once',
    ),
    Bad(
        "duplicate key spelt with \\u escapes",
        "tasks/normal",
        b'{"type": "compute", "input": 1, "typ\\u0065": "echo"}',
        'field "type" appears more than once',
    ),
    Bad(
        "non-UTF-8 bytes (envelope)",
        "tasks/normal",
        b'{"type": "compute", "input": "\xff\xfe"}',
        "not valid UTF-8 (byte 30)",
    ),
    Bad(
        "non-UTF-8 bytes (raw input)", "tasks/normal/compute", b"1+\xc3", "not valid UTF-8 (byte 2)"
    ),
    Bad(
        "lone surrogate \\ud800",
        "tasks/normal",
        b'{"type": "compute", "input": "\\ud800"}',
        "unpaired UTF-16 surrogate",
    ),
    Bad(
        "lone surrogate \\udc00",
        "tasks/normal",
        b'{"type": "compute", "input": "\\udc00x"}',
        "unpaired UTF-16 surrogate",
    ),
    Bad("10 000-deep nesting (envelope)", "tasks/normal", _nested(10_000), "nested too deeply"),
    Bad(
        "10 000-deep nesting (raw input)",
        "tasks/normal/echo",
        b"[" * 10_000 + b"]" * 10_000,
        "nested too deeply",
    ),
    Bad("payload over the limit", "tasks/normal/compute", b"1" * (LIMIT + 1), "over the limit"),
    Bad("unknown field", "tasks/normal", _env(inptu=1), 'unknown field "inptu"'),
    Bad("type: number", "tasks/normal", b'{"type": 5, "input": 1}', "`$.type`"),
    Bad("type: missing", "tasks/normal", b'{"input": 1}', 'missing "type"'),
    Bad("type: invalid characters", "tasks/normal", _env(type="a/b"), "invalid type"),
    Bad("type: unknown", "tasks/normal", _env(type="nope"), "unknown task type 'nope'"),
    Bad("type: unknown (topic)", "tasks/normal/nope", b"1", "unknown task type 'nope'"),
    Bad(
        "type: envelope and topic disagree",
        "tasks/normal/compute",
        _env(type="echo"),
        "does not match topic type",
    ),
    Bad("id: number", "tasks/normal", _env(id=5), "`$.id`"),
    *(Bad(f"id: {k}", "tasks/normal", _env(id=v), "invalid id") for k, v in BAD_IDS.items()),
    Bad("lane: unknown (topic)", "tasks/nolane/compute", b"1+1", "unknown lane 'nolane'"),
    Bad(
        "lane: envelope and topic disagree",
        "tasks/normal",
        _env(lane="high"),
        "does not match topic lane",
    ),
    Bad("lane: number", "tasks/normal", _env(lane=1), "`$.lane`"),
    Bad("input and task both given", "tasks/normal", _env(task="2"), 'either "input"'),
    Bad("requires: string", "tasks/normal", _env(requires="gpu"), "`$.requires`"),
    Bad("requires: invalid name", "tasks/normal", _env(requires=["g/pu"]), "invalid capability"),
    Bad("timeout: string", "tasks/normal", _env(timeout="10"), "`$.timeout`"),
    Bad("timeout: negative", "tasks/normal", _env(timeout=-1), "`$.timeout`"),
    Bad("timeout: boolean", "tasks/normal", _env(timeout=True), "`$.timeout`"),
    Bad("max_attempts: float", "tasks/normal", _env(max_attempts=1.5), "`$.max_attempts`"),
    Bad("max_attempts: 0", "tasks/normal", _env(max_attempts=0), "`$.max_attempts`"),
    Bad("max_attempts: 10^6", "tasks/normal", _env(max_attempts=10**6), "`$.max_attempts`"),
    Bad("meta: array", "tasks/normal", _env(meta=[1]), "`$.meta`"),
    Bad("ttl: zero", "tasks/normal", _env(ttl=0), "`$.ttl`"),
    Bad("cost: negative", "tasks/normal", _env(cost=-1), "`$.cost`"),
    Bad("topic: too deep", "tasks/normal/compute/extra", b"1", "topic must be"),
]


def _levels(topic: str) -> list[str]:
    return topic.split("/")


# -- unit: parse_submission -----------------------------------------------------------


@pytest.mark.parametrize("bad", CATALOGUE, ids=[b.name for b in CATALOGUE])
def test_parse_submission_rejects(bad: Bad) -> None:
    if bad.phrase.startswith("unknown task type"):
        # task types are known to the distributor, not the parser: it parses fine
        task = parse_submission(_levels(bad.topic), bad.payload, lanes=LANES, max_payload=LIMIT)
        assert task.type == "nope"
        return
    with pytest.raises(Rejected) as info:
        parse_submission(_levels(bad.topic), bad.payload, lanes=LANES, max_payload=LIMIT)
    assert bad.phrase in info.value.error
    # a rejection never carries an id that could not be a topic level
    assert info.value.task_id is None or ID_PATTERN.match(info.value.task_id)


def test_duplicate_check_leaves_inner_objects_and_escaped_text_alone() -> None:
    ok = [
        b'{"type": "echo", "input": {"a": 1, "b": {"a": 2}}}',
        b'{"type": "echo", "input": "\\"type\\": \\"type\\""}',
        b'{"type": "echo", "input": "caf\\u00e9", "meta": {"type": "x"}}',
        b'{"type": "echo", "input": "\\ud83d\\ude00"}',
    ]
    for payload in ok:
        parse_submission(["tasks", "normal"], payload, lanes=LANES, max_payload=LIMIT)


def test_catalogue_is_in_the_docs() -> None:
    doc = (ROOT / "docs" / "security.md").read_text()
    missing = [b.name for b in CATALOGUE if f"| {b.name} |" not in doc]
    assert not missing, f"docs/security.md lacks rows for: {missing}"


# -- fuzzing --------------------------------------------------------------------------

TOPICS = st.sampled_from(
    [
        ["tasks", "normal"],
        ["tasks", "normal", "compute"],
        ["tasks", "nolane"],
        ["tasks", "low", "x"],
    ]
)
# every code point, surrogates included
TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)
FIELDS = st.sampled_from(list(Envelope.__struct_fields__))
ENVELOPES = st.dictionaries(FIELDS | TEXT, JSON, max_size=8)


def _check(levels: list[str], payload: bytes) -> None:
    try:
        task = parse_submission(levels, payload, lanes=LANES, max_payload=LIMIT)
    except Rejected as exc:
        assert exc.error
        return
    assert ID_PATTERN.match(task.id)
    assert task.lane in LANES
    encode(task)  # what was accepted can be journalled and dispatched


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TOPICS, st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(levels: list[str], payload: bytes) -> None:
    _check(levels, payload)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TOPICS, ENVELOPES, st.booleans())
def test_fuzz_arbitrary_json_objects(levels: list[str], env: dict[str, Any], ascii: bool) -> None:
    try:
        payload = json.dumps(env, ensure_ascii=ascii).encode("utf-8", "surrogatepass")
    except ValueError:
        return
    _check(levels, payload)


@settings(max_examples=500, deadline=None)
@given(st.fixed_dictionaries({"type": st.just("compute")}, optional={"id": TEXT, "input": JSON}))
def test_fuzz_ids(env: dict[str, Any]) -> None:
    _check(["tasks", "normal"], json.dumps(env).encode())


# -- end to end: a real daemon, the real mosquitto_pub --------------------------------


@pytest.fixture
def logged_broker(tmp_path: Path) -> Any:
    # the Broker fixture keeps mosquitto as this user, so it can write its log here
    b = Broker(tmp_path / "mosquitto", "log_type all\n")
    b.start()
    yield b
    b.stop()


def _publish(broker: Broker, topic: str, payload: bytes, path: Path) -> None:
    path.write_bytes(payload)
    subprocess.run(
        ["mosquitto_pub", *broker.args, "-q", "1", "-t", f"clawd/{topic}", "-f", str(path)],
        check=True,
        timeout=10,
    )


def test_catalogue_end_to_end(tmp_path, logged_broker, start_clawd):
    b = logged_broker
    cfg = tmp_path / "clawd.toml"
    cfg.write_text(
        f'[broker]\nurl = "{b.url}"\n\n[daemon]\nstate_dir = "{tmp_path / "state"}"\n\n'
        '[worker]\nid = "bad-input-w"\n'
    )
    d = start_clawd("-c", str(cfg), "run")
    status = sub(b, "clawd/workers/bad-input-w", 1)
    (before,) = lines(status)
    errors = sub(b, "clawd/errors", len(CATALOGUE), 60)
    good = {f"good-{i}": i for i in range(0, len(CATALOGUE), 4)}
    results = sub(b, "clawd/results/+", len(good), 60, "-v")
    payload_file = tmp_path / "payload"
    for i, bad in enumerate(CATALOGUE):
        if f"good-{i}" in good:
            task = {"id": f"good-{i}", "type": "compute", "input": f"{i}+1"}
            _publish(b, "tasks/normal", json.dumps(task).encode(), payload_file)
        _publish(b, bad.topic, bad.payload, payload_file)
    errs = lines(errors)
    assert len(errs) == len(CATALOGUE), [e["error"] for e in errs]
    for bad, err in zip(CATALOGUE, errs, strict=True):
        assert bad.phrase in err["error"], (bad.name, err)
        assert err["topic"] == f"clawd/{bad.topic}"
        assert len(err["payload_excerpt"]) <= 210
    out, _ = results.communicate(timeout=60)
    docs = {
        t.rsplit("/", 1)[1]: json.loads(p) for t, p in (x.split(" ", 1) for x in out.splitlines())
    }
    assert {k: v["result"] for k, v in docs.items()} == {k: i + 1 for k, i in good.items()}
    assert all(v["status"] == "ok" and v["attempts"] == 1 for v in docs.values())
    # no second error for anything: the next error is the one for a last bad message
    extra = sub(b, "clawd/errors", 1, 30)
    _publish(b, "tasks/normal", b"sentinel", payload_file)
    assert [e["payload_excerpt"] for e in lines(extra)] == ["sentinel"]
    # the daemon never went down or restarted, and the broker never dropped its clients
    assert d.proc.poll() is None
    (after,) = lines(sub(b, "clawd/workers/bad-input-w", 1))
    assert after["state"] == "online" and after.get("session") == before.get("session")
    log = (b.dir / "mosquitto.log").read_text(errors="replace")
    clawd_clients = re.findall(r"as (clawd-(?:distributor|worker)-\S+)", log)
    assert sorted(set(clawd_clients)) == ["clawd-distributor-clawd", "clawd-worker-bad-input-w"]
    assert len(clawd_clients) == 2, clawd_clients  # each connected exactly once
    dropped = [
        line
        for line in log.splitlines()
        if re.search(r"clawd-(distributor|worker)-\S+ (disconnected|closed its connection)", line)
    ]
    assert dropped == []
    assert "Traceback" not in d.output()
