"""What ``load`` does between the TOML files and a Config: read and merge, then check.

Files are deep-merged with a record of which file set each key. tomllib and msgspec each
stop at the first error, but an operator fixing a config wants the whole list at once, so
the merged tables are walked here, guided by ``msgspec.inspect.type_info`` of the Structs
in :mod:`clawd.config` (bounds and name patterns are ``msgspec.Meta`` there), and then the
checks that span keys run on the typed config. Every problem names the file the key came
from, its dotted path and a fix.
"""

from __future__ import annotations

import copy
import datetime
import difflib
import json
import math
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec.inspect as mi

from clawd.config_files import Origins, absolutize
from clawd.errors import ConfigError

if TYPE_CHECKING:
    from clawd.config import Config

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
        return f"{empty}strings" if plural else f"a {empty}string"
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
        if isinstance(t, mi.UnionType):  # only ``X | None`` in the schema; TOML has no null
            (t,) = [x for x in t.types if not _is_none(x)]
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


# -- checks that span keys or look outside the file -------------------------------------


def parse_broker_url(url: str) -> tuple[str, str, int]:
    """``(scheme, host or socket path, port)`` of a ``[broker] url``; ValueError if invalid.

    The port is 0 for ``embedded`` and ``unix://``.
    """
    if url == "embedded":
        return ("embedded", "", 0)
    usage = 'use "embedded", "mqtt://host[:port]", "mqtts://host[:port]" or "unix:///absolute/path"'
    parts = urllib.parse.urlsplit(url)
    if "@" in parts.netloc:  # never echo it: it may hold a password
        raise ValueError("credentials in the URL are not supported; set username and password_file")
    if parts.scheme == "unix":
        if parts.netloc or not parts.path.startswith("/"):
            example = '"unix:///run/mosquitto/mosquitto.sock"'
            raise ValueError(f"{json.dumps(url)}: the socket path must be absolute, e.g. {example}")
        return ("unix", parts.path, 0)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"{json.dumps(url)} is not a broker URL; {usage}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{json.dumps(url)}: unexpected path or query after the host; {usage}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"{json.dumps(url)}: the port must be a number from 1 to 65535")
    return (parts.scheme, parts.hostname, port or (8883 if parts.scheme == "mqtts" else 1883))


def _unreadable(path: str) -> str:
    """Why ``path`` cannot be read as a file by this user, or an empty string."""
    p = Path(path)
    if not p.exists():
        return "no such file"
    if not p.is_file():
        return "not a regular file"
    if not os.access(p, os.R_OK):
        return f"not readable by this user (uid {os.geteuid()})"
    return ""


def check_config(cfg: Config, p: Problems, env: Mapping[str, str]) -> None:
    """The checks that span keys or look at the file system.

    A check is skipped when a key it reads already had a problem: that key holds its
    default now, and a complaint about it would only mislead.
    """
    _check_broker(cfg, p)
    if p.ok(("lanes",)):
        _check_lanes(cfg, p)
    r = cfg.retry
    if p.ok(("retry", "backoff_base"), ("retry", "backoff_cap")) and r.backoff_cap < r.backoff_base:
        p.add(("retry", "backoff_cap"), f"must be >= backoff_base ({r.backoff_base})")
    if cfg.daemon.state_dir and not os.path.isabs(cfg.daemon.state_dir):
        p.add(("daemon", "state_dir"), "must be an absolute path")
    for i, d in enumerate(cfg.daemon.plugin_dirs):
        if not Path(d).is_dir():
            p.add(("daemon", "plugin_dirs", i), f"{json.dumps(d)} is not a directory")
    if p.ok(("worker", "id")) and not re.match(NAME_PATTERN, cfg.worker.id):
        msg = f"{describe(cfg.worker.id)}: expected {NAME_HINT}"
        if ("worker", "id") in p.origins:
            p.add(("worker", "id"), msg)
        elif env.get("CLAWD_WORKER_ID"):
            p.add(("worker", "id"), msg, source="$CLAWD_WORKER_ID")
        else:
            p.add(("worker", "id"), msg + " (derived from the host name; set it)")
    if p.ok(("daemon", "roles")):
        for i, msg in role_problems(cfg.daemon.roles):
            p.add(("daemon", "roles", i), msg)
    if p.ok(("daemon", "roles")) and "worker" in cfg.daemon.roles:
        _check_exec(cfg, p)


#: the roles one clawd process can run, each at most once
ROLES = ("distributor", "worker")


def role_problems(roles: Sequence[str]) -> list[tuple[int, str]]:
    """(index, message) for each unknown or repeated role in ``roles``."""
    out: list[tuple[int, str]] = []
    seen: set[str] = set()
    for i, role in enumerate(roles):
        if role not in ROLES:
            known = ", ".join(json.dumps(r) for r in ROLES)
            out.append((i, f"{describe(role)}: expected one of {known}"))
        elif role in seen:
            out.append(
                (
                    i,
                    f"{json.dumps(role)} is listed twice; a process runs each role once "
                    "(two distributors over one journal would dispatch every task twice)",
                )
            )
        seen.add(role)
    return out


def check_roles(roles: Sequence[str], where: str = "--role") -> None:
    """Raise :class:`ConfigError` for roles given on the command line that are unknown or
    repeated (the config file's ``[daemon] roles`` is checked by :func:`check_config`)."""
    problems = role_problems(roles)
    if problems:
        raise ConfigError([f"{where}: {msg}" for _, msg in problems])


def _check_broker(cfg: Config, p: Problems) -> None:
    b = cfg.broker
    try:
        scheme = parse_broker_url(b.url)[0] if p.ok(("broker", "url")) else ""
    except ValueError as exc:
        p.add(("broker", "url"), str(exc))
        scheme = ""
    for key in ("password_file", "tls_ca", "tls_cert", "tls_key"):
        path = getattr(b, key)
        if path is not None and (why := _unreadable(path)):
            p.add(("broker", key), f"cannot read {json.dumps(path)}: {why}")
    if (b.tls_cert is None) != (b.tls_key is None):
        key = "tls_cert" if b.tls_cert is not None else "tls_key"
        p.add(("broker", key), "tls_cert and tls_key must be set together")
    tls = [k for k in ("tls_ca", "tls_cert", "tls_key") if getattr(b, k) is not None]
    if b.tls_insecure:
        tls.append("tls_insecure")
    if scheme and scheme != "mqtts" and tls:
        p.add(
            ("broker", tls[0]),
            f'TLS options apply only to "mqtts://" URLs, not {json.dumps(b.url)}',
        )
    if b.password_file is not None and not b.username:
        p.add(("broker", "password_file"), "set username too: MQTT sends a password only with one")


def _check_lanes(cfg: Config, p: Problems) -> None:
    lanes = sorted(cfg.lanes)
    defined = ", ".join(json.dumps(n) for n in lanes)
    default = cfg.distributor.default_lane
    if p.ok(("distributor", "default_lane")) and default not in cfg.lanes:
        msg = f"{json.dumps(default)} is not a defined lane (defined: {defined})"
        msg += did_you_mean(default, lanes)
        p.add(("distributor", "default_lane"), msg)
    for i, name in enumerate(cfg.worker.lanes if p.ok(("worker", "lanes")) else ()):
        if name not in cfg.lanes:
            p.add(
                ("worker", "lanes", i),
                f"{json.dumps(name)} is not a defined lane (defined: {defined})"
                + did_you_mean(name, lanes),
            )


def _check_exec(cfg: Config, p: Problems) -> None:
    # Only absolute commands can be checked here: a relative one is resolved when it runs.
    for name, ex in cfg.exec_commands().items():
        path = ("handlers", "exec", name)
        prog = ex.command[0]
        if os.path.isabs(prog) and not (os.path.isfile(prog) and os.access(prog, os.X_OK)):
            p.add((*path, "command", 0), f"{json.dumps(prog)} is not an executable file")
        if ex.cwd is not None and not Path(ex.cwd).is_dir():
            p.add((*path, "cwd"), f"{json.dumps(ex.cwd)} is not a directory")
