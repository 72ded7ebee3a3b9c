"""The ``compute`` task type: bc-style arithmetic, exact where it can be, bounded always."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clawd.config import Config
from clawd.errors import BadInput, TaskError
from clawd.handler import TaskContext
from clawd.handlers import compute as compute_plugin
from clawd.handlers.compute import MAX_DEPTH, compute, evaluate
from clawd.plugins import Plugins


def run(data: Any) -> Any:
    return compute(TaskContext(id="t1", type="compute", input=data))


def rejected(expr: str) -> str:
    """Evaluate an expression that must fail; return the message."""
    with pytest.raises(BadInput) as info:
        evaluate(expr)
    assert info.value.retryable is False
    return info.value.message


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("2+2", 4),
        ("10/4", 2.5),
        ("2^10", 1024),
        ("(1+2)*3", 9),
        ("2**10", 1024),
        ("2^3^2", 512),  # right-associative: 2^(3^2)
        ("-2^2", -4),  # power binds tighter than unary minus
        ("2^-1", 0.5),
        ("--3", 3),
        ("2*-3", -6),
        ("7-2-1", 4),  # left-associative
        ("12/3/2", 2),
        ("1+2*3", 7),
        ("0.1+0.2", 0.3),  # exact decimals, unlike floats
        ("1/3", 1 / 3),
        ("-7%3", -1),  # bc's remainder has the sign of the dividend
        ("7%-3", 1),
        ("7.5%2", 1.5),
        (".5+1.", 1.5),
        ("  1 +\t2\n", 3),
        ("sqrt(16)", 4),
        ("sqrt(2)", 2**0.5),
        ("sqrt(1/4)", 0.5),
        ("abs(-3)", 3),
        ("min(4, 2, 8)", 2),
        ("max(4, 2, 8)", 8),
        ("floor(-2.5)", -3),
        ("ceil(2.1)", 3),
        ("round(2.5)", 3),  # half away from zero, not to even
        ("round(-2.5)", -3),
        ("round(2.675, 2)", 2.68),
        ("ln(e)", 1),
        ("log(8, 2)", 3),
        ("log10(1000)", 3),
        ("log2(1024)", 10),
        ("exp(0)", 1),
        ("2*pi", 6.283185307179586),
        ("sin(0)+cos(0)", 1),
        ("max(1, min(2, 3)) * (4 - -1)", 10),
        ("(-1)^(10^3000)", 1),
        ("0^0", 1),
        ("2^0", 1),
        ("pi^0", 1),
    ],
)
def test_expressions(expr: str, expected: int | float) -> None:
    result = evaluate(expr)
    assert result == pytest.approx(expected)
    # integral results are JSON integers, whatever route they took
    if float(expected).is_integer():
        assert type(result) is int


def test_big_integers_stay_exact() -> None:
    assert evaluate("2^200") == 2**200
    assert evaluate("10^3999") == 10**3999  # the largest power of ten allowed
    assert evaluate("sqrt(10^1000)") == 10**500


def test_input_forms() -> None:
    assert run("2+2") == 4
    assert run({"expr": "2+2"}) == 4
    assert run(42) == 42
    assert run(2.5) == 2.5


@pytest.mark.parametrize("data", [None, True, [1, 2], {"expr": "1", "x": 2}, {"exp": "1"}])
def test_wrong_input_types(data: Any) -> None:
    with pytest.raises(BadInput):
        run(data)


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("(1+2))", "unexpected ')' at position 6"),
        ("1+2)*3", "unexpected ')' at position 4"),
        ("()", "unexpected ')' at position 2"),
        ("(1+2", "'(' at position 1 is never closed"),
        ("1+", "unexpected end of expression"),
        ("1 2", "unexpected number '2' at position 3"),
        ("2 pi", "unexpected name 'pi' at position 3"),
        ("1,2", "unexpected ',' at position 2"),
        ("3!", "unexpected character '!' at position 2"),
        ("2e5", "unexpected name 'e5' at position 2"),
        ("foo(1)", "unknown name 'foo' at position 1"),
        ("pi(2)", "'pi' at position 1 is a constant"),
        ("sqrt 4", "function 'sqrt' at position 1 needs its arguments in parentheses"),
        ("sqrt(1, 2)", "sqrt() at position 1 takes 1 argument"),
        ("min()", "unexpected ')' at position 5"),
        ("sqrt(-1)", "square root of a negative number"),
        ("ln(0)", "logarithm of a number that is not positive"),
        ("log(2, 1)", "logarithm base 1"),
        ("(-8)^0.5", "negative number to a non-integer power in '^' at position 5"),
        ("round(1, 1000)", "round(x, n) needs |n| <= 100"),
        ("", "empty expression"),
        ("   ", "empty expression"),
    ],
)
def test_errors_name_the_problem_and_position(expr: str, message: str) -> None:
    got = rejected(expr)
    assert message in got


@pytest.mark.parametrize(
    ("expr", "position"),
    [("1/0", 2), ("1/(2-2)", 2), ("5%0", 2), ("0^-1", 2), ("1+(3/0)", 5)],
)
def test_division_by_zero_is_bad_input_not_retried(expr: str, position: int) -> None:
    got = rejected(expr)
    assert got.startswith("division by zero")
    assert f"at position {position}" in got


#: results too large to compute: refused from their magnitude, before any work
HUGE = [
    "9^9^9",
    "4000000^4000000",
    "2^2^2^2^2",  # 2^65536: 19 729 digits
    "10^4001",
    "2^(10^3000)",
    "(10^3000)^(10^3000)",
    "1.5^20000",  # small enough as a magnitude, but neither a float nor a short fraction
    "exp(1000)",
    "10^300*10^300*pi",  # inexact, and over the float range
    "(10^2000)*(10^2001)",
]


@pytest.mark.parametrize("expr", HUGE)
def test_huge_results_are_refused(expr: str) -> None:
    # how fast: python -m bench.compute_limits
    got = rejected(expr)
    assert "too large" in got or "too long" in got


def test_huge_power_message_gives_the_magnitude() -> None:
    got = rejected("9^9^9")
    assert got == (
        "result of '^' at position 2 is too large (about 10^369693100; the limit is 10^4000)"
    )


def test_tiny_results_underflow_to_zero() -> None:
    assert evaluate("0.5^100000") == 0
    assert evaluate("2^-3^2^9") == 0


HOSTILE = {
    "10 MB expression": ("1" * 10_000_000, "10000000 characters long"),
    "100 000 nested parentheses": ("(" * 100_000 + "1" + ")" * 100_000, "characters long"),
    "'1+' * 100 000": ("1+" * 100_000, "characters long"),
    "nesting just over the limit": ("(" * 201 + "1" + ")" * 201, "nested deeper than 200"),
    "unclosed deep nesting": ("(" * 5000, "nested deeper than 200"),
    "deep function nesting": ("sqrt(" * 300 + "1" + ")" * 300, "nested deeper than 200"),
    "too many tokens": ("+".join(["1"] * 3000), "more than 5000 tokens (at position 5001)"),
    "a 5000-digit number": ("9" * 5000, "5000 digits"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_expressions_are_refused(name: str) -> None:
    expr, message = HOSTILE[name]
    assert message in rejected(expr)


def test_nesting_up_to_the_limit_works_without_recursion() -> None:
    assert evaluate("(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH) == 1
    assert evaluate("-" * 4999 + "1") == -1  # a long unary chain is no deeper
    assert evaluate("^".join(["1"] * 2500)) == 1  # nor a long right-associative one


#: within every limit, the slowest kinds of work (timed by python -m bench.compute_limits)
HEAVY = [
    "+".join(["1"] * 2500),
    "+".join(f"1/{k}" for k in range(1, 1250)),
    "*".join(["(3^8000/7^4000)"] * 300),
    "+".join(["(7^4700/11^3000)"] * 300),
    "+".join(["7^4700/11^3000-7^4699/11^3000"] * 300)[:9000],
    "+".join(["(7^300/11^280)"] * 600)[:8999],
]


@pytest.mark.parametrize("expr", HEAVY, ids=[f"heavy-{i}" for i in range(len(HEAVY))])
def test_the_largest_allowed_expressions_end_in_a_number_or_a_limit(expr: str) -> None:
    try:
        assert isinstance(evaluate(expr), int | float)
    except BadInput as exc:  # the work is done, then the result is over a limit
        assert "too large" in exc.message or "more than 5000 tokens" in exc.message


_PIECES = [*"0123456789.+-*/%^(), ", "**", "sqrt", "min", "max", "pi", "e", "ln", "round", "9^9"]


@settings(max_examples=400, deadline=1000)
@given(
    st.one_of(
        st.text(alphabet="0123456789.+-*/%^(), e", max_size=80),
        st.lists(st.sampled_from(_PIECES), max_size=60).map("".join),
    )
)
def test_random_expressions_only_ever_fail_with_task_error(expr: str) -> None:
    try:
        result = evaluate(expr)
    except TaskError as exc:
        assert exc.retryable is False
        assert exc.message
        return
    assert type(result) in (int, float)
    msgspec.json.encode(result)  # what the worker will do with it


def test_registered_as_a_plugin() -> None:
    plugins = Plugins(Config())
    plugins.register_object(compute_plugin, "compute")
    plugins.collect()
    spec = plugins.handlers["compute"]
    assert spec.isolation == "thread"
    assert spec.timeout == 5
    assert spec.func(TaskContext(id="t", type="compute", input="6*7")) == 42
