"""Task type ``transform``: structured data through named operations and/or jq.

    {"data": ["b", "a", "b"], "ops": ["unique", "sort"]}         -> ["a", "b"]
    {"data": [{"n": 3}, {"n": 1}], "ops": [{"sort_by": "n"}]}    -> [{"n": 1}, {"n": 3}]
    {"data": {"a": [1, 2]}, "jq": ".a | map(. * 10)"}            -> [10, 20]

``ops`` is a list applied in order; each op is a name (``"upper"``) or an object with
one key, the op's name, whose value is its argument (``{"limit": 10}``). When both
``ops`` and ``jq`` are given the ops run first and jq gets their result. The ops are
in :data:`SIMPLE` and :data:`WITH_ARGUMENT`; docs/handlers.md describes each.

jq runs in its own process with an empty environment and a time limit (see ``_jq``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import msgspec

from clawd import hookimpl
from clawd.errors import BadInput
from clawd.handler import TaskContext
from clawd.handlers._jq import run_jq

DEFAULT_TIMEOUT = 5.0  #: seconds, when the task sets none

_sorted_json = msgspec.json.Encoder(order="sorted")


class OpError(Exception):
    """An op cannot apply to the data it got; the caller adds which op it was."""


def _kind(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _need(data: Any, *types: type) -> None:
    if isinstance(data, bool) or not isinstance(data, types):
        wanted = " or ".join(_kind(t()) for t in types)
        raise OpError(f"needs a {wanted}, got {_kind(data)}")


def _numbers(data: Any) -> list[int | float]:
    _need(data, list)
    for i, v in enumerate(data):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise OpError(f"needs a list of numbers, element {i} is {_kind(v)}")
    return data


def _ordered(items: list[Any], key: Callable[[Any], Any] = lambda x: x) -> list[Any]:
    try:
        return sorted(items, key=key)
    except TypeError:
        raise OpError(
            "can only order numbers with numbers and strings with strings "
            f"(found {', '.join(sorted({_kind(key(x)) for x in items}))})"
        ) from None


# -- ops without an argument -------------------------------------------------------------


def _reverse(data: Any) -> Any:
    _need(data, list, str)
    return data[::-1]


def _unique(data: Any) -> list[Any]:
    # by canonical JSON, so unhashable values (objects, lists) work too; order is kept
    _need(data, list)
    seen: set[bytes] = set()
    out = []
    for item in data:
        key = _sorted_json.encode(item)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _sum(data: Any) -> int | float:
    values = _numbers(data)
    return sum(values) if all(isinstance(v, int) for v in values) else math.fsum(values)


def _sorted_nonempty(data: Any) -> list[Any]:
    _need(data, list)
    if not data:
        raise OpError("needs a non-empty list")
    return _ordered(data)


def _flatten(data: Any) -> list[Any]:
    _need(data, list)
    out: list[Any] = []
    for item in data:
        if isinstance(item, list):
            out.extend(item)
        else:
            out.append(item)
    return out


def _str_op(method: Callable[[str], str]) -> Callable[[Any], str]:
    def op(data: Any) -> str:
        _need(data, str)
        return method(data)

    return op


def _keys(data: Any) -> list[str]:
    _need(data, dict)
    return list(data)


def _values(data: Any) -> list[Any]:
    _need(data, dict)
    return list(data.values())


def _count(data: Any) -> int:
    _need(data, list, str, dict)
    return len(data)


def _sort(data: Any) -> list[Any]:
    _need(data, list)
    return _ordered(data)


#: ops written as a bare name
SIMPLE: dict[str, Callable[[Any], Any]] = {
    "upper": _str_op(str.upper),
    "lower": _str_op(str.lower),
    "strip": _str_op(str.strip),
    "reverse": _reverse,
    "sort": _sort,
    "unique": _unique,
    "sum": _sum,
    "count": _count,
    "min": lambda data: _sorted_nonempty(data)[0],
    "max": lambda data: _sorted_nonempty(data)[-1],
    "keys": _keys,
    "values": _values,
    "flatten": _flatten,
}


# -- ops with an argument ----------------------------------------------------------------


def _each_object(data: Any, func: Callable[[dict[str, Any]], Any]) -> Any:
    """Apply to an object, or to every object of a list."""
    if isinstance(data, dict):
        return func(data)
    _need(data, dict, list)
    out = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise OpError(f"needs objects, element {i} is {_kind(item)}")
        out.append(func(item))
    return out


def _key_list(arg: Any) -> list[str]:
    if not isinstance(arg, list) or not all(isinstance(k, str) for k in arg):
        raise OpError(f"takes a list of key names, got {_kind(arg)}")
    return arg


def _pick(data: Any, arg: Any) -> Any:
    keys = _key_list(arg)
    return _each_object(data, lambda obj: {k: obj[k] for k in keys if k in obj})


def _omit(data: Any, arg: Any) -> Any:
    keys = set(_key_list(arg))
    return _each_object(data, lambda obj: {k: v for k, v in obj.items() if k not in keys})


def _rename(data: Any, arg: Any) -> Any:
    if not isinstance(arg, dict) or not all(isinstance(v, str) for v in arg.values()):
        raise OpError(f'takes an object {{"old": "new", ...}}, got {_kind(arg)}')
    return _each_object(data, lambda obj: {arg.get(k, k): v for k, v in obj.items()})


_MISSING = object()


def _compare(left: Any, op: str, right: Any) -> bool:
    # values that cannot be compared (a string and a number) simply do not match
    try:
        if op == "==":
            return bool(left == right)
        if op == "!=":
            return bool(left != right)
        if op == "<":
            return bool(left < right)
        if op == "<=":
            return bool(left <= right)
        if op == ">":
            return bool(left > right)
        if op == ">=":
            return bool(left >= right)
        if op == "in":
            return isinstance(right, (list, str, dict)) and left in right
        return isinstance(left, (list, str, dict)) and right in left  # "contains"
    except TypeError:
        return False


COMPARISONS = ("==", "!=", "<", "<=", ">", ">=", "in", "contains")


def _filter(data: Any, arg: Any) -> list[Any]:
    if not isinstance(arg, dict) or "op" not in arg or "value" not in arg:
        raise OpError('takes {"field": "...", "op": "==", "value": ...} ("field" optional)')
    extra = set(arg) - {"field", "op", "value"}
    if extra:
        raise OpError(f"unknown keys {sorted(extra)} (it takes field, op and value)")
    field, op, value = arg.get("field"), arg["op"], arg["value"]
    if op not in COMPARISONS:
        raise OpError(f"op {op!r} is not one of {', '.join(COMPARISONS)}")
    if field is not None and not isinstance(field, str):
        raise OpError(f'"field" must be a string, got {_kind(field)}')
    _need(data, list)
    out = []
    for item in data:
        if field is None:
            left = item
        else:
            left = item.get(field, _MISSING) if isinstance(item, dict) else _MISSING
        # an element without the field never matches, not even "!="
        if left is not _MISSING and _compare(left, op, value):
            out.append(item)
    return out


def _map(data: Any, arg: Any) -> list[Any]:
    _need(data, list)
    out = []
    for i, item in enumerate(data):
        try:
            out.append(apply_op(item, arg))
        except OpError as exc:
            raise OpError(f"element {i}: {exc}") from None
    return out


def _sort_by(data: Any, arg: Any) -> list[Any]:
    if not isinstance(arg, str):
        raise OpError(f"takes a field name, got {_kind(arg)}")
    _need(data, list)
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise OpError(f"needs objects, element {i} is {_kind(item)}")
    # objects without the field go last, in their original order (the sort is stable)
    with_field = [x for x in data if arg in x]
    return _ordered(with_field, key=lambda x: x[arg]) + [x for x in data if arg not in x]


def _limit(data: Any, arg: Any) -> Any:
    if isinstance(arg, bool) or not isinstance(arg, int) or arg < 0:
        raise OpError(f"takes a whole number >= 0, got {arg!r}")
    _need(data, list, str)
    return data[:arg]


#: ops written as {"name": argument}
WITH_ARGUMENT: dict[str, Callable[[Any, Any], Any]] = {
    "pick": _pick,
    "omit": _omit,
    "rename": _rename,
    "filter": _filter,
    "map": _map,
    "sort_by": _sort_by,
    "limit": _limit,
}


# -- applying ops ------------------------------------------------------------------------


def _op_name(op: Any) -> str:
    if isinstance(op, str):
        return op
    if isinstance(op, dict) and len(op) == 1:
        return str(next(iter(op)))
    return _kind(op)


def apply_op(data: Any, op: Any) -> Any:
    """Apply one op; raise OpError when it is unknown or does not fit the data."""
    if isinstance(op, str):
        if op in SIMPLE:
            return SIMPLE[op](data)
        if op in WITH_ARGUMENT:
            raise OpError(f'takes an argument: write {{"{op}": ...}}')
    elif isinstance(op, dict) and len(op) == 1:
        name, arg = next(iter(op.items()))
        if name in WITH_ARGUMENT:
            return WITH_ARGUMENT[name](data, arg)
        if name in SIMPLE:
            raise OpError(f'takes no argument: write "{name}"')
    elif not isinstance(op, dict):
        raise OpError("an op is a name or an object with one key")
    else:
        raise OpError(f"an op object has exactly one key, got {len(op)}")
    known = ", ".join([*SIMPLE, *WITH_ARGUMENT])
    raise OpError(f"unknown op (known: {known})")


def apply_ops(data: Any, ops: Any) -> Any:
    """Apply a list of ops in order; BadInput names the failing op and its index."""
    if not isinstance(ops, list):
        raise BadInput(f'"ops" must be a list, got {_kind(ops)}')
    for i, op in enumerate(ops):
        try:
            data = apply_op(data, op)
        except OpError as exc:
            raise BadInput(f"ops[{i}] ({_op_name(op)}): {exc}") from None
    return data


def transform(ctx: TaskContext) -> Any:
    """The ``transform`` handler: ``{"data": ..., "ops": [...], "jq": "..."}``."""
    spec = ctx.input
    usage = 'transform takes {"data": ..., "ops": [...]} and/or "jq": "<program>"'
    if not isinstance(spec, dict):
        raise BadInput(f"{usage}; got {_kind(spec)}")
    if "data" not in spec:
        raise BadInput(f'missing "data": {usage}')
    extra = set(spec) - {"data", "ops", "jq"}
    if extra:
        raise BadInput(f"unknown keys {sorted(extra)}: {usage}")
    if "ops" not in spec and "jq" not in spec:
        raise BadInput(f"nothing to do: {usage}")
    data = spec["data"]
    if "ops" in spec:
        data = apply_ops(data, spec["ops"])
    if "jq" in spec:
        remaining = ctx.remaining
        data = run_jq(spec["jq"], data, DEFAULT_TIMEOUT if remaining is None else remaining)
    return data


@hookimpl
def clawd_register_handlers(register: Any, config: Any) -> None:
    """Register the ``transform`` task type."""
    register(
        "transform",
        transform,
        timeout=DEFAULT_TIMEOUT,
        isolation="thread",
        description="data through named ops (sort, filter, pick, ...) or a jq program",
    )
