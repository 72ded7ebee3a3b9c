"""Walking the merged TOML tables against the config schema, every problem at once.

tomllib and msgspec each stop at the first error, but an operator fixing a config wants
the whole list at once, so the merged tables are walked here, guided by
``msgspec.inspect.type_info`` of the Structs in :mod:`clawd.config_schema` (bounds and name
patterns are ``msgspec.Meta`` there). Every problem names the file the key came from, its
dotted path and a fix (:class:`Problems`).
"""

from __future__ import annotations

import copy
import datetime
import difflib
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec.inspect as mi

from clawd.config_files import Origins, absolutize

if TYPE_CHECKING:
    pass

#: lane names, worker ids, the prefix and task types become MQTT topic levels
NAME_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
NAME_HINT = "a name of 1-64 characters from A-Z a-z 0-9 . _ : - (it is used as an MQTT topic level)"
#: a key path: table names and keys, and list indices
Key = tuple[str | int, ...]
UNKNOWN = "this is either a typo or this option does not exist in this version"
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_PASSWORD_KEYS = {"password", "passwd", "pass", "secret"}
_PASSWORD_HINT = (
    "passwords are never read from the config file; put it in a file named by "
    'password_file (mode 0600), or use the systemd credential "LoadCredential=broker-password"'
)


def _dotted(path: Key) -> str:
    parts: list[str] = []
    for p in path:
        if isinstance(p, int):
            parts[-1] += f"[{p}]"
        else:
            parts.append(p if _BARE_KEY.match(p) else json.dumps(p))
    return ".".join(parts)


def location(path: Key, *, table: bool = False) -> str:
    """``[worker] concurrency`` for a key, ``[handlers.compute]`` for a table."""
    if table:
        return f"[{_dotted(path)}]" if path else ""
    last = max(i for i, p in enumerate(path) if isinstance(p, str))
    key = _dotted(path[last:])
    return f"[{_dotted(path[:last])}] {key}" if last else key


# -- reading and merging ---------------------------------------------------------------

#: key path -> the file that set it
#: file-valued keys; a relative path is taken relative to the file that sets it


def _keys(path: Key) -> tuple[str, ...]:
    """The table-and-key part of ``path``, up to its first list index."""
    ints = [i for i, k in enumerate(path) if isinstance(k, int)]
    return tuple(str(k) for k in path[: ints[0] if ints else len(path)])


class Problems:
    """Collects problems, each prefixed with the file that set the key it is about.

    ``origins`` maps a key path to the file that set it (for a table: the first file that
    defined it); a path without an entry takes its nearest ancestor's, else ``fallback``.
    """

    def __init__(self, origins: Origins, fallback: str):
        self.origins = origins
        self.fallback = fallback
        self.messages: list[str] = []
        #: keys (and tables) with a problem: left out of the typed config, and the
        #: cross-key checks that read them are skipped
        self.bad: set[tuple[str, ...]] = set()

    def ok(self, *paths: tuple[str, ...]) -> bool:
        """True if none of ``paths`` nor their tables had a problem."""
        return not any(p[: len(b)] == b for p in paths for b in self.bad)

    def source(self, path: Key) -> str:
        keys = tuple(p for p in path if isinstance(p, str))
        for n in range(len(keys), 0, -1):
            if keys[:n] in self.origins:
                return self.origins[keys[:n]]
        return self.fallback

    def add(
        self,
        path: Key,
        message: str,
        *,
        table: bool = False,
        source: str = "",
        key: Key | None = None,
    ) -> None:
        """Record a problem about ``path`` (a table if ``table``); ``key`` is the bad key
        when it differs from ``path`` (an unknown key is reported on its table)."""
        self.bad.add(_keys(key if key is not None else path))
        loc = location(path, table=table)
        where = source or self.source(path)
        self.messages.append(f"{where}: {loc}: {message}" if loc else f"{where}: {message}")


def describe(value: Any, *, reveal: bool = True) -> str:
    """A short, TOML-flavoured rendering of a value for an error message."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, datetime.date | datetime.time):
        return "a date/time"
    if not reveal:  # keep values that may be secrets out of errors and logs
        return {bool: "a boolean", int: "an integer", float: "a number"}.get(
            type(value), "a string"
        )
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value if len(value) <= 60 else value[:57] + "...")
    return repr(value)


def _bounds(t: Any) -> str:
    lo = f">= {t.ge}" if t.ge is not None else f"> {t.gt}" if t.gt is not None else ""
    hi = f"<= {t.le}" if t.le is not None else f"< {t.lt}" if t.lt is not None else ""
    if t.ge is not None and t.le is not None:
        return f" between {t.ge} and {t.le}"
    return " " + " and ".join(x for x in (lo, hi) if x) if lo or hi else ""


def expected(t: Any, *, plural: bool = False) -> str:
    """What a value of schema type ``t`` must be, in words."""
    if isinstance(t, mi.Metadata):
        return expected(t.type, plural=plural)
    if isinstance(t, mi.UnionType):
        return " or ".join(expected(x, plural=plural) for x in t.types if not _is_none(x))
    if isinstance(t, mi.IntType):
        return ("integers" if plural else "an integer") + _bounds(t)
    if isinstance(t, mi.FloatType):
        return ("numbers" if plural else "a number") + _bounds(t)
    if isinstance(t, mi.BoolType):
        return "true or false"
    if isinstance(t, mi.StrType):
        if t.pattern == NAME_PATTERN:
            return NAME_HINT.replace("a name", "names") if plural else NAME_HINT
        empty = "non-empty " if t.min_length else ""
        form = " of the form the hint gives" if t.pattern else ""
        return f"{empty}strings{form}" if plural else f"a {empty}string{form}"
    if isinstance(t, mi.LiteralType):
        return "one of " + ", ".join(json.dumps(v) for v in t.values)
    if isinstance(t, mi.ListType):
        empty = "non-empty " if t.min_length else ""
        return f"a {empty}list of {expected(t.item_type, plural=True)}"
    return "tables" if plural else "a table"


def _is_none(t: Any) -> bool:
    return isinstance(t, mi.NoneType)


def _scalar_ok(value: Any, t: Any) -> bool:
    if isinstance(t, mi.BoolType):
        return isinstance(value, bool)
    if isinstance(t, mi.LiteralType):
        return value in t.values and not isinstance(value, bool)
    if isinstance(t, mi.StrType):
        if not isinstance(value, str) or len(value) < (t.min_length or 0):
            return False
        return t.pattern is None or re.search(t.pattern, value) is not None
    if isinstance(value, bool):
        return False  # bool is an int in Python, never in a config
    # TOML writes 30 and 30.0 alike, so a float field takes both; nan and inf are never meant
    if not isinstance(value, int if isinstance(t, mi.IntType) else int | float):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return not (
        (t.ge is not None and value < t.ge)
        or (t.gt is not None and value <= t.gt)
        or (t.le is not None and value > t.le)
        or (t.lt is not None and value >= t.lt)
    )


class Walker:
    """Walks raw TOML values against msgspec type info, adding a problem for each mismatch.

    A ``Meta(extra={"hint": ...})`` on a field is appended to its type errors, and
    ``extra={"secret": True}`` keeps the values under it out of messages.
    """

    def __init__(self, problems: Problems):
        self.p = problems

    def value(self, value: Any, t: Any, path: Key, *, reveal: bool = True, hint: str = "") -> None:
        if isinstance(t, mi.Metadata):
            extra = t.extra or {}
            hint = extra.get("hint", hint)
            reveal = reveal and not extra.get("secret", False)
            t = t.type
        if isinstance(t, mi.UnionType):  # ``X | None`` (TOML has no null) or ``str | list``
            types = [x for x in t.types if not _is_none(x)]
            lists = [x for x in types if isinstance(x, mi.ListType)]
            others = [x for x in types if not isinstance(x, mi.ListType)]
            # the member the value's shape asks for: a list, else the scalar
            t = lists[0] if lists and (isinstance(value, list) or not others) else others[0]
        if isinstance(t, mi.AnyType):
            return
        if isinstance(t, mi.StructType):
            if self._is(value, dict, t, path, reveal, hint):
                self.struct(value, t, path, reveal=reveal)
        elif isinstance(t, mi.DictType):
            if self._is(value, dict, t, path, reveal, hint):
                self.table(value, t, path, reveal=reveal, hint=hint)
        elif isinstance(t, mi.ListType):
            if self._is(value, list, t, path, reveal, hint):
                if t.min_length and len(value) < t.min_length:
                    self._mismatch(value, t, path, reveal, hint)
                for i, item in enumerate(value):
                    self.value(item, t.item_type, (*path, i), reveal=reveal)
        elif not _scalar_ok(value, t):
            self._mismatch(value, t, path, reveal, hint)

    def _is(self, value: Any, kind: type, t: Any, path: Key, reveal: bool, hint: str) -> bool:
        if isinstance(value, kind):
            return True
        self._mismatch(value, t, path, reveal, hint)
        return False

    def _mismatch(self, value: Any, t: Any, path: Key, reveal: bool, hint: str) -> None:
        msg = f"expected {expected(t)}, got {describe(value, reveal=reveal)}"
        if isinstance(t, mi.LiteralType) and isinstance(value, str):
            msg += did_you_mean(value, [str(v) for v in t.values])
        if isinstance(value, list) and isinstance(t, mi.ListType) and not value:
            msg = f"expected {expected(t)}, got an empty list"
        self.p.add(path, msg + (f" ({hint})" if hint else ""))

    def table(self, value: dict[str, Any], t: Any, path: Key, *, reveal: bool, hint: str) -> None:
        """A ``dict[name, X]`` table: check the size, each name, then each value."""
        if t.min_length and len(value) < t.min_length:
            self.p.add(path, f"expected at least one entry ({hint or 'a table'})", table=True)
        for name, item in value.items():
            if not _scalar_ok(name, t.key_type):
                msg = f"invalid name: expected {expected(t.key_type)}"
                self.p.add((*path, name), msg, table=True)
            else:
                self.value(item, t.value_type, (*path, name), reveal=reveal)
        left = [name for name in value if self.p.ok(_keys((*path, name)))]
        if t.min_length and value and len(left) < t.min_length:
            self.p.bad.add(_keys(path))  # too few good entries: the whole table is unusable

    def struct(
        self,
        value: dict[str, Any],
        t: mi.StructType,
        path: Key,
        *,
        reveal: bool = True,
        special: Mapping[str, Callable[[Any, Key], None]] | None = None,
        internal: frozenset[str] = frozenset(),
    ) -> None:
        """A table with a fixed set of keys; ``special`` keys get their own checker."""
        fields = {f.encode_name: f for f in t.fields if f.name not in internal}
        special = special or {}
        for key, item in value.items():
            if key in special:
                special[key](item, (*path, key))
            elif key in fields:
                self.value(item, fields[key].type, (*path, key), reveal=reveal)
            else:
                self.unknown(key, item, list(fields), path, t)
        for name, f in fields.items():
            if f.required and name not in value:
                self.p.add(path, f'missing required key "{name}"', table=True)
            elif f.required and not self.p.ok(_keys((*path, name))):
                self.p.bad.add(_keys(path))  # a table without its required key cannot stand

    def unknown(self, key: str, item: Any, known: list[str], path: Key, t: mi.StructType) -> None:
        """An unknown key: suggest the closest known one, or the section it belongs in."""
        source = self.p.source((*path, key))
        if path == ("broker",) and key in _PASSWORD_KEYS:
            msg = f'unknown key "{key}": {_PASSWORD_HINT}'
            self.p.add(path, msg, table=True, source=source, key=(*path, key))
            return
        close = difflib.get_close_matches(key, known, n=1)
        if not path and isinstance(item, dict):
            what, hint = f"unknown table [{_dotted((key,))}]", close and f"[{close[0]}]"
        else:
            what, hint = f"unknown key {json.dumps(key)}", close and json.dumps(close[0])
        if not hint:  # a key written above its section header, say
            hint = next(
                (
                    f"[{f.name}] {key}"
                    for f in t.fields
                    if isinstance(f.type, mi.StructType)
                    and key in {g.encode_name for g in f.type.fields}
                ),
                "",
            )
        tail = f" (did you mean {hint}?)" if hint else f": {UNKNOWN}"
        self.p.add(path, what + tail, table=True, source=source, key=(*path, key))


def did_you_mean(word: str, choices: list[str]) -> str:
    """`` (did you mean "x"?)`` for the closest choice, or nothing."""
    same_case = [c for c in choices if c.lower() == word.lower()]
    close = same_case or difflib.get_close_matches(word, choices, n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _check_handlers(walker: Walker, value: Any, path: Key, handler_t: Any, exec_t: Any) -> None:
    """``[handlers.<type>]`` is a HandlerConfig, except ``[handlers.exec.<type>]`` commands."""
    hint = "each [handlers.<type>] and [handlers.exec.<type>] is a table"
    if not isinstance(value, dict):
        walker.p.add(path, f"expected a table ({hint})")
        return
    for name, item in value.items():
        is_exec = name == "exec" and isinstance(item, dict)
        for type_name, sub in item.items() if is_exec else [(name, item)]:
            here = (*path, "exec", type_name) if is_exec else (*path, name)
            if not re.match(NAME_PATTERN, type_name):  # task types are topic levels too
                walker.p.add(here, f"invalid task type: expected {NAME_HINT}", table=True)
            else:
                walker.value(sub, exec_t if is_exec else handler_t, here, hint=hint)


def _prune(data: dict[str, Any], path: tuple[str, ...]) -> None:
    table: Any = data
    for key in path[:-1]:
        table = table.get(key)
        if not isinstance(table, dict):
            return
    table.pop(path[-1], None)


def check_tables(
    data: dict[str, Any], p: Problems, config_t: mi.StructType, handler_t: Any, exec_t: Any
) -> dict[str, Any]:
    """Check the merged tables against the schema; return a copy without the bad keys.

    Bad keys fall back to their defaults so every other key can still be converted and get
    the cross-key checks; that config is only used to find more problems.
    """
    absolutize(data, p.origins)
    walker = Walker(p)
    special = {"handlers": lambda v, path: _check_handlers(walker, v, path, handler_t, exec_t)}
    walker.struct(data, config_t, (), special=special, internal=frozenset({"sources"}))
    good = copy.deepcopy(data)
    good.pop("sources", None)
    for bad in sorted(p.bad, key=len):
        _prune(good, bad)
    return good
