"""Channels: the dotted names of the ``claw.events`` shell interface, and their messages.

A channel is a dotted name (``agent.leader.tasks``). It maps to clawd topics one way:

- a **tasks channel** carries tasks: ``<prefix>/tasks/<lane>/<channel>``, the channel
  being the task type, so every task gets clawd's guarantees (journal, one worker,
  retries, dead letters). A channel is a tasks channel when its name ends in ``.tasks``,
  or when a worker announces it as a task type (a running or past ``subexec``);
- any other channel carries **plain messages**: ``<prefix>/channels/<channel>``, one
  JSON document per message, ``{"channel", "sender", "timestamp", "payload"}``, which is
  also the line ``claw.events sub`` prints.

A task published on a channel with ``claw.events pub`` travels as an ordinary envelope
whose ``input`` is the JSON as published and whose ``meta`` says where it came from::

    {"id": <its "id">, "type": <channel>, "input": <as published>,
     "meta": {"channel": <channel>, "sender": <who>, "timestamp": <epoch seconds>}}

so a command serving the channel gets back exactly what was published as ``payload``.
"""

from __future__ import annotations

import getpass
import os
import re
import socket
from typing import Any

from clawd import clock
from clawd.envelope import CHANNEL_SUFFIX, decode

#: dotted names of 1-64 characters; each part A-Z a-z 0-9 _ : - (a channel may become a
#: task type and a topic level, so it follows their rules)
CHANNEL_PATTERN = re.compile(r"[A-Za-z0-9_:-]+(?:\.[A-Za-z0-9_:-]+)*\Z")
MAX_CHANNEL = 64
TASKS_SUFFIX = CHANNEL_SUFFIX
#: the environment variable naming the worker a subexec command runs for
WORKER_ENV = "CLAW_WORKER_ID"
_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]+")


class ChannelError(ValueError):
    """A channel name or message that cannot be used; the message says why."""


def check_channel(name: str) -> str:
    """``name`` when it is a valid channel name, else a ChannelError naming the rule."""
    if len(name) > MAX_CHANNEL or not CHANNEL_PATTERN.match(name):
        raise ChannelError(
            f"invalid channel {name[:80]!r}: a channel is a dotted name of at most "
            f"{MAX_CHANNEL} characters, each part of A-Z a-z 0-9 _ : - (agent.leader.tasks)"
        )
    return name


def is_tasks_name(name: str) -> bool:
    """Whether the name alone makes a channel a tasks channel."""
    return name.endswith(TASKS_SUFFIX)


def plain_topic(prefix: str, channel: str) -> str:
    return f"{prefix}/channels/{channel}"


def task_filter(prefix: str, channel: str) -> str:
    """Every lane's topic of a tasks channel (for watching it)."""
    return f"{prefix}/tasks/+/{channel}"


def safe_id(text: str) -> str:
    """``text`` reduced to the characters ids and topic levels allow."""
    return _UNSAFE.sub("-", text).strip("-")[:100] or "client"


def client_id(env: Any = os.environ) -> str:
    """Who is publishing: the worker a subexec command runs for, else ``<user>-<host>``."""
    worker = env.get(WORKER_ENV)
    if worker:
        return str(worker)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return safe_id(f"{user}-{socket.gethostname().split('.')[0]}")


def parse_payload(text: str) -> tuple[Any, str | None]:
    """The payload a shell gives: JSON when it parses, else the text as a JSON string.

    Returns ``(payload, problem)``; ``problem`` says why text that looks like JSON (it
    starts with ``{`` or ``[``) is not, so the caller can warn.
    """
    try:
        return decode(text.encode()), None
    except Exception as exc:  # msgspec's DecodeError, or nesting too deep
        looks = text.lstrip()[:1] in ("{", "[")
        return text, (f"not valid JSON ({exc})" if looks else None)


def message(
    channel: str, sender: str | None, payload: Any, timestamp: float | None = None
) -> dict[str, Any]:
    """A plain channel message: what travels on the topic and what ``sub`` prints."""
    return {
        "channel": channel,
        "sender": sender,
        "timestamp": round(clock.wall() if timestamp is None else timestamp, 3),
        "payload": payload,
    }


def task_envelope(
    channel: str, sender: str, payload: Any, timestamp: float | None = None
) -> dict[str, Any]:
    """The envelope of a task published on a tasks channel; its ``id`` is kept."""
    env: dict[str, Any] = {"type": channel, "input": payload}
    if isinstance(payload, dict) and "id" in payload:
        task_id = payload["id"]
        # ids people type in JSON are often numbers: 7 is task "7"
        if isinstance(task_id, int) and not isinstance(task_id, bool):
            task_id = str(task_id)
        env["id"] = task_id
    env["meta"] = {
        "channel": channel,
        "sender": sender,
        "timestamp": round(clock.wall() if timestamp is None else timestamp, 3),
    }
    return env


def _origin(meta: Any, type_: str) -> dict[str, Any] | None:
    """The channel meta of a task published with ``claw.events pub``, or None."""
    if isinstance(meta, dict) and meta.get("channel") == type_:
        return meta
    return None


def read_plain(channel: str, raw: bytes) -> dict[str, Any]:
    """A message on ``<prefix>/channels/<channel>`` as ``sub`` prints it.

    Messages published by ``claw.events pub`` are already in that shape; anything else
    (``mosquitto_pub -m ...``) becomes its payload, with no sender.
    """
    text = raw.decode("utf-8", "replace")
    doc, _ = parse_payload(text)
    if (
        isinstance(doc, dict)
        and doc.keys() == {"channel", "sender", "timestamp", "payload"}
        and isinstance(doc["timestamp"], int | float)
    ):
        doc["channel"] = channel
        return doc
    return message(channel, None, doc)


def read_task(channel: str, raw: bytes) -> dict[str, Any]:
    """A task seen on a tasks channel's topic, as ``sub`` prints it."""
    doc, _ = parse_payload(raw.decode("utf-8", "replace"))
    if isinstance(doc, dict):
        meta = _origin(doc.get("meta"), channel)
        if meta is not None:
            return message(channel, meta.get("sender"), doc.get("input"), meta.get("timestamp"))
    return message(channel, None, doc)


def claw_message(
    *,
    id: str,
    type: str,
    lane: str,
    input: Any,
    attempt: int,
    meta: dict[str, Any],
    submitted_at: float,
) -> dict[str, Any]:
    """``CLAW_MESSAGE`` for a command: the seed's shape plus clawd's own fields.

    ``payload`` is the task as published: for a channel task the JSON given to
    ``claw.events pub``; for any other task its ``id``, ``type`` and ``input``. The
    top-level ``id, type, lane, input, attempt, meta`` stay for scripts written
    against them.
    """
    origin = _origin(meta, type)
    if origin is not None:
        payload = input
        sender = origin.get("sender")
        timestamp = origin.get("timestamp", submitted_at)
    else:
        payload = {"id": id, "type": type, "input": input}
        sender = meta.get("sender") if isinstance(meta.get("sender"), str) else None
        timestamp = submitted_at
    return {
        "channel": type,
        "sender": sender,
        "timestamp": round(timestamp, 3) if isinstance(timestamp, int | float) else timestamp,
        "payload": payload,
        "id": id,
        "type": type,
        "lane": lane,
        "input": input,
        "attempt": attempt,
        "meta": meta,
    }
