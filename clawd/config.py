"""Configuration: loading the main file and conf.d, secrets, dump and sample.

The schema is in :mod:`clawd.config_schema`. Everything is checked before anything
connects, and every problem is reported at once (:class:`ConfigError`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import msgspec
import msgspec.inspect
import msgspec.structs
import tomli_w

from clawd.config_check import check_config
from clawd.config_files import Origins, dropins, merge, read_toml
from clawd.config_sample import SAMPLE as SAMPLE  # re-exported: `clawd config init`
from clawd.config_schema import (
    BreakerConfig,
    BreakerTypeConfig,
    BrokerConfig,
    Config,
    DaemonConfig,
    DistributorConfig,
    ExecConfig,
    HandlerConfig,
    JournalConfig,
    LaneConfig,
    MetricsConfig,
    Name,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    RetryConfig,
    ScalerConfig,
    Share,
    WorkerConfig,
    default_lanes,
    default_state_dir,
    default_worker_id,
)
from clawd.config_walk import Problems, check_tables
from clawd.durations import parse_duration
from clawd.errors import ConfigError
from clawd.schedule import problems as schedule_problems
from clawd.token_bucket import parse_rate

#: the schema (clawd.config_schema) is part of this module's interface: code that reads a
#: config imports its types from here, next to load()
__all__ = [
    "BreakerConfig",
    "BreakerTypeConfig",
    "BrokerConfig",
    "Config",
    "DaemonConfig",
    "DistributorConfig",
    "ExecConfig",
    "HandlerConfig",
    "JournalConfig",
    "LaneConfig",
    "MetricsConfig",
    "Name",
    "NonNegativeInt",
    "PositiveFloat",
    "PositiveInt",
    "RetryConfig",
    "ScalerConfig",
    "Share",
    "WorkerConfig",
    "default_state_dir",
    "default_worker_id",
    "SAMPLE",
    "DEFAULT_PATH",
    "EX_CONFIG",
    "CREDENTIAL_NAME",
    "resolve_path",
    "load",
    "read_password",
    "dump",
]

DEFAULT_PATH = Path("/etc/clawd/clawd.toml")
#: sysexits EX_CONFIG: systemd's RestartPreventExitStatus=78 stops a restart loop on it
EX_CONFIG = 78
#: the systemd credential (``LoadCredential=broker-password:...``) read for the password
CREDENTIAL_NAME = "broker-password"


def resolve_path(path: str | None, env: Mapping[str, str] = os.environ) -> Path | None:
    """The main config file: ``-c``, else ``$CLAWD_CONFIG``, else /etc/clawd/clawd.toml if it
    exists; None means built-in defaults."""
    if path:
        return Path(path)
    if env.get("CLAWD_CONFIG"):
        return Path(env["CLAWD_CONFIG"])
    if DEFAULT_PATH.exists():
        return DEFAULT_PATH
    return None


# -- loading ---------------------------------------------------------------------------


def _build(
    data: dict[str, Any], origins: Origins, sources: list[str], env: Mapping[str, str]
) -> Config:
    """Check ``data`` against the schema, convert it and run the cross-key checks."""
    p = Problems(origins, sources[0] if sources else "built-in defaults")
    config_t, handler_t, exec_t = (
        msgspec.inspect.type_info(t) for t in (Config, HandlerConfig, ExecConfig)
    )
    _ejection_per_type(data, p)
    _durations(data, p)
    good = check_tables(data, p, cast(msgspec.inspect.StructType, config_t), handler_t, exec_t)
    try:
        cfg = msgspec.convert(good, Config)
        cfg.handlers = {
            name: {k: msgspec.convert(v, ExecConfig) for k, v in raw.items()}
            if name == "exec"
            else msgspec.convert(raw, HandlerConfig)
            for name, raw in cfg.handlers.items()
        }
    except msgspec.ValidationError as exc:  # a gap in the walker; still say where
        raise ConfigError([*p.messages, f"{p.fallback}: {exc}"]) from None
    cfg.sources = sources
    cfg.daemon.state_dir = cfg.daemon.state_dir or default_state_dir(env)
    cfg.worker.id = cfg.worker.id or env.get("CLAWD_WORKER_ID") or default_worker_id()
    check_config(cfg, p, env)
    _check_scaling(cfg, p)
    _check_breakers(cfg, p)
    _check_schedules(cfg, p)
    _check_rates(cfg, p)
    if p.messages:
        raise ConfigError(p.messages)
    return cfg


def _check_scaling(cfg: Config, p: Problems) -> None:
    """Fill in the concurrency limits and check that the scaling limits are in order."""
    w = cfg.worker
    lo, hi = ("worker", "min_concurrency"), ("worker", "max_concurrency")
    low, high = w.min_concurrency, w.max_concurrency
    if p.ok(("worker", "concurrency"), lo) and low is not None and low > w.concurrency:
        p.add(lo, f"must be <= concurrency ({w.concurrency})")
    if p.ok(("worker", "concurrency"), hi) and high is not None and high < w.concurrency:
        p.add(hi, f"must be >= concurrency ({w.concurrency})")
    w.min_concurrency, w.max_concurrency = w.concurrency_limits
    s = cfg.scaler
    keys = (("scaler", "min_workers"), ("scaler", "max_workers"))
    if p.ok(*keys) and s.min_workers > s.max_workers:
        p.add(keys[1], f"must be >= min_workers ({s.min_workers})")


#: keys of ``[breakers]`` that a ``[breakers.types.<type>]`` table cannot override
_EJECTION_KEYS = ("eject_after", "eject_seconds", "max_ejected")


def _ejection_per_type(data: dict[str, Any], p: Problems) -> None:
    """Say why an ejection key in ``[breakers.types.<type>]`` is wrong, rather than the
    walker's "unknown key": it is a real key, in the wrong table."""
    breakers = data.get("breakers")
    types = breakers.get("types") if isinstance(breakers, dict) else None
    for name, table in types.items() if isinstance(types, dict) else ():
        for key in [k for k in _EJECTION_KEYS if isinstance(table, dict) and k in table]:
            path = ("breakers", "types", name)
            msg = (
                f'"{key}" cannot be set per task type: ejection takes a worker out for every '
                "type at once; set it in [breakers]"
            )
            p.add(path, msg, table=True, source=p.source((*path, key)), key=(*path, key))
            del table[key]


#: keys that take a duration ("7d", "90s") as well as a number of seconds
_DURATION_KEYS = (("journal", "retention"), ("journal", "lock_timeout"))


def _durations(data: dict[str, Any], p: Problems) -> None:
    """Turn duration text into seconds before the schema (a number) is checked."""
    for table, key in _DURATION_KEYS:
        section = data.get(table)
        if not isinstance(section, dict) or key not in section:
            continue
        try:
            section[key] = parse_duration(section[key])
        except ValueError as exc:
            p.add((table, key), str(exc))
            del section[key]


def _check_breakers(cfg: Config, p: Problems) -> None:
    """``minimum_calls`` above ``window`` would make a breaker that can never open."""
    never = "a breaker that keeps fewer calls than it needs to judge would never open"
    b = cfg.breakers
    top = (("breakers", "window"), ("breakers", "minimum_calls"))
    if p.ok(*top) and b.minimum_calls > b.window:
        p.add(top[1], f"must be <= window ({b.window}): {never}")
    for name, over in b.types.items():
        path = ("breakers", "types", name)
        if over.window is None and over.minimum_calls is None:
            continue  # inherits both: the check above covers it
        if not p.ok(*top, (*path, "window"), (*path, "minimum_calls")):
            continue
        s = b.for_type(name)
        if s.minimum_calls > s.window:
            key = "minimum_calls" if over.minimum_calls is not None else "window"
            msg = f"minimum_calls ({s.minimum_calls}) must be <= window ({s.window}): {never}"
            p.add((*path, key), msg)


def _check_schedules(cfg: Config, p: Problems) -> None:
    """Each ``[schedules.<name>]``: one of every/cron, a valid expression, a valid task."""
    if not p.ok(("schedules",), ("lanes",), ("distributor", "default_lane")):
        return
    for name, sc in cfg.schedules.items():
        path = ("schedules", name)
        if not p.ok(path):
            continue
        found = schedule_problems(sc, lanes=cfg.lanes, default_lane=cfg.distributor.default_lane)
        for key, msg in found:
            if (*path, key) in p.origins:
                p.add((*path, key), msg)
            else:
                p.add(path, msg, table=True)


def _check_rates(cfg: Config, p: Problems) -> None:
    """Each ``[handlers.<type>] rate_limit`` is a rate such as "100/s"."""
    for name, hc in cfg.handlers.items():
        if not isinstance(hc, HandlerConfig) or hc.rate_limit is None:
            continue
        try:
            parse_rate(hc.rate_limit)
        except ValueError as exc:
            p.add(("handlers", name, "rate_limit"), str(exc))


def load(path: str | None = None, env: Mapping[str, str] = os.environ) -> Config:
    """Load the main file and its conf.d drop-ins, merge and validate them.

    Raises :class:`ConfigError` listing every problem; syntax errors in all files are
    reported before the schema is checked (a half-read config gives misleading problems).
    """
    main = resolve_path(path, env)
    problems: list[str] = []
    files = [] if main is None else [main, *dropins(main, problems)]
    data: dict[str, Any] = {}
    origins: Origins = {}
    for file in files:
        table = read_toml(file, problems)
        if table is not None:
            merge(data, table, str(file), origins)
    if problems:
        raise ConfigError(problems)
    if isinstance(data.get("lanes"), dict):
        # [lanes.<name>] tables add lanes or re-weight the built-in ones
        lanes: dict[str, Any] = {n: {"weight": lc.weight} for n, lc in default_lanes().items()}
        lanes.update(data["lanes"])
        data["lanes"] = lanes
    return _build(data, origins, [str(f) for f in files], env)


# -- secrets and output ----------------------------------------------------------------


def read_password(broker: BrokerConfig, env: Mapping[str, str] = os.environ) -> str | None:
    """The broker password: ``password_file``, else the systemd credential
    ``$CREDENTIALS_DIRECTORY/broker-password``, else None. One trailing newline is dropped.

    Errors name the file, never its content.
    """
    if broker.password_file is not None:
        path = Path(broker.password_file)
    elif env.get("CREDENTIALS_DIRECTORY"):
        path = Path(env["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME
        try:
            if not path.exists():
                return None
        except OSError as exc:  # the credentials directory itself is unreadable
            raise ConfigError(
                [f"{path}: cannot read the broker password credential: {exc.strerror}"]
            ) from None
    else:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError([f"{path}: cannot read the broker password: {why}"]) from None
    text = text[:-1] if text.endswith("\n") else text
    # empty (the unit's SetCredential= default when no file is configured) means no password
    return text or None


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def dump(cfg: Config) -> str:
    """The effective config as TOML, headed by a comment naming its sources.

    TOML has no null, so unset keys are left out; there is no password to leak.
    """
    data = _drop_none(msgspec.to_builtins(cfg))
    data.pop("sources", None)
    header = "# Effective clawd configuration, merged from:\n"
    header += "".join(f"#   {s}\n" for s in cfg.sources) or "#   (built-in defaults)\n"
    return header + "\n" + tomli_w.dumps(data)
