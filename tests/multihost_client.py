"""The producer host's program: submits tasks and reports what the broker says, as JSON lines.

    ip netns exec PRODUCER python -m tests.multihost_client mqtt://10.77.0.2:1883

Reads commands on stdin, one JSON object a line: ``{"submit": [envelope, ...]}`` publishes
each envelope at QoS 1 on ``clawd/tasks/normal``. Writes events on stdout, one JSON object
a line: ``{"ev": "ready"}`` once subscribed, ``{"ev": "acked", "id"}`` when the broker
acknowledged a submission, ``{"ev": "result", "id", "payload", "t"}`` for every result
message (a QoS 1 redelivery included: the test counts distinct payloads), ``{"ev":
"dead", "id", "doc"}``, ``{"ev": "worker", "id", "state"}`` and ``{"ev": "metrics",
"counters", "t"}`` (the distributor's counters, from its retained snapshot). Its
sessions persist, so nothing published while it was cut off is missed. Ends when stdin
closes.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

from clawd.connection import Endpoint, Options
from clawd.envelope import decode, encode
from clawd.message import Delivery, Message
from clawd.transport import Transport

_out = threading.Lock()


def emit(**event: Any) -> None:
    line = json.dumps(event)
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def on_message(msg: Message) -> None:
    parts = msg.topic.split("/")
    if len(parts) < 2:
        return
    if parts[1] == "results":
        emit(ev="result", id=parts[2], payload=msg.payload.decode(), t=time.time())
    elif parts[1] == "dead":
        doc = decode(msg.payload)
        emit(ev="dead", id=doc.get("id"), doc=doc)
    elif parts[1] == "metrics" and msg.payload:
        emit(ev="metrics", counters=decode(msg.payload).get("counters", {}), t=time.time())
    elif parts[1] == "workers" and msg.payload:
        emit(ev="worker", id=parts[2], state=decode(msg.payload).get("state", ""))


def watch_acks(pending: list[tuple[str, Delivery]], cond: threading.Condition) -> None:
    """Report acknowledgements in submission order (a later one never overtakes)."""
    while True:
        with cond:
            cond.wait_for(lambda: bool(pending))
            task_id, d = pending.pop(0)
        if task_id == "":
            return
        while not d.wait(1.0):
            pass
        emit(ev="acked", id=task_id)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    url, prefix = args[0], (args[1] if len(args) > 1 else "clawd")
    tag = f"{os.getpid()}"
    listener = Transport(
        Endpoint.parse(url),
        Options(
            client_id=f"multihost-listener-{tag}",
            clean_start=False,
            session_expiry=3600,
            subscriptions=[
                (f"{prefix}/results/+", 1),
                (f"{prefix}/dead/+", 1),
                (f"{prefix}/workers/+", 1),
                (f"{prefix}/metrics", 1),
            ],
        ),
        on_message,
    )
    listener.start(timeout=30)
    listener.subscribed.wait(30)
    producer = Transport(
        Endpoint.parse(url),
        Options(client_id=f"multihost-producer-{tag}", clean_start=False, session_expiry=3600),
        lambda m: None,
    )
    producer.start(timeout=30)
    pending: list[tuple[str, Delivery]] = []
    cond = threading.Condition()
    acker = threading.Thread(target=watch_acks, args=(pending, cond), daemon=True)
    acker.start()
    emit(ev="ready")
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        for env in cmd.get("submit", ()):
            d = producer.publish_tracked(f"{prefix}/tasks/normal", encode(env))
            with cond:
                pending.append((env["id"], d))
                cond.notify_all()
    with cond:
        pending.append(("", None))  # type: ignore[arg-type]
        cond.notify_all()
    acker.join(60)
    for t in (producer, listener):
        t.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
