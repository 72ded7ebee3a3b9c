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
    if p.messages:
        raise ConfigError(p.messages)
    return cfg


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
