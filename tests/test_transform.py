"""The ``transform`` task type: named ops, and jq sealed off from the daemon."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest

from clawd.config import Config
from clawd.errors import BadInput, TaskError, TaskTimeout
from clawd.handler import TaskContext
from clawd.handlers import _jq
from clawd.handlers import transform as transform_plugin
from clawd.handlers.transform import transform
from clawd.plugins import Plugins

needs_jq = pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")

CANARY = "clawd-canary-7d1e5f"


def run(data: Any, timeout: float | None = None) -> Any:
    return transform(TaskContext(id="t1", type="transform", input=data, timeout=timeout))


def bad(data: Any) -> str:
    with pytest.raises(BadInput) as info:
        run(data)
    assert info.value.retryable is False
    return info.value.message


# -- named ops ---------------------------------------------------------------------------


PEOPLE = [
    {"name": "ann", "age": 31, "tags": ["admin", "ops"]},
    {"name": "bob", "age": 25, "tags": []},
    {"name": "cyd", "age": 40, "tags": ["ops"]},
    {"name": "dee"},
]


@pytest.mark.parametrize(
    ("data", "ops", "expected"),
    [
        (" Hello ", ["strip", "upper"], "HELLO"),
        ("HeLLo", ["lower"], "hello"),
        ("abc", ["reverse"], "cba"),
        ([1, 2, 3], ["reverse"], [3, 2, 1]),
        ([3, 1, 2], ["sort"], [1, 2, 3]),
        (["b", "a", "b"], ["unique", "sort"], ["a", "b"]),
        ([{"a": 1}, {"a": 1}, [1], [1], 1], ["unique"], [{"a": 1}, [1], 1]),
        ([1, 2, 3.5], ["sum"], 6.5),
        ([], ["sum"], 0),
        ([1, 2], ["count"], 2),
        ("abc", ["count"], 3),
        ({"a": 1, "b": 2}, ["keys"], ["a", "b"]),
        ({"a": 1, "b": 2}, ["values"], [1, 2]),
        ([[1, 2], [3], 4, [[5]]], ["flatten"], [1, 2, 3, 4, [5]]),
        ([3, 1, 2], ["min"], 1),
        (["b", "c", "a"], ["max"], "c"),
        ({"a": 1, "b": 2, "c": 3}, [{"pick": ["a", "c", "z"]}], {"a": 1, "c": 3}),
        ({"a": 1, "b": 2, "c": 3}, [{"omit": ["b"]}], {"a": 1, "c": 3}),
        ({"a": 1, "b": 2}, [{"rename": {"a": "x"}}], {"x": 1, "b": 2}),
        (["a", "b"], [{"map": "upper"}], ["A", "B"]),
        ([[2, 1], [4, 3]], [{"map": "sort"}], [[1, 2], [3, 4]]),
        ([[1, 2], [3]], [{"map": {"limit": 1}}], [[1], [3]]),
        ([1, 2, 3, 4], [{"limit": 2}], [1, 2]),
        ("abcdef", [{"limit": 3}], "abc"),
        ([5, 1, 7], [{"filter": {"op": ">", "value": 2}}], [5, 7]),
        ([], ["unique", "sort", "flatten"], []),
    ],
)
def test_ops(data: Any, ops: list[Any], expected: Any) -> None:
    assert run({"data": data, "ops": ops}) == expected


def test_ops_on_lists_of_objects() -> None:
    out = run(
        {
            "data": PEOPLE,
            "ops": [
                {"filter": {"field": "age", "op": ">=", "value": 30}},
                {"sort_by": "age"},
                {"pick": ["name", "age"]},
                {"rename": {"name": "who"}},
            ],
        }
    )
    assert out == [{"who": "ann", "age": 31}, {"who": "cyd", "age": 40}]


@pytest.mark.parametrize(
    ("condition", "names"),
    [
        ({"field": "age", "op": "==", "value": 25}, ["bob"]),
        ({"field": "age", "op": "!=", "value": 25}, ["ann", "cyd"]),  # "dee" has no age
        ({"field": "age", "op": "<", "value": 31}, ["bob"]),
        ({"field": "age", "op": "<=", "value": 31}, ["ann", "bob"]),
        ({"field": "age", "op": ">", "value": 31}, ["cyd"]),
        ({"field": "name", "op": "in", "value": ["bob", "dee"]}, ["bob", "dee"]),
        ({"field": "tags", "op": "contains", "value": "ops"}, ["ann", "cyd"]),
        ({"field": "name", "op": "contains", "value": "y"}, ["cyd"]),
        ({"field": "age", "op": ">", "value": "thirty"}, []),  # not comparable: no match
    ],
)
def test_filter_comparisons(condition: dict[str, Any], names: list[str]) -> None:
    out = run({"data": PEOPLE, "ops": [{"filter": condition}]})
    assert [p["name"] for p in out] == names


def test_sort_by_puts_objects_without_the_field_last() -> None:
    out = run({"data": PEOPLE[::-1], "ops": [{"sort_by": "age"}, {"map": {"pick": ["name"]}}]})
    assert out == [{"name": "bob"}, {"name": "ann"}, {"name": "cyd"}, {"name": "dee"}]


@pytest.mark.parametrize(
    ("data", "ops", "message"),
    [
        ("x", ["upper", "bogus"], "ops[1] (bogus): unknown op"),
        ("abc", ["upper", "sort"], "ops[1] (sort): needs a list, got string"),
        (["a", 1], ["sort"], "ops[0] (sort): can only order numbers with numbers"),
        ([1, "a"], [{"map": "upper"}], "ops[0] (map): element 0: needs a string, got int"),
        ([1, "2"], ["sum"], "ops[0] (sum): needs a list of numbers, element 1 is string"),
        ([], ["max"], "ops[0] (max): needs a non-empty list"),
        ({"a": 1}, ["flatten"], "ops[0] (flatten): needs a list, got object"),
        ([1], ["pick"], 'ops[0] (pick): takes an argument: write {"pick": ...}'),
        ([1], [{"sort": True}], 'ops[0] (sort): takes no argument: write "sort"'),
        ([1], [{"limit": -1}], "ops[0] (limit): takes a whole number >= 0, got -1"),
        ([1], [{"limit": True}], "ops[0] (limit): takes a whole number >= 0"),
        ([1], [{"pick": "a"}], "ops[0] (pick): takes a list of key names"),
        ([1], [{"pick": ["a"]}], "ops[0] (pick): needs objects, element 0 is int"),
        ([1], [{"filter": {"op": "~", "value": 1}}], "ops[0] (filter): op '~' is not one of"),
        ([1], [{"filter": {"op": "=="}}], "ops[0] (filter): takes {"),
        ([1], [{"a": 1, "b": 2}], "ops[0] (object): an op object has exactly one key"),
        ([1], [7], "ops[0] (int): an op is a name or an object with one key"),
        ([1], "sort", '"ops" must be a list'),
    ],
)
def test_op_errors_name_the_op_and_its_index(data: Any, ops: Any, message: str) -> None:
    assert message in bad({"data": data, "ops": ops})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([1, 2], "transform takes"),
        ({"ops": ["sort"]}, 'missing "data"'),
        ({"data": 1}, "nothing to do"),
        ({"data": 1, "ops": [], "sql": "x"}, "unknown keys ['sql']"),
    ],
)
def test_malformed_specs(spec: Any, message: str) -> None:
    assert message in bad(spec)


# -- jq ----------------------------------------------------------------------------------


@needs_jq
@pytest.mark.parametrize(
    ("data", "program", "expected"),
    [
        ({"a": [1, 2]}, ".a | map(. * 10)", [10, 20]),
        ({"a": [1, 2]}, ".a[]", [1, 2]),  # several outputs: a list
        ({"a": [1, 2]}, ".a", [1, 2]),  # one output: as is
        ({"a": 1}, "empty", None),
        ({"a": "x\ny"}, ".a", "x\ny"),  # newlines inside strings survive
        (1, "-1", -1),  # a program starting with "-" is not taken for an option
        (PEOPLE, "[.[] | select(.age > 30) | .name]", ["ann", "cyd"]),
    ],
)
def test_jq(data: Any, program: str, expected: Any) -> None:
    assert run({"data": data, "jq": program}) == expected


@needs_jq
def test_ops_run_before_jq() -> None:
    assert run({"data": [3, 1, 2], "ops": ["sort"], "jq": ".[0]"}) == 1


@needs_jq
@pytest.mark.parametrize(
    "program", ["env", "$ENV", "[env[]]", "$ENV.CLAWD_TEST_CANARY", "$__loc__"]
)
def test_jq_sees_nothing_of_the_daemons_environment(
    program: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAWD_TEST_CANARY", CANARY)
    out = run({"data": None, "jq": program})
    assert CANARY not in json.dumps(out)
    if program in ("env", "$ENV"):
        assert out == {}


@needs_jq
@pytest.mark.parametrize(
    "program",
    [
        'import "secret" as $s {search: "/"}; $s',
        'include "m" {search: "/tmp"}; .',
        '  # a comment first\nimport "x" as x; .',
    ],
)
def test_jq_cannot_load_modules_or_files(program: str) -> None:
    assert "programs cannot load modules" in bad({"data": 1, "jq": program})


@needs_jq
def test_jq_compile_error_is_bad_input_with_jqs_message() -> None:
    message = bad({"data": 1, "jq": ".a | | .b"})
    assert message.startswith("jq program does not compile:")
    assert "syntax error" in message


@needs_jq
def test_jq_runtime_error_is_bad_input_with_jqs_message() -> None:
    assert "Cannot index number" in bad({"data": 1, "jq": ".a"})
    assert "boom" in bad({"data": 1, "jq": 'error("boom")'})


@needs_jq
@pytest.mark.parametrize(
    "program", ["def f: f; f", "last(repeat(1))", "reduce range(1e12) as $i (0; . + $i)"]
)
def test_jq_that_never_ends_is_killed_at_the_time_limit(program: str) -> None:
    with pytest.raises(TaskTimeout, match="ran past its 0.5 s limit"):
        run({"data": 1, "jq": program}, timeout=0.5)


@needs_jq
def test_jq_endless_output_is_capped() -> None:
    # capped, not timed out: the cap is what ended it, long before the 5 s limit
    with pytest.raises(BadInput, match="jq output is over"):
        run({"data": 1, "jq": "repeat(1)"}, timeout=5)


@needs_jq
def test_jq_default_limit_applies_without_a_task_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transform_plugin, "DEFAULT_TIMEOUT", 0.3)
    with pytest.raises(TaskTimeout):
        run({"data": 1, "jq": "def f: f; f"})


def test_missing_jq_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_jq.shutil, "which", lambda name: None)
    with pytest.raises(TaskError, match="jq binary, which is not installed") as info:
        run({"data": 1, "jq": "."})
    assert info.value.retryable is False


@pytest.mark.parametrize(
    ("program", "message"),
    [(5, '"jq" must be a non-empty string'), ("", "an empty string"), ("x" * 70_000, "over")],
)
def test_malformed_jq_programs(program: Any, message: str) -> None:
    assert message in bad({"data": 1, "jq": program})


def test_registered_as_a_plugin() -> None:
    plugins = Plugins(Config())
    plugins.register_object(transform_plugin, "transform")
    plugins.collect()
    spec = plugins.handlers["transform"]
    assert spec.isolation == "thread"
    assert spec.timeout == 5
