"""The checks that span keys or look outside the file (a broker url, credentials, lanes,
exec commands, roles), run on the typed config once :mod:`clawd.config_walk` has found
every problem of shape; both report into one :class:`~clawd.config_walk.Problems`.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from clawd.errors import ConfigError

if TYPE_CHECKING:
    from clawd.config import Config

from clawd.config_walk import NAME_HINT, NAME_PATTERN, Problems, describe, did_you_mean

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
    scheme = ""
    urls = [b.url] if isinstance(b.url, str) else b.url
    if isinstance(b.url, str) and "," in b.url:
        urls = [u.strip() for u in b.url.split(",")]
    schemes = set()
    if not urls:
        p.add(("broker", "url"), "an empty list: name at least one broker url")
    for url in urls if p.ok(("broker", "url")) else []:
        try:
            scheme = parse_broker_url(url)[0]
        except ValueError as exc:
            p.add(("broker", "url"), str(exc))
            continue
        schemes.add(scheme)
    if len(urls) > 1 and "embedded" in schemes:
        p.add(("broker", "url"), '"embedded" cannot be one node of a list of broker urls')
    elif len(schemes) > 1:
        p.add(("broker", "url"), "the urls of one list must share one scheme (mqtt, mqtts or unix)")
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
