"""The wire format: task envelopes in, results and rejections out.

Every way a submission can be wrong ends here as a :class:`Rejected` that names the
problem; nothing in this module raises anything else for any input bytes.
"""

from __future__ import annotations

import difflib
import json
import re
import uuid
from collections.abc import Set as AbstractSet
from typing import Annotated, Any

import msgspec

from clawd import clock
from clawd.timing import BadTime, start_time

ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")
NAME_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}\Z")
EXCERPT = 200
#: a task type named like this is a claw.events tasks channel (clawd.channels): its tasks
#: are accepted before any worker serves it, and wait for one
CHANNEL_SUFFIX = ".tasks"

PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
Attempts = Annotated[int, msgspec.Meta(ge=1, le=1000)]


class Rejected(Exception):
    """A submission that cannot become a task. ``task_id`` is set when a valid id was known."""

    def __init__(self, error: str, task_id: str | None = None):
        super().__init__(error)
        self.error = error
        self.task_id = task_id


class Envelope(msgspec.Struct, forbid_unknown_fields=True):
    """What a producer publishes (DESIGN.md section 2). ``task`` is an alias of ``input``."""

    type: str | None = None
    input: Any = msgspec.UNSET
    task: Any = msgspec.UNSET
    id: str | None = None
    lane: str | None = None
    requires: list[str] = msgspec.field(default_factory=list)
    timeout: PositiveFloat | None = None
    max_attempts: Attempts | None = None
    meta: dict[str, Any] | None = None
    #: seconds the task may wait before it starts; expired tasks are dead-lettered
    ttl: PositiveFloat | None = None
    #: relative cost hint for strategies
    cost: Annotated[float, msgspec.Meta(ge=0)] | None = None
    #: seconds to wait before the task may start (see clawd.timing)
    delay: Any = None
    #: the earliest start: epoch seconds or an RFC 3339 date-time
    not_before: Any = None
    #: what runs after this task succeeds, with its result as input (clawd.workflow)
    then: Any = None
    #: a group's members (``"type": "group"``, clawd.workflow)
    tasks: Any = msgspec.UNSET
    #: a group runs its ``then`` even when members failed (their results are null)
    allow_failures: bool | None = None


class Task(msgspec.Struct, omit_defaults=True, kw_only=True):
    """A task as the distributor journals it and a worker receives it."""

    id: str
    type: str
    lane: str
    input: Any = None
    requires: list[str] = msgspec.field(default_factory=list)
    timeout: float | None = None
    max_attempts: int | None = None
    meta: dict[str, Any] | None = None
    cost: float | None = None
    expires_at: float | None = None
    #: epoch seconds before which it is not dispatched (``delay`` or ``not_before``)
    not_before: float | None = None
    submitted_at: float = 0.0
    attempt: int = 0
    #: the envelope that runs after this task succeeds (its id and lane filled in)
    then: dict[str, Any] | None = None


_envelope_decoder = msgspec.json.Decoder(Envelope)
_any_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def encode(obj: Any) -> bytes:
    """JSON-encode for the wire (msgspec: fast, and never NaN)."""
    return _encoder.encode(obj)


def decode(data: bytes) -> Any:
    return _any_decoder.decode(data)


def new_id() -> str:
    return uuid.uuid4().hex


def excerpt(payload: bytes) -> str:
    """A printable, bounded excerpt of a payload for error reports."""
    text = payload[:EXCERPT].decode("utf-8", "replace")
    return text + ("..." if len(payload) > EXCERPT else "")


def check_id(value: Any) -> str:
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        shown = repr(value)[:60]
        raise Rejected(
            f"invalid id {shown}: ids are 1-128 characters of A-Z a-z 0-9 . _ : - "
            "(they become MQTT topic levels)"
        )
    return value


def _decode_error(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "payload is nested too deeply"
    return f"invalid JSON: {exc}"


def parse_submission(
    levels: list[str],
    payload: bytes,
    *,
    lanes: Any,
    max_payload: int,
    expiry: float | None = None,
    now: float | None = None,
    known_types: AbstractSet[str] | None = None,
) -> Task:
    """Turn a message on ``<prefix>/tasks/<lane>[/<type>]`` into a Task or raise Rejected
    (see :func:`parse_envelope`)."""
    return parse_envelope(
        levels,
        payload,
        lanes=lanes,
        max_payload=max_payload,
        expiry=expiry,
        now=now,
        known_types=known_types,
    )[0]


def parse_envelope(
    levels: list[str],
    payload: bytes,
    *,
    lanes: Any,
    max_payload: int,
    expiry: float | None = None,
    now: float | None = None,
    known_types: AbstractSet[str] | None = None,
) -> tuple[Task, bool]:
    """Turn a message on ``<prefix>/tasks/<lane>[/<type>]`` into a Task or raise Rejected.

    ``levels`` are the topic levels after the prefix (``["tasks", lane, type?]``);
    ``lanes`` is the set of configured lane names; ``expiry`` the MQTT v5 Message
    Expiry Interval when the publisher set one; ``known_types`` are the task types
    some handler serves (omit it to accept any type). Returns the task and whether the
    producer chose its id, as the decoded envelope says however the key was spelt
    (``"\\u0069d"`` is ``"id"``): only such an id can already be known. A group
    (:mod:`clawd.workflow`) is rejected here: see :func:`parse_item`.
    """
    item, chosen = parse_item(
        levels,
        payload,
        lanes=lanes,
        max_payload=max_payload,
        expiry=expiry,
        now=now,
        known_types=known_types,
    )
    if not isinstance(item, Task):
        raise Rejected("a group is not accepted here, only a single task", item.id)
    return item, chosen


def parse_item(
    levels: list[str],
    payload: bytes,
    *,
    lanes: Any,
    max_payload: int,
    expiry: float | None = None,
    now: float | None = None,
    known_types: AbstractSet[str] | None = None,
    depth: int = 0,
) -> tuple[Any, bool]:
    """:func:`parse_envelope`, and a group too: returns a Task or a
    :class:`clawd.workflow.Group`, and whether the producer chose its id. ``depth``
    counts the groups and ``then`` envelopes this one is nested in."""
    from clawd import workflow

    if len(payload) > max_payload:
        raise Rejected(f"payload of {len(payload)} bytes is over the limit of {max_payload}")
    if len(levels) not in (2, 3) or not all(levels[1:]):
        raise Rejected("topic must be <prefix>/tasks/<lane> or <prefix>/tasks/<lane>/<type>")
    lane = levels[1]
    topic_type = levels[2] if len(levels) == 3 else None

    stripped = payload.lstrip()
    if stripped[:1] == b"{":
        try:
            env = _envelope_decoder.decode(payload)
        except (
            msgspec.DecodeError,
            msgspec.ValidationError,
            RecursionError,
            UnicodeDecodeError,
        ) as exc:
            raise Rejected(_envelope_error(exc, payload)) from None
        if _may_repeat_fields(payload):
            duplicate = _duplicate_field(payload)
            if duplicate is not None:
                raise Rejected(
                    f'invalid task envelope: field "{duplicate}" appears more than once '
                    "(JSON parsers disagree on which one wins, so clawd takes neither)"
                )
    elif topic_type is None:
        raise Rejected(
            "a task on <prefix>/tasks/<lane> must be a JSON object envelope "
            '({"type": ..., "input": ...}); publish raw input to <prefix>/tasks/<lane>/<type>'
        )
    else:
        env = Envelope(type=topic_type, input=_raw_input(stripped, payload))

    task_id = check_id(env.id) if env.id is not None else new_id()
    try:
        if workflow.is_group(env, topic_type):
            group = workflow.build_group(
                env,
                task_id,
                lane,
                topic_type,
                lanes=lanes,
                now=now,
                known_types=known_types,
                depth=depth,
            )
            return group, env.id is not None
        task = _build(env, task_id, lane, topic_type, lanes, expiry, now)
        if (
            known_types is not None
            and task.type not in known_types
            and not task.type.endswith(CHANNEL_SUFFIX)
        ):
            shown = ", ".join(sorted(known_types)) or "none yet"
            raise Rejected(f"unknown task type {task.type!r} (known: {shown})")
        if env.then is not None:
            task.then = workflow.check_then(
                env.then, task.id, lane, lanes=lanes, known_types=known_types, depth=depth
            )
        return task, env.id is not None
    except Rejected as exc:
        # a rejected result goes to results/<id> only when the producer chose the id
        exc.task_id = env.id
        raise


def _envelope_error(exc: Exception, payload: bytes) -> str:
    # judged on the payload, not on the wording or class of msgspec's error (0.23 reports
    # bad UTF-8 as a DecodeError, 0.22 as a UnicodeDecodeError)
    if isinstance(exc, UnicodeDecodeError) or not _is_utf8(payload):
        return _utf8_error(payload)
    if not isinstance(exc, msgspec.ValidationError):
        if not isinstance(exc, RecursionError) and _LONE_SURROGATE.search(payload):
            return (
                "invalid JSON: unpaired UTF-16 surrogate escape (a \\uD800-\\uDFFF escape "
                "must be half of a pair)"
            )
        return _decode_error(exc) + _json_hint(payload)
    message = str(exc)
    unknown = re.match(r"Object contains unknown field `(.*)`", message)
    if unknown:
        close = difflib.get_close_matches(unknown.group(1), Envelope.__struct_fields__, 1)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        return f'invalid task envelope: unknown field "{unknown.group(1)}"{hint}'
    return f"invalid task envelope: {message}"


def _json_hint(payload: bytes) -> str:
    """Name the usual culprits of a JSON syntax error; only runs on the error path."""
    if _NON_FINITE.search(payload):
        return " (NaN and Infinity are not JSON numbers)"
    return ""


# ``"type"`` and the like as raw bytes: a field can only repeat if its quoted name does,
# unless a name is spelt with \u escapes; anything else skips the slow check
_FIELD_TOKENS = re.compile(
    b'"(' + b"|".join(re.escape(n.encode()) for n in Envelope.__struct_fields__) + b')"'
)
_LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
_NON_FINITE = re.compile(rb"(?<![\w\"])-?(?:NaN|Infinity)\b")


def _may_repeat_fields(payload: bytes) -> bool:
    if b"\\u" in payload:
        return True
    names = _FIELD_TOKENS.findall(payload)
    return len(names) != len(set(names))


def _duplicate_field(payload: bytes) -> str | None:
    """The first key of the top-level object that occurs twice, or None.

    msgspec (like json.loads) silently keeps the last of repeated keys; a producer and
    clawd could then read different tasks from the same bytes.
    """
    repeated: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        # called innermost object first, so the last call is the top-level object
        seen: set[str] = set()
        repeated.clear()
        for key, _ in items:
            if key in seen:
                repeated.append(key)
            seen.add(key)
        return {}

    try:
        json.loads(payload, object_pairs_hook=pairs)
    except RecursionError:
        # unverifiable is not accepted: the check must not be skippable by nesting
        raise Rejected("payload is nested too deeply") from None
    except ValueError:
        return None  # both parsers are strict; msgspec accepted it
    return repeated[0] if repeated else None


def _raw_input(stripped: bytes, payload: bytes) -> Any:
    try:
        return _any_decoder.decode(stripped)
    except RecursionError:
        raise Rejected("payload is nested too deeply") from None
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        pass
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(_utf8_error(payload)) from None


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _utf8_error(payload: bytes) -> str:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"payload is not valid UTF-8 (byte {exc.start})"
    return "payload is not valid UTF-8"


def _build(
    env: Envelope,
    task_id: str,
    lane: str,
    topic_type: str | None,
    lanes: Any,
    expiry: float | None,
    now: float | None,
) -> Task:
    if env.lane is not None and env.lane != lane:
        raise Rejected(f"envelope lane {env.lane!r} does not match topic lane {lane!r}")
    if lane not in lanes:
        raise Rejected(f"unknown lane {lane!r} (configured lanes: {', '.join(sorted(lanes))})")
    type_ = env.type if env.type is not None else topic_type
    if type_ is None:
        raise Rejected('missing "type"')
    if topic_type is not None and type_ != topic_type:
        raise Rejected(f"envelope type {type_!r} does not match topic type {topic_type!r}")
    if not NAME_PATTERN.match(type_):
        raise Rejected(f"invalid type {type_[:60]!r}: 1-64 characters of A-Z a-z 0-9 . _ : -")
    if env.input is not msgspec.UNSET and env.task is not msgspec.UNSET:
        raise Rejected('give either "input" or its alias "task", not both')
    value = env.input if env.input is not msgspec.UNSET else env.task
    for req in env.requires:
        if not NAME_PATTERN.match(req):
            raise Rejected(f"invalid capability in requires: {req[:60]!r}")
    now = clock.wall() if now is None else now
    try:
        start = start_time(env.delay, env.not_before, now)
    except BadTime as exc:
        raise Rejected(str(exc)) from None
    ttls = [t for t in (env.ttl, expiry) if t]
    return Task(
        id=task_id,
        type=type_,
        lane=lane,
        input=None if value is msgspec.UNSET else value,
        requires=env.requires,
        timeout=env.timeout,
        max_attempts=env.max_attempts,
        meta=env.meta,
        cost=env.cost,
        # a time to live counts from when the task may start
        expires_at=(start or now) + min(ttls) if ttls else None,
        not_before=start,
        submitted_at=now,
    )


def result_doc(
    task: Task,
    status: str,
    *,
    attempts: int,
    result: Any = msgspec.UNSET,
    error: str | None = None,
    worker: str | None = None,
    finished_at: float | None = None,
    started_at: float | None = None,
) -> dict[str, Any]:
    """The terminal result document of DESIGN.md section 2."""
    finished = clock.wall() if finished_at is None else finished_at
    doc: dict[str, Any] = {
        "id": task.id,
        "type": task.type,
        "lane": task.lane,
        "status": status,
    }
    if result is not msgspec.UNSET:
        doc["result"] = result
    if error is not None:
        doc["error"] = error
    doc["attempts"] = attempts
    if worker:
        doc["worker"] = worker
    doc["submitted_at"] = task.submitted_at
    if started_at is not None:
        doc["started_at"] = started_at
    doc["finished_at"] = finished
    doc["duration_ms"] = round((finished - task.submitted_at) * 1000, 3)
    if task.meta:
        doc["meta"] = task.meta
    return doc
