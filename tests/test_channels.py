"""clawd.channels: names, topics and message shapes of the claw.events interface."""

from __future__ import annotations

import pytest

from clawd import channels
from clawd.envelope import Rejected, encode, parse_submission

LANES = {"normal": None}


def test_channel_names() -> None:
    for ok in ("agent.leader.tasks", "a", "agent.bob-1.results", "x:y.z_w"):
        assert channels.check_channel(ok) == ok
    for bad in ("", "a..b", ".a", "a.", "a/b", "a b", "a+", "a#", "x" * 65):
        with pytest.raises(channels.ChannelError, match="invalid channel"):
            channels.check_channel(bad)


def test_a_task_keeps_its_id_and_what_was_published() -> None:
    published = {"id": 7, "task": "Calculate 2+2", "extra": [1]}
    env = channels.task_envelope("agent.a.tasks", "me", published, timestamp=12.0)
    assert env["id"] == "7"  # a number is its decimal text
    assert env["input"] == published
    assert env["meta"] == {"channel": "agent.a.tasks", "sender": "me", "timestamp": 12.0}
    task = parse_submission(
        ["tasks", "normal", "agent.a.tasks"], encode(env), lanes=LANES, max_payload=10_000
    )
    assert (task.id, task.type, task.input) == ("7", "agent.a.tasks", published)


def test_tasks_channels_are_accepted_before_a_worker_serves_them() -> None:
    def submit(type_: str) -> object:
        return parse_submission(
            ["tasks", "normal", type_], b'"x"', lanes=LANES, max_payload=100, known_types=set()
        )

    assert submit("agent.new.tasks").type == "agent.new.tasks"  # type: ignore[attr-defined]
    with pytest.raises(Rejected, match="unknown task type"):
        submit("agent.new.results")


def test_claw_message_shapes() -> None:
    env = channels.task_envelope("agent.a.tasks", "leader", {"id": "1", "task": "t"}, 5.0)
    from_pub = channels.claw_message(
        id="1", type="agent.a.tasks", lane="normal", input=env["input"], attempt=2,
        meta=env["meta"], submitted_at=6.0,
    )  # fmt: skip
    assert from_pub["payload"] == {"id": "1", "task": "t"}
    assert (from_pub["sender"], from_pub["timestamp"], from_pub["attempt"]) == ("leader", 5.0, 2)
    from_envelope = channels.claw_message(
        id="9", type="compute-sh", lane="high", input="2+2", attempt=1, meta={},
        submitted_at=6.0,
    )  # fmt: skip
    assert from_envelope["payload"] == {"id": "9", "type": "compute-sh", "input": "2+2"}
    assert (from_envelope["channel"], from_envelope["sender"]) == ("compute-sh", None)


def test_sub_lines_from_any_publisher() -> None:
    doc = channels.message("a.b", "w1", {"k": 1}, 3.0)
    assert channels.read_plain("a.b", encode(doc)) == doc
    raw = channels.read_plain("a.b", b"not json")
    assert (raw["payload"], raw["sender"]) == ("not json", None)
    env = channels.task_envelope("a.tasks", "w2", {"id": "x"}, 4.0)
    assert channels.read_task("a.tasks", encode(env)) == channels.message(
        "a.tasks", "w2", {"id": "x"}, 4.0
    )


def test_text_that_is_not_json() -> None:
    assert channels.parse_payload('{"a": 1}') == ({"a": 1}, None)
    assert channels.parse_payload("hello") == ("hello", None)
    text, problem = channels.parse_payload('{"\n  "task_id": "1"}')
    assert text == '{"\n  "task_id": "1"}' and problem is not None
    assert problem.startswith("not valid JSON")
