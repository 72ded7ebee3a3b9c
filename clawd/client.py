"""A short-lived MQTT client for the CLI: submit, wait for results, read retained state."""

from __future__ import annotations

import os
import queue
import threading
import time
from typing import Any

from clawd import broker as embedded
from clawd import config as cfgmod
from clawd.connection import Endpoint, Options
from clawd.envelope import decode, encode, new_id
from clawd.message import Message
from clawd.topics import Topics
from clawd.transport import Transport


class Client:
    """Connects with a throw-away client id; ``messages`` receives what it subscribed to."""

    def __init__(self, config: Any, subscriptions: list[tuple[str, int]] | None = None) -> None:
        self.config = config
        self.topics = Topics(config.broker.prefix)
        self.messages: queue.SimpleQueue[Message] = queue.SimpleQueue()
        b = config.broker
        password = cfgmod.read_password(b)
        self.transport = Transport(
            Endpoint.parse(embedded.resolve_url(config)),
            Options(
                client_id=f"clawd-cli-{os.getpid()}-{new_id()[:6]}",
                keepalive=max(b.keepalive, 10),
                username=b.username,
                password=password,
                tls_ca=b.tls_ca,
                tls_cert=b.tls_cert,
                tls_key=b.tls_key,
                tls_insecure=b.tls_insecure,
                subscriptions=subscriptions or [],
            ),
            self.messages.put,
        )

    def __enter__(self) -> Client:
        self.transport.start(timeout=10)
        self.transport.subscribed.wait(10)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.transport.stop()

    def publish(self, topic: str, payload: bytes, **kw: Any) -> None:
        self.transport.publish(topic, payload, **kw)

    def next(self, timeout: float | None) -> Message | None:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            return None

    def collect(self, quiet: float = 0.3, limit: float = 3.0) -> list[Message]:
        """Gather retained messages until ``quiet`` seconds pass without one."""
        out: list[Message] = []
        end = time.monotonic() + limit
        while time.monotonic() < end:
            m = self.next(quiet)
            if m is None:
                break
            out.append(m)
        return out


def submit_many(
    config: Any,
    envelopes: list[dict[str, Any]],
    *,
    wait: bool,
    timeout: float | None,
    on_result: Any = None,
) -> dict[str, dict[str, Any]]:
    """Publish envelopes (QoS 1); with ``wait`` collect their results; returns id -> result."""
    topics = Topics(config.broker.prefix)
    default_lane = config.distributor.default_lane
    for env in envelopes:
        env.setdefault("id", new_id())
    one = envelopes[0]["id"] if len(envelopes) == 1 else "+"
    subs = [(topics.result(one), 1)] if wait else []
    results: dict[str, dict[str, Any]] = {}
    wanted = {e["id"] for e in envelopes}
    with Client(config, subs) as c:
        for env in envelopes:
            c.publish(topics.tasks(env.get("lane") or default_lane), encode(env), qos=1)
        if not wait:
            time.sleep(0.1)  # let paho flush the PUBLISHes before disconnecting
            return results
        done = threading.Event()
        end = None if timeout is None else time.monotonic() + timeout
        while wanted - results.keys() and not done.is_set():
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                break
            m = c.next(left)
            if m is None:
                break
            doc = decode(m.payload)
            if doc.get("id") in wanted and doc["id"] not in results:
                results[doc["id"]] = doc
                if on_result is not None:
                    on_result(doc)
    return results
