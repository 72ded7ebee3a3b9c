"""The condition language of routing rules: a small, bounded expression over a task.

    hash(task.id) % 3 == 0
    'gpu' in task.requires and task.meta.size > 100
    task.type in ['resize', 'thumbnail'] or not task.lane == 'low'

A hand-written tokenizer and recursive-descent parser build a tree of tuples; an
evaluator walks it. Nothing is ever handed to ``eval`` or Python's ``ast``. Limits on the
text's length and the nesting depth keep parsing and evaluation bounded; every mistake
is an :class:`ExprError` naming the column. Evaluation never raises: a comparison of
things that do not compare is false, arithmetic on anything but numbers is ``null``.

``hash(x)`` is the first 8 bytes of BLAKE2b over ``x``'s text (a string's UTF-8, or the
JSON of anything else) as an unsigned integer: the same in every process and after every
restart, unlike Python's salted ``hash()``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: longest condition, in characters
MAX_LENGTH = 1000
#: deepest nesting of parentheses, brackets, ``not`` and unary minus
MAX_DEPTH = 32
#: most items in a list literal
MAX_ITEMS = 256

#: the task's fields a condition may read (``task.meta.<key>`` reads meta)
FIELDS = ("id", "type", "lane", "requires", "meta", "cost", "attempt")
#: names that stand for a field (the seed's ``hash(task_id)``)
ALIASES = {"task_id": ("id",)}
FUNCTIONS = ("hash", "len", "lower")

KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<num>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|<|>|\+|-|\*|/|%|\(|\)|\[|\]|,|\.)
    """,
    re.X,
)
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t"}
_COMPARE = ("==", "!=", "<", "<=", ">", ">=")


class ExprError(Exception):
    """A condition that does not parse; ``column`` is 1-based."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"column {column}: {message}")
        self.message = message
        self.column = column


@dataclass(frozen=True)
class Token:
    kind: str  # num | str | name | op | end
    text: str
    column: int
    value: Any = None


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text``, ending with an ``end`` token."""
    if len(text) > MAX_LENGTH:
        raise ExprError(f"condition is {len(text)} characters long (at most {MAX_LENGTH})", 1)
    out: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            if text[pos] in "'\"":
                raise ExprError("a string is not closed", pos + 1)
            raise ExprError(f"unexpected character {text[pos]!r}", pos + 1)
        kind = m.lastgroup or ""
        raw = m.group()
        if kind == "num":
            value: Any = float(raw) if any(c in raw for c in ".eE") else int(raw)
            out.append(Token("num", raw, pos + 1, value))
        elif kind == "str":
            out.append(Token("str", raw, pos + 1, _unescape(raw, pos + 1)))
        elif kind in ("name", "op"):
            out.append(Token(kind, raw, pos + 1))
        pos = m.end()
    out.append(Token("end", "", len(text) + 1))
    return out


def _unescape(raw: str, column: int) -> str:
    body = raw[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            nxt = body[i + 1]
            if nxt not in _ESCAPES:
                raise ExprError(f"unknown escape \\{nxt} in a string", column + i + 1)
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


# -- parsing -------------------------------------------------------------------------------

Node = tuple[Any, ...]


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def at(self, kind: str, text: str | None = None) -> bool:
        t = self.tok
        return t.kind == kind and (text is None or t.text == text)

    def take(self) -> Token:
        t = self.tok
        self.i += 1
        return t

    def expect(self, kind: str, text: str, what: str) -> Token:
        if not self.at(kind, text):
            raise ExprError(f"expected {what}, found {_shown(self.tok)}", self.tok.column)
        return self.take()

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprError(f"nested more than {MAX_DEPTH} deep", self.tok.column)

    def parse(self) -> Node:
        if self.at("end"):
            raise ExprError("empty condition", 1)
        node = self.or_()
        if not self.at("end"):
            raise ExprError(f"unexpected {_shown(self.tok)}", self.tok.column)
        return node

    def or_(self) -> Node:
        node = self.and_()
        while self.at("name", "or"):
            self.take()
            node = ("or", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.not_()
        while self.at("name", "and"):
            self.take()
            node = ("and", node, self.not_())
        return node

    def not_(self) -> Node:
        if self.at("name", "not"):
            self.take()
            self.nest()
            node = ("not", self.not_())
            self.depth -= 1
            return node
        return self.compare()

    def compare(self) -> Node:
        left = self.sum()
        t = self.tok
        if t.kind == "op" and t.text in _COMPARE:
            self.take()
            return ("cmp", t.text, left, self.sum())
        if self.at("name", "in"):
            self.take()
            return ("in", left, self.sum())
        if self.at("name", "not") and self.tokens[self.i + 1].text == "in":
            self.i += 2
            return ("not", ("in", left, self.sum()))
        return left

    def sum(self) -> Node:
        node = self.term()
        while self.tok.kind == "op" and self.tok.text in ("+", "-"):
            node = ("arith", self.take().text, node, self.term())
        return node

    def term(self) -> Node:
        node = self.unary()
        while self.tok.kind == "op" and self.tok.text in ("*", "/", "%"):
            node = ("arith", self.take().text, node, self.unary())
        return node

    def unary(self) -> Node:
        if self.at("op", "-"):
            self.take()
            self.nest()
            node = ("neg", self.unary())
            self.depth -= 1
            return node
        return self.primary()

    def primary(self) -> Node:
        t = self.tok
        if t.kind in ("num", "str"):
            self.take()
            return ("lit", t.value)
        if t.kind == "op" and t.text == "(":
            self.take()
            self.nest()
            node = self.or_()
            self.expect("op", ")", "')'")
            self.depth -= 1
            return node
        if t.kind == "op" and t.text == "[":
            return self.list_()
        if t.kind == "name":
            return self.name()
        raise ExprError(f"expected a value, found {_shown(t)}", t.column)

    def list_(self) -> Node:
        self.take()
        self.nest()
        items: list[Node] = []
        while not self.at("op", "]"):
            if len(items) >= MAX_ITEMS:
                raise ExprError(f"a list has at most {MAX_ITEMS} items", self.tok.column)
            items.append(self.or_())
            if not self.at("op", ","):
                break
            self.take()
        self.expect("op", "]", "',' or ']'")
        self.depth -= 1
        return ("list", tuple(items))

    def name(self) -> Node:
        t = self.take()
        word = t.text
        if word == "true":
            return ("lit", True)
        if word == "false":
            return ("lit", False)
        if word == "null":
            return ("lit", None)
        if word in ALIASES:
            return ("field", ALIASES[word])
        if word == "task":
            return self.field(t)
        if word in FUNCTIONS:
            self.expect("op", "(", f"'(' after {word}")
            self.nest()
            arg = self.or_()
            self.expect("op", ")", "')'")
            self.depth -= 1
            return ("call", word, arg)
        if word in KEYWORDS:
            raise ExprError(f"expected a value, found {word!r}", t.column)
        raise ExprError(
            f"unknown name {word!r} (a condition reads task.<field>, "
            f"{', '.join(f'{f}()' for f in FUNCTIONS)}, and literals)",
            t.column,
        )

    def field(self, start: Token) -> Node:
        self.expect("op", ".", "'.' after task")
        t = self.tok
        if t.kind != "name" or t.text not in FIELDS:
            raise ExprError(
                f"unknown task field {_shown(t)} (known: {', '.join(FIELDS)})", t.column
            )
        self.take()
        if t.text != "meta":
            return ("field", (t.text,))
        path = ["meta"]
        while self.at("op", "."):
            self.take()
            k = self.tok
            if k.kind != "name":
                raise ExprError(f"expected a meta key, found {_shown(k)}", k.column)
            if len(path) > MAX_DEPTH:
                raise ExprError(f"a meta path has at most {MAX_DEPTH} keys", k.column)
            path.append(self.take().text)
        return ("field", tuple(path))


def _shown(t: Token) -> str:
    return "the end" if t.kind == "end" else repr(t.text)


@dataclass(frozen=True)
class Condition:
    """A parsed condition; ``source`` is the text it came from."""

    source: str
    tree: Node

    def __call__(self, task: Mapping[str, Any]) -> bool:
        """Whether ``task`` (its fields as a mapping) satisfies the condition."""
        return _truth(_eval(self.tree, task))


def parse(text: str) -> Condition:
    """Parse a condition or raise :class:`ExprError`."""
    if not isinstance(text, str):
        raise ExprError("a condition is a string", 1)
    return Condition(text, _Parser(tokenize(text)).parse())


# -- evaluation ----------------------------------------------------------------------------


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _truth(v: Any) -> bool:
    return v is not None and v is not False and v != 0 and v != "" and v != []


def _eval(node: Node, task: Mapping[str, Any]) -> Any:
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "field":
        value: Any = task
        for key in node[1]:
            if not isinstance(value, Mapping):
                return None
            value = value.get(key)
        return value
    if kind == "and":
        return _truth(_eval(node[1], task)) and _truth(_eval(node[2], task))
    if kind == "or":
        return _truth(_eval(node[1], task)) or _truth(_eval(node[2], task))
    if kind == "not":
        return not _truth(_eval(node[1], task))
    if kind == "cmp":
        return _compare(node[1], _eval(node[2], task), _eval(node[3], task))
    if kind == "in":
        item, box = _eval(node[1], task), _eval(node[2], task)
        if isinstance(box, str):
            return isinstance(item, str) and item in box
        if isinstance(box, list | tuple):
            return any(_compare("==", item, x) for x in box)
        return False
    if kind == "list":
        return [_eval(n, task) for n in node[1]]
    if kind == "neg":
        v = _eval(node[1], task)
        return -v if _number(v) else None
    if kind == "arith":
        return _arith(node[1], _eval(node[2], task), _eval(node[3], task))
    if kind == "call":
        return _call(node[1], _eval(node[2], task))
    raise AssertionError(kind)  # pragma: no cover - the parser builds no other node


def _compare(op: str, a: Any, b: Any) -> bool:
    if op == "==":
        return _same(a, b)
    if op == "!=":
        return not _same(a, b)
    if not ((_number(a) and _number(b)) or (isinstance(a, str) and isinstance(b, str))):
        return False
    try:
        if op == "<":
            return bool(a < b)
        if op == "<=":
            return bool(a <= b)
        if op == ">":
            return bool(a > b)
        return bool(a >= b)
    except (TypeError, ValueError, OverflowError):
        return False


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    try:
        return bool(a == b)
    except (TypeError, ValueError, OverflowError, RecursionError):
        return False


def _arith(op: str, a: Any, b: Any) -> Any:
    if not (_number(a) and _number(b)):
        return None
    try:
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if b == 0:
            return None
        if op == "/":
            return a / b
        return a % b
    except (OverflowError, ValueError, ZeroDivisionError):
        return None


def stable_hash(value: Any) -> int:
    """BLAKE2b of ``value``'s text, first 8 bytes, unsigned: stable across processes."""
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
    else:
        data = json.dumps(value, sort_keys=True, default=str).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _call(name: str, arg: Any) -> Any:
    if name == "hash":
        try:
            return stable_hash(arg)
        except (ValueError, TypeError, RecursionError):
            return None
    if name == "len":
        return len(arg) if isinstance(arg, str | list | dict) else None
    return arg.lower() if isinstance(arg, str) else None
