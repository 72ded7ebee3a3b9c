"""The internal wire: every message the distributor and the worker read from each other.

Each message kind has a msgspec Struct and one decoder. Decoding is the only validation
the loops need: a message that does not decode raises :class:`Unreadable` naming the
kind and what was wrong, and the loop reports it on ``<prefix>/errors`` and acknowledges
it. Nothing here raises anything else for any input bytes. Unknown fields are allowed
(a newer peer may send more); missing or mistyped ones are not.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from clawd.envelope import Task

NonNegative = Annotated[int, msgspec.Meta(ge=0)]
#: a task id and the attempt (fencing token) of one dispatch
Grant = tuple[str, NonNegative]


class Unreadable(Exception):
    """A message that is not what its topic promises; ``error`` says what was wrong."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class WorkerStatus(msgspec.Struct, kw_only=True):
    """A worker's retained status on ``<prefix>/workers/<id>``."""

    state: Literal["online", "draining", "offline"]
    session: str = ""
    #: wall time the worker process started: orders its incarnations (0: not said)
    boot: float = 0.0
    capacity: NonNegative = 0
    handlers: list[str] = msgspec.field(default_factory=list)
    capabilities: list[str] = msgspec.field(default_factory=list)
    lanes: list[str] = msgspec.field(default_factory=list)
    reason: str | None = None
    id: str | None = None
    in_flight: int = 0
    host: str | None = None
    pid: int | None = None
    since: float | None = None


class Outcome(msgspec.Struct, kw_only=True):
    """How one attempt ended, as the worker that ran it reports it."""

    id: str
    attempt: NonNegative
    status: Literal["ok", "error"]
    result: Any = msgspec.UNSET
    error: str | None = None
    code: str | None = None
    retryable: bool = True
    ms: float = 0.0


class Report(msgspec.Struct, kw_only=True):
    """A worker's report on ``<prefix>/_/done/<id>``: outcomes, what it still runs (its
    heartbeat) and, when it drains, what it hands back unfinished."""

    outcomes: list[Outcome] = msgspec.field(default_factory=list)
    running: list[Grant] = msgspec.field(default_factory=list)
    handback: list[Grant] = msgspec.field(default_factory=list)
    #: the worker's status, once per heartbeat interval: workers are found and judged
    #: from their heartbeats even where the broker delivers no retained status
    status: WorkerStatus | None = None


class Grants(msgspec.Struct, kw_only=True):
    """A dispatch message on ``<prefix>/_/dispatch/<worker>``: tasks to start, and
    dispatches to stop (cancelled: ``[task id, attempt]``)."""

    tasks: list[Task]
    cancel: list[Grant] = msgspec.field(default_factory=list)
    #: the sending distributor's epoch (:mod:`clawd.leader`): a worker ignores grants of
    #: an epoch older than the newest it has seen (a deposed distributor's)
    epoch: NonNegative = 0


class Control(msgspec.Struct, kw_only=True):
    """An operator command on ``<prefix>/_/control``.

    ``replay`` (``ids``, or every dead letter), ``purge``, ``task`` (``id``): where a
    task is, answered on the request's MQTT v5 response topic, and ``cancel`` (``ids``),
    answered there too when the request has one.
    """

    cmd: str
    ids: list[str] | None = None
    id: str | None = None
    #: where to answer when the request has no MQTT v5 response topic (MQTT 3.1.1)
    reply_to: str | None = None


class Progress(msgspec.Struct, kw_only=True):
    """A handler's progress report on ``<prefix>/progress/<id>``."""

    progress: float | None = None
    message: str | None = None
    id: str | None = None


class LaneDepth(msgspec.Struct, kw_only=True):
    """One lane of the retained metrics snapshot, as far as a worker reads it."""

    depth: int = 0


class Backlog(msgspec.Struct, kw_only=True):
    """The retained metrics snapshot (``<prefix>/metrics``) as an autoscaling worker
    reads it: the queue depth per lane; everything else in it is skipped."""

    lanes: dict[str, LaneDepth] = {}


CONTROL_COMMANDS = ("replay", "purge", "task", "cancel")

_status = msgspec.json.Decoder(WorkerStatus).decode
_report = msgspec.json.Decoder(Report).decode
_grants = msgspec.json.Decoder(Grants).decode
_control = msgspec.json.Decoder(Control).decode
_progress = msgspec.json.Decoder(Progress).decode
_backlog = msgspec.json.Decoder(Backlog).decode


def _decode(decoder: Any, kind: str, payload: bytes) -> Any:
    try:
        msg = decoder(payload)
        # msgspec skips unknown fields without reading them: bad bytes there are refused too
        payload.decode("utf-8")
        return msg
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise Unreadable(f"unreadable {kind}: {exc}") from None
    except (RecursionError, UnicodeDecodeError):
        raise Unreadable(f"unreadable {kind}: not valid UTF-8 JSON of a sane depth") from None


def worker_status(payload: bytes) -> WorkerStatus:
    """Decode a retained worker status."""
    return _decode(_status, "worker status", payload)  # type: ignore[no-any-return]


def report(payload: bytes) -> Report:
    """Decode a worker's report."""
    return _decode(_report, "worker report", payload)  # type: ignore[no-any-return]


def grants(payload: bytes) -> list[Task]:
    """Decode a dispatch message into its tasks."""
    return _decode(_grants, "dispatch message", payload).tasks  # type: ignore[no-any-return]


def dispatch(payload: bytes) -> Grants:
    """Decode a dispatch message: tasks to start and dispatches to stop."""
    return _decode(_grants, "dispatch message", payload)  # type: ignore[no-any-return]


def control(payload: bytes) -> Control:
    """Decode an operator command; an unknown ``cmd`` is unreadable too."""
    cmd: Control = _decode(_control, "control command", payload)
    if cmd.cmd not in CONTROL_COMMANDS:
        raise Unreadable(
            f"unknown control command {cmd.cmd!r} (known: {', '.join(CONTROL_COMMANDS)})"
        )
    if cmd.cmd == "task" and not cmd.id:
        raise Unreadable('control command "task" needs an "id"')
    if cmd.cmd == "cancel" and not cmd.ids:
        raise Unreadable('control command "cancel" needs "ids" (a non-empty list of task ids)')
    if cmd.reply_to is not None and (
        not cmd.reply_to or any(c in cmd.reply_to for c in "+#\0") or len(cmd.reply_to) > 512
    ):
        raise Unreadable(
            f'control command "reply_to" {cmd.reply_to[:80]!r} is not a topic to publish to '
            "(no +, #, NUL; 1-512 characters)"
        )
    return cmd


def progress(payload: bytes) -> Progress:
    """Decode a progress report."""
    return _decode(_progress, "progress report", payload)  # type: ignore[no-any-return]


def backlog(payload: bytes) -> Backlog:
    """Decode the metrics snapshot for the lane depths a worker scales by."""
    return _decode(_backlog, "metrics snapshot", payload)  # type: ignore[no-any-return]
