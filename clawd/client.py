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
from clawd.envelope import decode, encode, new_id, parse_item
from clawd.errors import BrokerError
from clawd.message import Message
from clawd.topics import Topics
from clawd.transport import Transport


class Client:
    """Connects with a throw-away client id; ``messages`` receives what it subscribed to."""

    def __init__(
        self,
        config: Any,
        subscriptions: list[tuple[str, int]] | None = None,
        *,
        connect_timeout: float = 5.0,
        probe: bool = False,
    ) -> None:
        """``probe``: also subscribe to this client's own probe topic (see :meth:`retained`)."""
        self.config = config
        self.connect_timeout = connect_timeout
        self.topics = Topics(config.broker.prefix)
        self.messages: queue.SimpleQueue[Message] = queue.SimpleQueue()
        b = config.broker
        password = cfgmod.read_password(b)
        client_id = f"clawd-cli-{os.getpid()}-{new_id()[:6]}"
        self.probe = f"{self.topics.prefix}/_/probe/{client_id}"
        subscriptions = list(subscriptions or [])
        if probe:
            subscriptions.append((self.probe, 1))
        self.transport = Transport(
            Endpoint.parse_all(embedded.resolve_url(config)),
            Options(
                client_id=client_id,
                protocol=b.protocol,
                keepalive=max(b.keepalive, 10),
                username=b.username,
                password=password,
                tls_ca=b.tls_ca,
                tls_cert=b.tls_cert,
                tls_key=b.tls_key,
                tls_insecure=b.tls_insecure,
                subscriptions=subscriptions,
            ),
            self.messages.put,
        )

    def __enter__(self) -> Client:
        self.transport.start(timeout=self.connect_timeout)
        if not self.transport.subscribed.wait(self.connect_timeout):
            self.transport.stop()
            raise BrokerError(
                f"the broker at {self.transport.endpoint} did not acknowledge a subscription"
            )
        return self

    def __exit__(self, *exc: Any) -> None:
        self.transport.stop()

    def publish(self, topic: str, payload: bytes, **kw: Any) -> None:
        self.transport.publish(topic, payload, **kw)

    def publish_acked(self, topic: str, payload: bytes, timeout: float = 5.0) -> None:
        """Publish at QoS 1 and wait until the broker has it; BrokerError if it does not."""
        if not self.transport.publish_tracked(topic, payload, qos=1).wait(timeout):
            raise BrokerError(
                f"the broker at {self.transport.endpoint} did not acknowledge a publish to "
                f"{topic} within {timeout:g} s"
            )

    def retained(self, timeout: float = 5.0) -> list[Message]:
        """The retained messages of the subscriptions made at connect (``probe=True``).

        A probe published to this client's own topic comes back after the retained
        messages the broker queued for the earlier subscriptions: no quiet-time guess.
        """
        probe = self.probe
        out: list[Message] = []
        self.publish(probe, b"", qos=1)
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            m = self.next(left)
            if m is None:
                break
            if m.topic == probe:
                return out
            if m.retain and m.payload:
                out.append(m)
        raise BrokerError(f"no answer from the broker at {self.transport.endpoint}")

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


def ask_distributor(config: Any, command: dict[str, Any], timeout: float) -> Any | None:
    """Send an operator command on ``<prefix>/_/control`` with an MQTT v5 response topic
    (and the same topic as ``reply_to`` in the payload, for a broker on MQTT 3.1.1) and
    return the running distributor's decoded answer, or None when none came within
    ``timeout`` seconds; BrokerError when the broker cannot be reached."""
    topics = Topics(config.broker.prefix)
    user = config.broker.username or "cli"
    reply = f"{topics.prefix}/replies/{user}/{command['cmd']}-{os.getpid()}-{new_id()[:8]}"
    corr = new_id().encode()
    command = {**command, "reply_to": reply}
    with Client(config, [(reply, 1)]) as c:
        c.publish(topics.control, encode(command), qos=1, response_topic=reply, correlation=corr)
        m = c.next(timeout)
        # only the answer: some brokers (amqtt) also hand a new subscriber retained
        # messages of other topics
        while m is not None and (m.topic != reply or m.correlation not in (corr, None)):
            m = c.next(timeout)
    return None if m is None else decode(m.payload)


def validate(config: Any, env: dict[str, Any]) -> None:
    """Check an envelope (a group too) with the daemon's own parser; Rejected carries its
    message.

    Task types are not checked here: which ones the workers serve, only the distributor
    knows (its rejection reaches a waiting client as a ``rejected`` result).
    """
    lane = env.get("lane") or config.distributor.default_lane
    parse_item(
        ["tasks", lane], encode(env), lanes=config.lanes, max_payload=config.daemon.max_payload
    )


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
    # rejections also name the task on the errors topic: a waiting client hears of them
    subs = [(topics.result(one), 1), (topics.errors, 1)] if wait else []
    results: dict[str, dict[str, Any]] = {}
    wanted = {e["id"] for e in envelopes}
    with Client(config, subs) as c:
        sent = [
            c.transport.publish_tracked(topics.tasks(env.get("lane") or default_lane), encode(env))
            for env in envelopes
        ]
        if not wait:
            # the broker has them (and keeps them for the distributor) once it acknowledged
            if not all(d.wait(c.connect_timeout) for d in sent):
                raise BrokerError(f"the broker at {c.transport.endpoint} did not acknowledge")
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
            if m.topic == topics.errors:
                doc = {"id": doc.get("id"), "status": "rejected", "error": doc.get("error")}
            if doc.get("id") in wanted and doc["id"] not in results:
                results[doc["id"]] = doc
                if on_result is not None:
                    on_result(doc)
    return results
