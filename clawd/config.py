"""Configuration: the schema, loading the main file and conf.d, secrets, dump and sample.

The schema is msgspec Structs; bounds and name patterns are ``msgspec.Meta`` on the fields,
so :mod:`clawd.config_check` can both enforce them and word the error. Everything is checked
before anything connects, and every problem is reported at once (:class:`ConfigError`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import msgspec
import msgspec.inspect
import msgspec.structs
import tomli_w

from clawd.config_check import NAME_PATTERN, Problems, check_config, check_tables
from clawd.config_files import Origins, dropins, merge, read_toml
from clawd.config_sample import SAMPLE as SAMPLE  # re-exported: `clawd config init`
from clawd.durations import parse_duration
from clawd.errors import ConfigError
from clawd.schedule import ScheduleConfig
from clawd.schedule import problems as schedule_problems

DEFAULT_PATH = Path("/etc/clawd/clawd.toml")
#: sysexits EX_CONFIG: systemd's RestartPreventExitStatus=78 stops a restart loop on it
EX_CONFIG = 78
#: the systemd credential (``LoadCredential=broker-password:...``) read for the password
CREDENTIAL_NAME = "broker-password"

Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
#: a share of calls: 0.5 is 50 %
Share = Annotated[float, msgspec.Meta(gt=0, le=1)]


class BrokerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[broker]``: how to reach the MQTT broker. The password never lives here."""

    url: str = "embedded"
    client_id: str | None = None
    username: str | None = None
    password_file: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_insecure: bool = False
    keepalive: PositiveInt = 5
    prefix: Name = "clawd"


class DaemonConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[daemon]``: roles and process-wide settings."""

    roles: Annotated[list[Literal["distributor", "worker"]], msgspec.Meta(min_length=1)] = (
        msgspec.field(default_factory=lambda: ["distributor", "worker"])
    )
    #: empty: :func:`default_state_dir`, filled in by :func:`load`
    state_dir: str = ""
    plugin_dirs: list[str] = msgspec.field(default_factory=list)
    disable_plugins: list[str] = msgspec.field(default_factory=list)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_payload: Annotated[
        int, msgspec.Meta(ge=1024, le=256 * 1024 * 1024, extra={"hint": "1 KiB to 256 MiB"})
    ] = 256 * 1024
    #: "normal": a commit survives a crash of clawd (kill -9); "full": also power loss
    journal_sync: Literal["normal", "full"] = "normal"


class JournalConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[journal]``: how long the distributor's journal remembers finished tasks."""

    #: seconds a terminal task (its result, and its id for deduplication) is kept; 0: for
    #: ever. A duration such as "7d" in the file is converted by :func:`load`.
    retention: Annotated[float, msgspec.Meta(ge=0)] = 7 * 86_400.0


class WorkerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[worker]``: what this worker offers."""

    #: empty: ``$CLAWD_WORKER_ID`` or :func:`default_worker_id`, filled in by :func:`load`
    id: str = ""
    concurrency: PositiveInt = 4
    capabilities: list[str] = msgspec.field(default_factory=list)
    #: empty means every lane
    lanes: list[str] = msgspec.field(default_factory=list)
    #: seconds a stopping worker lets running tasks finish before handing them back
    drain_timeout: PositiveFloat = 30.0
    #: concurrency autoscaling limits; unset: ``concurrency`` (no autoscaling), filled in
    #: by :func:`load`
    min_concurrency: PositiveInt | None = None
    max_concurrency: PositiveInt | None = None

    @property
    def concurrency_limits(self) -> tuple[int, int]:
        """``(min_concurrency, max_concurrency)``, each defaulting to ``concurrency``."""
        return (
            self.min_concurrency or self.concurrency,
            self.max_concurrency or self.concurrency,
        )


class DistributorConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[distributor]``: scheduling."""

    strategy: Annotated[str, msgspec.Meta(min_length=1)] = "round_robin"
    strategy_options: dict[str, Any] = msgspec.field(default_factory=dict)
    #: seconds without a worker heartbeat before its tasks are requeued
    liveness_timeout: PositiveFloat = 10.0
    default_lane: str = "normal"
    #: times the worker running a task may vanish before the task is dead-lettered (poison)
    poison_after: PositiveInt = 3
    #: seconds after a worker went offline before its status, breakers and metrics go
    forget_after: PositiveFloat = 3600.0


class LaneConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[lanes.<name>]``: a priority lane; higher weight, larger share."""

    weight: PositiveInt = 1


class RetryConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[retry]``: capped exponential backoff with full jitter."""

    max_attempts: PositiveInt = 5
    backoff_base: PositiveFloat = 0.5
    backoff_cap: PositiveFloat = 30.0


class ScalerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[scaler]``: the scaling signals, and the built-in local scaler that starts and
    stops worker processes on the distributor's machine."""

    enabled: bool = False
    min_workers: NonNegativeInt = 0
    max_workers: NonNegativeInt = 4
    #: seconds between two changes
    cooldown: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    target_utilisation: Annotated[
        float, msgspec.Meta(gt=0, le=1, extra={"hint": "a share of the slots, e.g. 0.8"})
    ] = 0.8
    #: seconds a queued task should wait at most
    max_wait: PositiveFloat = 30.0
    #: a worker's argv; empty: this clawd, ``python -m clawd [-c FILE] run --role worker``
    command: list[Annotated[str, msgspec.Meta(min_length=1)]] = msgspec.field(default_factory=list)


class MetricsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[metrics]``: the optional Prometheus endpoint of the distributor."""

    #: 0: off; else serve /metrics on this port (needs the ``prometheus`` extra)
    prometheus_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    prometheus_addr: str = "127.0.0.1"


class BreakerTypeConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[breakers.types.<type>]``: circuit-breaker settings for one task type.

    Every key is optional; one left out inherits ``[breakers]`` (:meth:`BreakerConfig.for_type`).
    The ejection keys are not here: ejection takes a worker out for every type at once.
    """

    enabled: bool | None = None
    window: PositiveInt | None = None
    minimum_calls: PositiveInt | None = None
    failure_rate: Share | None = None
    slow_call_seconds: PositiveFloat | None = None
    slow_call_rate: Share | None = None
    open_seconds: PositiveFloat | None = None
    half_open_calls: PositiveInt | None = None
    hold_seconds: PositiveFloat | None = None


class BreakerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[breakers]``: circuit breakers per task type and per (worker, type), and ejection
    of a worker after consecutive failures. See docs/breakers.md."""

    enabled: bool = True
    #: the last this many calls are what the rates are computed over
    window: PositiveInt = 20
    #: no opening before the window holds this many calls: 1 failure in 1 call is no signal
    minimum_calls: PositiveInt = 10
    failure_rate: Share = 0.5
    #: unset: call duration never opens a breaker
    slow_call_seconds: PositiveFloat | None = None
    slow_call_rate: Share = 1.0
    open_seconds: PositiveFloat = 10.0
    half_open_calls: PositiveInt = 3
    eject_after: PositiveInt = 5
    eject_seconds: PositiveFloat = 30.0
    max_ejected: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.5
    #: how long a type's tasks wait while its breaker is open before they are dead-lettered
    hold_seconds: PositiveFloat = 60.0
    types: dict[Name, BreakerTypeConfig] = msgspec.field(default_factory=dict)

    def for_type(self, type_name: str) -> BreakerConfig:
        """The settings for ``type_name``: its ``[breakers.types.<type>]`` keys over these.

        The result has no ``types`` of its own (it is one type's view).
        """
        over = self.types.get(type_name)
        changes: dict[str, Any] = {}
        if over is not None:
            for name in over.__struct_fields__:
                value = getattr(over, name)
                if value is not None:
                    changes[name] = value
        return msgspec.structs.replace(self, types={}, **changes)


class HandlerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[handlers.<type>]``: overrides for one task type."""

    enabled: bool = True
    timeout: PositiveFloat | None = None
    max_attempts: PositiveInt | None = None


class ExecConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[handlers.exec.<type>]``: an external command run as task type ``<type>``."""

    command: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1)]],
        msgspec.Meta(min_length=1, extra={"hint": 'argv, e.g. ["/usr/bin/tr", "a-z", "A-Z"]'}),
    ]
    timeout: PositiveFloat = 30.0
    cwd: str | None = None
    #: may hold tokens for the command, so its values never appear in errors
    env: Annotated[dict[str, str], msgspec.Meta(extra={"secret": True})] = msgspec.field(
        default_factory=dict
    )
    max_output: PositiveInt = 1024 * 1024
    description: str = ""


def _default_lanes() -> dict[str, LaneConfig]:
    return {
        "high": LaneConfig(weight=8),
        "normal": LaneConfig(weight=4),
        "low": LaneConfig(weight=1),
    }


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The whole configuration; build it with :func:`load`."""

    broker: BrokerConfig = msgspec.field(default_factory=BrokerConfig)
    daemon: DaemonConfig = msgspec.field(default_factory=DaemonConfig)
    worker: WorkerConfig = msgspec.field(default_factory=WorkerConfig)
    distributor: DistributorConfig = msgspec.field(default_factory=DistributorConfig)
    journal: JournalConfig = msgspec.field(default_factory=JournalConfig)
    lanes: Annotated[
        dict[Name, LaneConfig],
        msgspec.Meta(min_length=1, extra={"hint": "define at least one [lanes.<name>] table"}),
    ] = msgspec.field(default_factory=_default_lanes)
    retry: RetryConfig = msgspec.field(default_factory=RetryConfig)
    scaler: ScalerConfig = msgspec.field(default_factory=ScalerConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    breakers: BreakerConfig = msgspec.field(default_factory=BreakerConfig)
    #: ``[handlers.<type>]`` settings, and ``[handlers.exec.<type>]`` commands
    handlers: dict[str, Any] = msgspec.field(default_factory=dict)
    #: ``[schedules.<name>]``: tasks submitted periodically (clawd.schedule)
    schedules: dict[Name, ScheduleConfig] = msgspec.field(default_factory=dict)
    #: where the config came from (not a TOML key)
    sources: list[str] = msgspec.field(default_factory=list)

    @property
    def state_path(self) -> Path:
        """The state directory as a Path."""
        return Path(self.daemon.state_dir)

    @property
    def worker_id(self) -> str:
        """This worker's id (a topic level)."""
        return self.worker.id

    def handler_config(self, type_name: str) -> HandlerConfig:
        """The ``[handlers.<type>]`` settings, or the defaults when there is no table."""
        raw = self.handlers.get(type_name)
        if isinstance(raw, HandlerConfig):
            return raw
        return HandlerConfig()

    def breaker_config(self, type_name: str) -> BreakerConfig:
        """The circuit-breaker settings for a task type: ``[breakers.types.<type>]`` over
        ``[breakers]``, key by key."""
        return self.breakers.for_type(type_name)

    def exec_commands(self) -> dict[str, ExecConfig]:
        """Every ``[handlers.exec.<type>]`` command, by task type."""
        raw = self.handlers.get("exec") or {}
        return {k: v for k, v in raw.items() if isinstance(v, ExecConfig)}


def default_state_dir(env: Mapping[str, str] = os.environ) -> str:
    """``$CLAWD_STATE_DIR``, else /var/lib/clawd for root, else the XDG state dir."""
    if env.get("CLAWD_STATE_DIR"):
        return env["CLAWD_STATE_DIR"]
    if os.geteuid() == 0:
        return "/var/lib/clawd"
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(base) / "clawd")


def default_worker_id() -> str:
    """``<short host name>-1``: stable across restarts on one host."""
    return f"{socket.gethostname().split('.')[0]}-1"


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
_DURATION_KEYS = (("journal", "retention"),)


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
        lanes: dict[str, Any] = {n: {"weight": lc.weight} for n, lc in _default_lanes().items()}
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
