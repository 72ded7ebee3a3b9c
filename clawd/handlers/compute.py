"""Task type ``compute``: arithmetic as ``bc`` users write it, without ``eval``.

    2+2 -> 4        10/4 -> 2.5        2^10 -> 1024        (1+2)*3 -> 9
    sqrt(16) -> 4   max(1, 7, 3) -> 7  2*pi -> 6.283185307179586

Operators ``+ - * / % ^`` (``^`` is power and right-associative, ``**`` is accepted
too), parentheses, unary minus, decimals, the functions in :data:`FUNCTIONS` and the
constants ``pi`` and ``e``. Unlike bc, ``-2^2`` is ``-(2^2)`` as in mathematics, and
division is never truncated. ``%`` is bc's remainder: it takes the sign of the dividend.

Numbers are exact (integers and fractions) until an irrational function or constant
makes them floating point, so ``0.1+0.2`` is ``0.3``. Integers may have up to
MAX_DIGITS digits; a fraction whose numerator or denominator passes about 300 digits
goes on as a float. Integral results come back as JSON integers, the rest as floats.

The expression comes from the network, so every cost is bounded before it is paid: the
text's length, its token count and its nesting depth are checked before anything is
evaluated; parsing is iterative (shunting-yard), so no input can exhaust Python's stack;
and the size of a power is estimated with logarithms before it is computed, so
``9^9^9`` fails at once instead of stalling the worker.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple

from clawd import hookimpl
from clawd.errors import BadInput
from clawd.handler import TaskContext

MAX_LENGTH = 10_000  #: characters in an expression
MAX_TOKENS = 5_000  #: numbers, names and operators in an expression
MAX_DEPTH = 200  #: nested parentheses (and function calls)
MAX_DIGITS = 4_000  #: digits of any number, written or computed
MAX_ROUND_DIGITS = 100  #: the n of round(x, n)

# An exact value is refused past this many bits (about MAX_DIGITS decimal digits). It
# keeps every multiplication and gcd cheap, and results printable (Python refuses to
# turn an int of more than 4300 digits into text).
_MAX_BITS = math.ceil(MAX_DIGITS * math.log2(10))
# A fraction's numerator and denominator are held smaller: every fraction operation
# normalises with a gcd, which grows with the square of the size. Past this (about 300
# digits, as far as a float reaches) a fraction continues as a float.
_MAX_FRACTION_BITS = 1024

Number = int | Fraction | float


# -- tokens ------------------------------------------------------------------------------


class Token(NamedTuple):
    """One token (a named tuple: made once per number, name and operator, so cheap)."""

    kind: str  # "num", "name", "op" or "end"
    text: str
    pos: int  # 1-based column, for error messages


_TOKEN = re.compile(
    r"\s*(?:(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>\*\*|[-+*/%^(),]))"
)
_SPACE = re.compile(r"\s*")
# a quick count, in C, of roughly one match per token: refuses a long expression before
# a Python-level loop over it
_ROUGH_TOKEN = re.compile(r"[0-9.]+|\w+|\*\*|\S")


def tokenize(text: str) -> list[Token]:
    """Split an expression into tokens, ending with an ``end`` token.

    Raises BadInput for a character that cannot start a token, an over-long number, or
    more than MAX_TOKENS tokens.
    """
    if len(_ROUGH_TOKEN.findall(text)) > MAX_TOKENS:
        over = next(itertools.islice(_ROUGH_TOKEN.finditer(text), MAX_TOKENS, None))
        raise _too_many_tokens(over.start())
    tokens: list[Token] = []
    pos = 0
    end = len(text)
    while True:
        m = _TOKEN.match(text, pos)
        if m is None:
            pos = _SPACE.match(text, pos).end()  # type: ignore[union-attr]
            if pos == end:
                tokens.append(Token("end", "", pos + 1))
                return tokens
            raise BadInput(f"unexpected character {text[pos]!r} at position {pos + 1}")
        kind = m.lastgroup or "op"
        start = m.start(kind)
        value = m.group(kind)
        if kind == "num" and len(value) > MAX_DIGITS + 1:
            raise BadInput(
                f"number at position {start + 1} has {len(value)} digits "
                f"(the limit is {MAX_DIGITS})"
            )
        tokens.append(Token(kind, "^" if value == "**" else value, start + 1))
        if len(tokens) > MAX_TOKENS:
            raise _too_many_tokens(start)
        pos = m.end()


def _too_many_tokens(offset: int) -> BadInput:
    return BadInput(
        f"expression has more than {MAX_TOKENS} tokens (at position {offset + 1}); "
        "split the work into several tasks"
    )


# -- arithmetic --------------------------------------------------------------------------


def _too_large(where: str, log10: float | None = None) -> BadInput:
    about = f"about 10^{log10:.0f}; " if log10 is not None and math.isfinite(log10) else ""
    return BadInput(f"result of {where} is too large ({about}the limit is 10^{MAX_DIGITS})")


def _float_overflow(where: str) -> BadInput:
    # inexact results (after pi, sqrt(2), exp, ...) are floats, which stop near 1.8e308
    return BadInput(
        f"result of {where} is too large for a floating-point number (the limit is 1.8e308)"
    )


def _checked(value: Number, where: str) -> Number:
    """Keep a value inside the limits: exact while small, else float, else an error."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _float_overflow(where)
        return value
    if isinstance(value, Fraction) and value.denominator == 1:
        value = value.numerator
    if isinstance(value, int):
        if value.bit_length() > _MAX_BITS:
            raise _too_large(where, math.log10(abs(value)))
        return value
    if max(value.numerator.bit_length(), value.denominator.bit_length()) <= _MAX_FRACTION_BITS:
        return value
    # too many digits to carry exactly, perhaps not too large to approximate
    try:
        return _checked(float(value), where)
    except OverflowError:
        raise _float_overflow(where) from None


def _is_exact(value: Number) -> bool:
    return not isinstance(value, float)


def _log10_abs(value: Number) -> float:
    """log10(|value|) for a non-zero value of any size (math.log10 takes big ints)."""
    if isinstance(value, Fraction):
        return math.log10(abs(value.numerator)) - math.log10(value.denominator)
    return math.log10(abs(value))


def _divide(a: Number, b: Number, where: str) -> Number:
    if b == 0:
        raise BadInput(f"division by zero in {where}")
    if isinstance(a, int) and isinstance(b, int):
        if a % b == 0:
            return a // b
        if max(a.bit_length(), b.bit_length()) > _MAX_FRACTION_BITS:
            return a / b  # a fraction this long would be a float anyway; skip its gcd
    if _is_exact(a) and _is_exact(b):
        return Fraction(a) / Fraction(b)
    return a / b


def _remainder(a: Number, b: Number, where: str) -> Number:
    # bc's remainder: a - b*trunc(a/b), so the result has the sign of a (-7 % 3 == -1)
    if b == 0:
        raise BadInput(f"division by zero in {where} (remainder)")
    if isinstance(a, int) and isinstance(b, int):
        r = abs(a) % abs(b)
        return -r if a < 0 else r
    if _is_exact(a) and _is_exact(b):
        a, b = Fraction(a), Fraction(b)
        return a - b * int(a / b)
    return math.fmod(a, b)


def _power(a: Number, b: Number, where: str) -> Number:
    """a^b, refusing results over the size limit before computing them."""
    if a == 0:
        if b < 0:
            raise BadInput(f"division by zero in {where} (0 to a negative power)")
        return 1 if b == 0 else 0
    integral = b.is_integer() if isinstance(b, float) else Fraction(b).denominator == 1
    if not integral:
        if a < 0:
            raise BadInput(f"negative number to a non-integer power in {where}")
        # a float result: the only risk is overflow, which math.pow reports
        return math.pow(a, b)
    n = int(b)
    if n == 0:
        return 1
    if abs(a) == 1:
        return a if n % 2 else 1
    # log10 of the result is n*log10|a|; compare its logarithm first, since n itself may
    # have thousands of digits and not fit in a float
    la = _log10_abs(a)
    if la != 0 and math.log10(abs(n)) + math.log10(abs(la)) > math.log10(2 * MAX_DIGITS):
        if (n > 0) == (la > 0):
            try:
                raise _too_large(where, float(n) * la)
            except OverflowError:  # n has more than 308 digits
                raise _too_large(where) from None
        return 0.0  # so small it underflows to zero, as in floating point
    magnitude = float(n) * la if la != 0 else 0.0
    if magnitude > MAX_DIGITS:
        raise _too_large(where, magnitude)
    if _is_exact(a):
        f = Fraction(a)
        bits = abs(n) * max(math.log2(abs(f.numerator)), math.log2(f.denominator))
        exact = f.denominator == 1 and n > 0
        if bits <= (_MAX_BITS if exact else _MAX_FRACTION_BITS) + 1:
            return f**n
        if magnitude > 300:  # neither exact nor a float: (3/2)^2000 has 350-digit terms
            raise BadInput(
                f"result of {where} (about 10^{magnitude:.0f}) is a fraction too long to "
                "compute exactly and too large for a floating-point number"
            )
    return math.pow(a, n)


def _apply_binary(op: str, a: Number, b: Number, where: str) -> Number:
    try:
        if op == "+":
            result = a + b
        elif op == "-":
            result = a - b
        elif op == "*":
            result = a * b
        elif op == "/":
            result = _divide(a, b, where)
        elif op == "%":
            result = _remainder(a, b, where)
        else:
            result = _power(a, b, where)
    except OverflowError:
        # a float overflowing, or a big exact value that does not fit in a float
        raise _float_overflow(where) from None
    return _checked(result, where)


# -- functions ---------------------------------------------------------------------------


def _positive(x: Number, what: str, where: str) -> None:
    if x <= 0:
        raise BadInput(f"{what} of a number that is not positive ({_to_json(x)}) in {where}")


def _sqrt(args: list[Number], where: str) -> Number:
    (x,) = args
    if x < 0:
        raise BadInput(f"square root of a negative number ({_to_json(x)}) in {where}")
    if _is_exact(x):
        f = Fraction(x)
        num, den = math.isqrt(f.numerator), math.isqrt(f.denominator)
        if num * num == f.numerator and den * den == f.denominator:
            return Fraction(num, den)  # a perfect square stays exact: sqrt(16) is 4
    return math.sqrt(x)


def _ln(x: Number, where: str, log: Callable[[Any], float] = math.log) -> float:
    _positive(x, "logarithm", where)
    if isinstance(x, Fraction):  # numerator and denominator separately: any size works
        return log(x.numerator) - log(x.denominator)
    return log(x)


def _log(args: list[Number], where: str) -> Number:
    if len(args) == 1:
        return _ln(args[0], where)
    x, base = args
    _positive(base, "logarithm base", where)
    if base == 1:
        raise BadInput(f"logarithm base 1 in {where}")
    return _ln(x, where) / _ln(base, where)


def _round(args: list[Number], where: str) -> Number:
    # half away from zero, as people round by hand (Python's round() goes to even)
    x = args[0]
    digits = args[1] if len(args) > 1 else 0
    if not (_is_exact(digits) and Fraction(digits).denominator == 1):
        raise BadInput(f"round(x, n) needs a whole number n, in {where}")
    n = int(digits)
    if abs(n) > MAX_ROUND_DIGITS:
        raise BadInput(f"round(x, n) needs |n| <= {MAX_ROUND_DIGITS}, got {n}, in {where}")
    scale = Fraction(10) ** n
    scaled = abs(Fraction(x)) * scale
    rounded = math.floor(scaled + Fraction(1, 2)) / scale
    return -rounded if x < 0 else rounded


def _one(func: Callable[[Any], Number]) -> Callable[[list[Number], str], Number]:
    return lambda args, where: func(args[0])


#: name -> (fewest arguments, most arguments or None, implementation(args, where))
FUNCTIONS: dict[str, tuple[int, int | None, Callable[[list[Number], str], Number]]] = {
    "sqrt": (1, 1, _sqrt),
    "abs": (1, 1, _one(abs)),
    "min": (1, None, lambda args, where: min(args)),
    "max": (1, None, lambda args, where: max(args)),
    "floor": (1, 1, _one(math.floor)),
    "ceil": (1, 1, _one(math.ceil)),
    "round": (1, 2, _round),
    "ln": (1, 1, lambda args, where: _ln(args[0], where)),
    "log": (1, 2, _log),
    "log10": (1, 1, lambda args, where: _ln(args[0], where, math.log10)),
    "log2": (1, 1, lambda args, where: _ln(args[0], where, math.log2)),
    "exp": (1, 1, _one(math.exp)),
    "sin": (1, 1, _one(math.sin)),
    "cos": (1, 1, _one(math.cos)),
    "tan": (1, 1, _one(math.tan)),
    "atan": (1, 1, _one(math.atan)),
}

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}


def _call(name: str, args: list[Number], where: str) -> Number:
    least, most, func = FUNCTIONS[name]
    if len(args) < least or (most is not None and len(args) > most):
        wanted = f"{least}" if least == most else f"{least} or more" if most is None else "1 or 2"
        raise BadInput(f"{where} takes {wanted} argument(s), got {len(args)}")
    try:
        result = func(args, where)
    except OverflowError:
        raise _float_overflow(where) from None
    except ValueError as exc:  # a math domain error the checks above did not foresee
        raise BadInput(f"{exc} in {where}") from None
    return _checked(result, where)


# -- parsing and evaluation (shunting-yard, no recursion) --------------------------------

_BINARY = {"+": 1, "-": 1, "*": 2, "/": 2, "%": 2, "^": 4}
_UNARY = 3  # binds tighter than * and looser than ^: -2^2 is -(2^2), 2^-1 is 0.5


@dataclass(slots=True)
class _Open:
    """An open parenthesis on the operator stack, perhaps a function call's."""

    pos: int
    func: str | None
    args: int = 0  # arguments already completed (commas seen)


@dataclass(slots=True)
class _Op:
    symbol: str  # a binary operator, or "neg"/"plus" for the unary ones
    pos: int

    @property
    def precedence(self) -> int:
        return _UNARY if self.symbol in ("neg", "plus") else _BINARY[self.symbol]


def _describe(tok: Token) -> str:
    if tok.kind == "end":
        return "end of expression"
    what = {"num": "number", "name": "name"}.get(tok.kind, "")
    return f"{what} {tok.text!r}".strip() + f" at position {tok.pos}"


class _Evaluator:
    """Evaluates a token list with an operand stack and an operator stack."""

    def __init__(self) -> None:
        self.values: list[Number] = []
        self.ops: list[_Op | _Open] = []
        self.depth = 0

    def reduce_one(self) -> None:
        op = self.ops.pop()
        assert isinstance(op, _Op)
        where = f"'{'-' if op.symbol == 'neg' else op.symbol}' at position {op.pos}"
        if op.symbol == "neg":
            self.values.append(-self.values.pop())
        elif op.symbol != "plus":
            b = self.values.pop()
            a = self.values.pop()
            self.values.append(_apply_binary(op.symbol, a, b, where))

    def reduce_above(self, precedence: int, right_assoc: bool = False) -> None:
        """Apply the stacked operators that bind tighter than an incoming one."""
        while self.ops and isinstance(top := self.ops[-1], _Op):
            if top.precedence < precedence or (top.precedence == precedence and right_assoc):
                return
            self.reduce_one()

    def open(self, pos: int, func: str | None) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise BadInput(f"parentheses nested deeper than {MAX_DEPTH} at position {pos}")
        self.ops.append(_Open(pos, func))

    def close_group(self, tok: Token, comma: bool) -> None:
        self.reduce_above(0)
        group = self.ops[-1] if self.ops else None
        if comma:
            if not isinstance(group, _Open) or group.func is None:
                raise BadInput(
                    f"unexpected ',' at position {tok.pos} "
                    "(commas only separate a function's arguments)"
                )
            group.args += 1
            return
        if not isinstance(group, _Open):
            raise BadInput(f"unexpected ')' at position {tok.pos} (no matching '(')")
        self.ops.pop()
        self.depth -= 1
        if group.func is not None:
            count = group.args + 1
            args = self.values[-count:]
            del self.values[-count:]
            where = f"{group.func}() at position {group.pos}"
            self.values.append(_call(group.func, args, where))

    def run(self, tokens: list[Token]) -> Number:
        expect_operand = True
        i = 0
        while True:
            tok = tokens[i]
            i += 1
            if expect_operand:
                if tok.kind == "num":
                    # a whole number is the int Fraction would give back (a third of the
                    # cost of parsing it as a fraction); decimals are exact fractions
                    text = tok.text
                    value = int(text) if "." not in text else Fraction(text)
                    self.values.append(_checked(value, f"position {tok.pos}"))
                    expect_operand = False
                elif tok.kind == "name":
                    is_call = tokens[i].text == "("
                    if tok.text in FUNCTIONS:
                        if not is_call:
                            raise BadInput(
                                f"function {tok.text!r} at position {tok.pos} needs its "
                                f"arguments in parentheses: {tok.text}(...)"
                            )
                        i += 1
                        self.open(tok.pos, tok.text)
                    elif tok.text in CONSTANTS:
                        if is_call:
                            raise BadInput(
                                f"{tok.text!r} at position {tok.pos} is a constant, not a function"
                            )
                        self.values.append(CONSTANTS[tok.text])
                        expect_operand = False
                    else:
                        known = ", ".join([*FUNCTIONS, *CONSTANTS])
                        raise BadInput(
                            f"unknown name {tok.text!r} at position {tok.pos} (known: {known})"
                        )
                elif tok.text == "(":
                    self.open(tok.pos, None)
                elif tok.text in ("-", "+"):
                    self.ops.append(_Op("neg" if tok.text == "-" else "plus", tok.pos))
                else:
                    raise BadInput(
                        f"unexpected {_describe(tok)} (expected a number, a name or '(')"
                    )
            elif tok.kind == "op" and tok.text in _BINARY:
                self.reduce_above(_BINARY[tok.text], right_assoc=tok.text == "^")
                self.ops.append(_Op(tok.text, tok.pos))
                expect_operand = True
            elif tok.text in (")", ","):
                self.close_group(tok, comma=tok.text == ",")
                expect_operand = tok.text == ","
            elif tok.kind == "end":
                self.reduce_above(0)
                if self.ops:
                    group = self.ops[-1]
                    raise BadInput(f"'(' at position {group.pos} is never closed")
                return self.values[0]
            else:
                raise BadInput(f"unexpected {_describe(tok)} (missing operator before it?)")


def _to_json(value: Number) -> int | float:
    """The JSON form of a value: integral values as ints, the rest as floats."""
    if isinstance(value, Fraction):
        value = value.numerator if value.denominator == 1 else float(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def evaluate(expression: str) -> int | float:
    """Evaluate an expression; raise BadInput naming the problem and its position."""
    if len(expression) > MAX_LENGTH:
        raise BadInput(
            f"expression is {len(expression)} characters long (the limit is {MAX_LENGTH})"
        )
    if not expression.strip():
        raise BadInput("empty expression: give one like '2+2'")
    value = _Evaluator().run(tokenize(expression))
    try:
        return _to_json(value)
    except OverflowError:  # a fraction like 3^800/7^400: exact, but only a float could show it
        raise BadInput(
            f"result (about 10^{_log10_abs(value):.0f}) is not a whole number and too large "
            "for a floating-point number (the limit is 1.8e308)"
        ) from None


def compute(ctx: TaskContext) -> int | float:
    """The ``compute`` handler: input is an expression, a number, or {"expr": ...}."""
    data = ctx.input
    if isinstance(data, dict):
        if set(data) != {"expr"}:
            raise BadInput(f'compute takes {{"expr": "..."}}, got keys {sorted(data)}')
        data = data["expr"]
    if isinstance(data, bool) or not isinstance(data, (str, int, float)):
        raise BadInput(f"compute needs an expression string like '2+2', got {type(data).__name__}")
    if isinstance(data, str):
        return evaluate(data)
    if isinstance(data, float) and not math.isfinite(data):
        raise BadInput(f"compute needs a finite number, got {data}")
    return data


@hookimpl
def clawd_register_handlers(register: Any, config: Any) -> None:
    """Register the ``compute`` task type."""
    register(
        "compute",
        compute,
        timeout=5,
        isolation="thread",
        description="arithmetic as bc writes it: + - * / % ^, sqrt, min, max, ...",
    )
