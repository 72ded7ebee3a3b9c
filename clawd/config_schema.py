"""The configuration's schema: one msgspec Struct per TOML table, with its defaults.

Bounds and name patterns are ``msgspec.Meta`` on the fields, so :mod:`clawd.config_walk`
can both enforce them and word the error; :mod:`clawd.config` loads files into these.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from clawd.config_walk import NAME_PATTERN
from clawd.schedule import ScheduleConfig

Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
#: a share of calls: 0.5 is 50 %
Share = Annotated[float, msgspec.Meta(gt=0, le=1)]


class BrokerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[broker]``: how to reach the MQTT broker. The password never lives here."""

    #: one url, or the nodes of a broker cluster (tried in turn when one fails)
    url: str | list[str] = "embedded"
    #: MQTT version: "auto" tries v5 and falls back to 3.1.1 when the broker refuses v5
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
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
    #: unset: SQLite in the state dir; "postgresql://user@host/db": a journal shared by
    #: several distributors, one of them active (docs/deployment.md)
    url: Annotated[
        str,
        msgspec.Meta(
            # no password in it (never read from the config file): user@, not user:pw@
            pattern=r"^((postgresql|postgres)://([^:@/]*@)?[^@]*)?$",
            extra={
                "hint": 'unset for SQLite, or "postgresql://user@host:5432/dbname", without a'
                " password: it goes in ~/.pgpass or a file named by ?passfile=... (mode 0600)",
                "secret": True,
            },
        ),
    ] = ""
    #: seconds a leading distributor may go silent before its lock is freed for a standby
    lock_timeout: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 5.0


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
    #: "N/s", "N/m" or "N/h": dispatches of this type across all workers (clawd.token_bucket)
    rate_limit: str | None = None


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


def default_lanes() -> dict[str, LaneConfig]:
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
    ] = msgspec.field(default_factory=default_lanes)
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
