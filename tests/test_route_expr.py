"""The routing rules' condition language: parsing, evaluation, limits, stable hashing."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clawd.routing.expr import MAX_DEPTH, MAX_LENGTH, ExprError, parse, stable_hash
from clawd.routing.rules import decode
from clawd.wire import Unreadable

TASK = {
    "id": "job-7",
    "type": "resize",
    "lane": "normal",
    "requires": ["gpu", "ssd"],
    "meta": {"size": 120, "tier": "gold", "nested": {"k": "v"}},
    "cost": 2.5,
    "attempt": 1,
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("task.type == 'resize'", True),
        ('task.type == "thumb"', False),
        ("'gpu' in task.requires", True),
        ("'tpu' in task.requires", False),
        ("'tpu' not in task.requires", True),
        ("task.meta.size > 100 and task.meta.tier == 'gold'", True),
        ("task.meta.size > 100 and not task.meta.tier == 'gold'", False),
        ("task.meta.nested.k == 'v'", True),
        ("task.meta.missing == null", True),
        ("task.meta.missing > 3", False),
        ("task.lane in ['high', 'normal']", True),
        ("task.cost * 2 >= 5", True),
        ("-task.cost < 0", True),
        ("(1 + 2) * 3 == 9", True),
        ("7 % 0 == null", True),
        ("'abc' < 3", False),
        ("task.type + 1 == null", True),
        ("len(task.requires) == 2", True),
        ("lower('GPU') in task.requires", True),
        ("task.attempt == 1 or task.id == 'x'", True),
        ("true and false", False),
        ("hash(task_id) % 4 == hash(task.id) % 4", True),
        ("'res' in task.type", True),
    ],
)
def test_conditions_evaluate(text: str, expected: bool) -> None:
    assert parse(text)(TASK) is expected


def test_hash_modulo_splits_ids_into_every_bucket() -> None:
    buckets = [parse(f"hash(task.id) % 3 == {i}") for i in range(3)]
    owners = [[b({"id": f"t{n}"}) for b in buckets].index(True) for n in range(300)]
    assert sorted(set(owners)) == [0, 1, 2]
    # each id is in exactly one bucket
    assert all(sum(b({"id": f"t{n}"}) for b in buckets) == 1 for n in range(300))


def test_hash_is_the_same_in_another_process_with_another_hash_seed() -> None:
    code = "from clawd.routing.expr import stable_hash; print(stable_hash('job-42'))"
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert int(out.stdout) == stable_hash("job-42")
    # and a fixed, documented function: first 8 bytes of BLAKE2b, big-endian
    assert stable_hash("job-42") == int.from_bytes(
        __import__("hashlib").blake2b(b"job-42", digest_size=8).digest(), "big"
    )


@pytest.mark.parametrize(
    ("text", "column", "words"),
    [
        ("", 1, "empty condition"),
        ("task.colour == 1", 6, "unknown task field 'colour'"),
        ("task.type = 'x'", 11, "unexpected character '='"),
        ("task.type == 'x", 14, "a string is not closed"),
        ("__import__('os')", 1, "unknown name '__import__'"),
        ("task.type ==", 13, "expected a value, found the end"),
        ("1 == 2 == 3", 8, "unexpected '=='"),
        ("(1 == 1", 8, "expected ')'"),
        ("hash task.id", 6, "expected '(' after hash"),
        ("task.meta.", 11, "expected a meta key"),
        ("[1, 2", 6, "expected ',' or ']'"),
        ("'a\\q'", 3, "unknown escape"),
        ("task.type == 'x' and", 21, "expected a value, found the end"),
    ],
)
def test_errors_are_located(text: str, column: int, words: str) -> None:
    with pytest.raises(ExprError) as err:
        parse(text)
    assert err.value.column == column, err.value
    assert words in str(err.value)
    assert str(err.value).startswith(f"column {column}: ")


def test_limits_on_length_and_depth_end_in_an_error() -> None:
    with pytest.raises(ExprError, match=f"at most {MAX_LENGTH}"):
        parse("1 + " * 10_000 + "1")
    with pytest.raises(ExprError, match="at most 1000"):
        parse("(" * 100_000)
    with pytest.raises(ExprError, match=f"nested more than {MAX_DEPTH} deep"):
        parse("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1))
    with pytest.raises(ExprError, match="nested more than"):
        parse("not " * 200 + "true")
    # as deep as allowed still works
    assert parse("(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH + " == 1")({})


#: conditions built to be slow or deep; bench/route_limits.py times them
ADVERSARIAL = {
    "10 MB of text": "1" * 10_000_000,
    "100 000 open parentheses": "(" * 100_000,
    "nesting one past the limit": "(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1),
    "not, 200 times": "not " * 200,
    "an unclosed string of 999 characters": "'" + "a" * 998,
    "the longest sum": "1" + " + 1" * ((MAX_LENGTH - 5) // 4) + " > 0",
    "the longest or-chain": "false" + " or false" * ((MAX_LENGTH - 5) // 9),
    "the deepest parentheses": "(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH + " == 1",
    "a product of 990 nines": "9" * 495 + " * " + "9" * 495 + " > 0",
    "hash of a 900-char string": "hash('" + "x" * 900 + "') % 7 == 3",
    "the longest list": "task.id in [" + ", ".join(["1"] * 250) + "]",
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_conditions_end_in_an_error_or_a_bool(name: str) -> None:
    try:
        cond = parse(ADVERSARIAL[name])
    except ExprError as exc:
        assert name.startswith(("10 MB", "100 000", "nesting", "not,", "an unclosed")), exc
        return
    assert isinstance(cond(TASK), bool)


def test_the_longest_flat_expressions_evaluate() -> None:
    # chains of and/or/+ are as long as the length limit allows, and still evaluate
    n = (MAX_LENGTH - 10) // 4
    assert parse("1" + " + 1" * n + " > 0")({}) is True
    assert parse("false" + " or false" * ((MAX_LENGTH - 5) // 9))({}) is False


@settings(max_examples=400)
@given(st.text(max_size=300))
def test_any_text_parses_or_fails_with_its_own_error(text: str) -> None:
    try:
        cond = parse(text)
    except ExprError as exc:
        assert 1 <= exc.column <= len(text) + 1
        return
    assert isinstance(cond(TASK), bool)


ATOMS = st.sampled_from(
    [
        "task.id",
        "task.type",
        "task.lane",
        "task.requires",
        "task.meta.size",
        "task.meta.tier",
        "task.meta.nested",
        "task.cost",
        "hash(task.id)",
        "len(task.requires)",
        "0",
        "3",
        "-1.5",
        "'gpu'",
        "null",
        "true",
        "[1, 'a', null]",
    ]
)
OPS = st.sampled_from(
    ["==", "!=", "<", "<=", ">", ">=", "in", "not in", "and", "or", "+", "-", "*", "/", "%"]
)


@st.composite
def expressions(draw: Any, depth: int = 0) -> str:
    if depth > 4 or draw(st.booleans()):
        return str(draw(ATOMS))
    left = draw(expressions(depth + 1))
    right = draw(expressions(depth + 1))
    text = f"{left} {draw(OPS)} {right}"
    return f"not ({text})" if draw(st.booleans()) else f"({text})"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=3), kids),
    max_leaves=8,
)


@settings(max_examples=400)
@given(expressions(), st.dictionaries(st.sampled_from(["size", "tier", "nested"]), JSON))
def test_well_formed_expressions_evaluate_to_a_bool_for_any_task(text: str, meta: Any) -> None:
    try:
        cond = parse(text)
    except ExprError as exc:
        # only what the grammar leaves out: chained comparisons (a == b == c), and
        # ``not`` as an operand of an operator (a == not b), as in Python
        assert "unexpected" in exc.message or "found 'not'" in exc.message
        return
    assert isinstance(cond({**TASK, "meta": meta}), bool)


@settings(max_examples=200)
@given(st.binary(max_size=400))
def test_any_rule_document_decodes_or_is_unreadable(payload: bytes) -> None:
    try:
        rule = decode("r1", payload, 0.0)
    except Unreadable as exc:
        assert exc.error.startswith("routing rule 'r1': ")
        return
    assert rule.targets


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        (b'{"target": "w1", "match": "task.type =="}', "match: column 13: expected a value"),
        (b'{"match": "true"}', "missing required field `target`"),
        (b'{"target": "w/1"}', "target 'w/1' is not a worker id or glob"),
        (b'{"target": "w1", "priority": "high"}', "Expected `int`, got `str`"),
        (b'{"target": "w1", "ttl": -1}', "Expected `float` > 0.0 - at `$.ttl`"),
        (b'{"target": "w1", "colour": 1}', "unknown field `colour`"),
        (b'{"target": []}', "target must name 1-64 workers or globs"),
        (b"not json", "malformed"),
    ],
)
def test_bad_rules_say_what_is_wrong(doc: bytes, words: str) -> None:
    with pytest.raises(Unreadable) as err:
        decode("r1", doc, 0.0)
    assert words.lower() in err.value.error.lower(), err.value.error
