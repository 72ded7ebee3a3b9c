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

from clawd.config_check import (
    NAME_PATTERN,
    Origins,
    Problems,
    check_config,
    check_tables,
    dropins,
    merge,
    read_toml,
)
from clawd.errors import ConfigError

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
        if not path.exists():
            return None
    else:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError([f"{path}: cannot read the broker password: {why}"]) from None
    text = text[:-1] if text.endswith("\n") else text
    # an empty file (the unit's LoadCredential= needs one to exist) means "no password"
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


#: written by ``clawd config init``; etc/clawd.toml is a copy. Every value shown is the
#: default (a test loads it and compares), so editing a line is all a change takes.
SAMPLE = """\
# clawd configuration (TOML).
#
# Every key is shown with its default. Commented-out keys have no default or one worked
# out at start-up. conf.d/*.toml next to this file are merged over it in name order.
# "clawd config show" prints the effective configuration; any problem stops clawd with
# exit status 78 and a list naming file, key and fix.

[broker]
# "embedded" (a private mosquitto), "mqtt://host[:port]", "mqtts://host[:port]" or "unix:///path"
url = "embedded"
# MQTT client id; unset: clawd picks one
# client_id = "clawd-worker-1"
# user name for the broker
# username = "clawd"
# file holding the broker password (mode 0600); or systemd LoadCredential=broker-password
# password_file = "/etc/clawd/broker-password"
# CA certificates to verify the broker with (mqtts:// only)
# tls_ca = "/etc/ssl/certs/ca-certificates.crt"
# client certificate (mqtts:// only; set tls_key too)
# tls_cert = "/etc/clawd/client.crt"
# key of the client certificate
# tls_key = "/etc/clawd/client.key"
# skip verifying the broker's certificate: for tests only
tls_insecure = false
# seconds between keepalive pings; a dead peer is noticed after about 1.5 times this
keepalive = 5
# first level of every clawd topic (clawd/tasks/<lane>/<type>, ...)
prefix = "clawd"

[daemon]
# what this process does: "distributor", "worker" or both
roles = ["distributor", "worker"]
# journal and state; unset: $CLAWD_STATE_DIR, /var/lib/clawd as root, else ~/.local/state/clawd
# state_dir = "/var/lib/clawd"
# directories of drop-in plugin files (*.py); must not be group- or world-writable
plugin_dirs = []
# plugins (entry-point or drop-in names) not to load
disable_plugins = []
# "debug", "info", "warning" or "error"
log_level = "info"
# largest task or result payload in bytes (1 KiB to 256 MiB)
max_payload = 262144
# "normal": the journal survives a crash or kill -9 of clawd (SQLite WAL, no fsync per
# commit); "full": an fsync per commit, so it also survives power loss (slower)
journal_sync = "normal"

[worker]
# stable id, a topic level; unset: $CLAWD_WORKER_ID, else "<short host name>-1"
# id = "worker-1"
# tasks run at the same time
concurrency = 4
# what this worker offers, matched against a task's "requires"
capabilities = []
# lanes to take tasks from; empty: all lanes
lanes = []
# seconds a stopping worker lets running tasks finish before handing them back
drain_timeout = 30.0
# concurrency autoscaling: the fewest and most tasks at the same time; unset: concurrency
# (no autoscaling). Doubled under a backlog, lowered by one when idle.
# min_concurrency = 1
# max_concurrency = 16

[distributor]
# how a worker is picked: round_robin, hash, least_loaded, fastest, or a plugin's
strategy = "round_robin"
# seconds without a worker heartbeat before its tasks are requeued
liveness_timeout = 10.0
# lane of a task that names none
default_lane = "normal"
# times the worker running a task may vanish before it is dead-lettered as poison
poison_after = 3

# options for the strategy, as its documentation describes
[distributor.strategy_options]

# Priority lanes: higher weight, larger share, and no lane starves. A [lanes.<name>]
# table adds a lane or changes the weight of a built-in one.
[lanes.high]
# share of dispatches relative to the other lanes
weight = 8

[lanes.normal]
# share of dispatches relative to the other lanes
weight = 4

[lanes.low]
# share of dispatches relative to the other lanes
weight = 1

[retry]
# tries per task, the first included, before it is dead-lettered
max_attempts = 5
# seconds: base of the exponential backoff between attempts (with full jitter)
backoff_base = 0.5
# seconds: the longest backoff between attempts
backoff_cap = 30.0

# Autoscaling (docs/scaling.md). The distributor works out how many workers the queue
# needs; the built-in local scaler starts and stops worker processes on this machine.
[scaler]
# start and stop local worker processes following the recommended worker count
enabled = false
# the fewest worker processes the local scaler keeps running
min_workers = 0
# the most worker processes the local scaler starts (workers it did not start never count)
max_workers = 4
# seconds between two changes
cooldown = 10.0
# share of the worker slots meant to be busy, above 0 and at most 1
target_utilisation = 0.8
# seconds a queued task should wait at most
max_wait = 30.0
# a worker's argv, then --worker-id <host>-scaled-<n>; empty: this clawd, run as
# "python -m clawd [-c <this config file>] run --role worker"
command = []

# The retained clawd/metrics snapshot is always published; this adds a Prometheus
# endpoint with latency histograms (pip install 'clawd[prometheus]').
[metrics]
# 0: off; else the distributor serves /metrics on this port
prometheus_port = 0
# address the endpoint listens on
prometheus_addr = "127.0.0.1"

# Circuit breakers (docs/breakers.md): one per task type and one per (worker, type),
# each over its last calls; and ejection of a worker that keeps failing.
[breakers]
# false: no breakers and no ejection
enabled = true
# calls the failure and slow-call rates are computed over (the last this many)
window = 20
# calls the window must hold before a breaker may open
minimum_calls = 10
# share of failed calls (0-1] that opens a breaker
failure_rate = 0.5
# seconds above which a call is slow; unset: duration never opens a breaker
# slow_call_seconds = 10.0
# share of slow calls (0-1] that opens a breaker
slow_call_rate = 1.0
# seconds a breaker stays open before it lets probe calls through (half-open)
open_seconds = 10.0
# probe calls a half-open breaker lets through; their outcome closes or reopens it
half_open_calls = 3
# consecutive failures (any type) after which a worker is ejected
eject_after = 5
# seconds of a first ejection; doubled for each repeat, up to 10 times this
eject_seconds = 30.0
# largest share [0-1] of the known workers ejected at once; 0: never eject
max_ejected = 0.5
# seconds a type's tasks wait while its breaker is open before they are dead-lettered
hold_seconds = 60.0

# Per task type: [breakers.types.<type>] with any key above except eject_after,
# eject_seconds and max_ejected; keys left out keep the values above.
[breakers.types]
# [breakers.types.shout]
# failure_rate = 0.2
# open_seconds = 60.0

# Settings for one task type: [handlers.<type>]
# [handlers.compute]
# enabled = true          # false: this worker does not offer the type
# timeout = 60.0          # seconds; unset: the handler's own
# max_attempts = 3        # unset: [retry] max_attempts

# An external command as task type <type>: [handlers.exec.<type>]. The task is JSON on
# stdin and in $CLAW_MESSAGE; stdout is the result. argv only, never a shell.
# [handlers.exec.shout]
# command = ["/usr/bin/tr", "a-z", "A-Z"]   # program and arguments
# timeout = 30.0                             # seconds before the process group is killed
# cwd = "/tmp"                               # working directory of the command
# env = { LC_ALL = "C" }                     # environment added for the command
# max_output = 1048576                       # bytes of output kept
# description = "upper-cases its input"      # one line about the task type
"""
