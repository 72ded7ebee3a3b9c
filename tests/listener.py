"""An MQTT listener for tests: subscribed (SUBACK received) before it returns, and a
wait for the message a test expects instead of a fixed sleep."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import time
from collections.abc import Callable
from typing import Any

from clawd.transport import Endpoint, Message, Options, Transport


class Listener:
    """Subscribes to ``topics`` on the broker at ``url``; ``wait`` for matching messages."""

    def __init__(self, url: str, *topics: str) -> None:
        self.messages: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self.seen: list[Message] = []
        self.transport = Transport(
            Endpoint.parse(url),
            Options(
                client_id=f"test-listener-{os.getpid()}-{id(self)}",
                subscriptions=[(t, 1) for t in topics],
            ),
            self.messages.put,
        )
        self.transport.start(timeout=10)
        if not self.transport.wait_subscribed(10):
            raise AssertionError(f"no SUBACK for {topics}")

    def wait(
        self, match: Callable[[Message], bool], timeout: float = 20, count: int = 1
    ) -> list[Message]:
        """The first ``count`` messages (seen before or arriving now) that ``match``."""
        end = time.monotonic() + timeout
        while True:
            found = [m for m in self.seen if match(m)]
            if len(found) >= count:
                return found[:count]
            left = end - time.monotonic()
            if left <= 0:
                shown = [(m.topic, m.payload[:80]) for m in self.seen]
                raise AssertionError(f"{count} expected message(s) did not arrive: {shown}")
            with contextlib.suppress(queue.Empty):
                self.seen.append(self.messages.get(timeout=left))

    def json(self, topic: str, timeout: float = 20, count: int = 1) -> list[dict[str, Any]]:
        """Decoded payloads of the first ``count`` messages on exactly ``topic``."""
        found = self.wait(lambda m: m.topic == topic, timeout, count)
        return [json.loads(m.payload) for m in found]

    def close(self) -> None:
        self.transport.stop()
