"""An in-memory transport and a hand-driven clock, to run a Distributor or a Worker in a
test without a broker: the test delivers messages and reads what the role published."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from clawd import clock
from clawd import config as cfgmod
from clawd.plugins import load_plugins
from clawd.transport import Message
from clawd.wire import WorkerStatus


class Tracked:
    """What ``publish_tracked`` returns: the test decides when the broker 'acknowledged'."""

    def __init__(self) -> None:
        self.acknowledged = False


class MemoryTransport:
    """The transport protocol the roles use, kept in lists."""

    def __init__(self, on_message: Callable[[Message], None]) -> None:
        self.on_message = on_message
        self.incoming: deque[Message] = deque()
        #: (topic, payload, retain) of every publish, in order
        self.sent: list[tuple[str, bytes, bool]] = []
        self.tracked: list[tuple[str, Tracked]] = []
        self.acked: list[int] = []
        self.connected = threading.Event()
        self.connected.set()
        self.woken = threading.Event()
        self._mid = 0

    def deliver(self, topic: str, payload: bytes | str, **kw: Any) -> int:
        self._mid += 1
        data = payload.encode() if isinstance(payload, str) else payload
        self.incoming.append(Message(topic, data, qos=1, mid=self._mid, **kw))
        return self._mid

    def poll(self, timeout: float = 0.0) -> None:
        if not self.incoming and timeout > 0 and self.woken.wait(timeout):
            self.woken.clear()
        while self.incoming:
            self.on_message(self.incoming.popleft())

    def publish(
        self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False, **kw: Any
    ) -> bool:
        data = payload.encode() if isinstance(payload, str) else payload
        self.sent.append((topic, data, retain))
        return True

    def publish_tracked(
        self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False
    ) -> Tracked:
        self.publish(topic, payload, qos, retain)
        t = Tracked()
        self.tracked.append((topic, t))
        return t

    def ack(self, mid: int, qos: int) -> None:
        self.acked.append(mid)

    def flush(self) -> None:
        pass

    def wake(self) -> None:
        self.woken.set()

    def on(self, topic: str) -> list[bytes]:
        """Payloads published on ``topic`` so far."""
        return [p for t, p, _ in self.sent if t == topic]

    def take(self) -> list[tuple[str, bytes, bool]]:
        out, self.sent = self.sent, []
        return out


class FakeClock:
    """Monotonic and wall time that move only when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def install(self) -> Iterator[FakeClock]:
        clock.use(lambda: self.now, lambda: 1_700_000_000.0 + self.now)
        try:
            yield self
        finally:
            clock.reset()


def config(tmp_path: Path, extra: str = "") -> Any:
    path = tmp_path / "clawd.toml"
    path.write_text(
        f'[broker]\nurl = "mqtt://127.0.0.1:1"\n\n[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        f"\n{extra}"
    )
    return cfgmod.load(str(path), env={})


def plugins(cfg: Any, *objects: Any) -> Any:
    p = load_plugins(cfg)
    for i, obj in enumerate(objects):
        p.register_object(obj, f"test{i}")
    p.collect()
    return p


def status(state: str = "online", *, session: str = "s1", capacity: int = 2, **kw: Any) -> bytes:
    import msgspec

    doc = WorkerStatus(state=state, session=session, capacity=capacity, **kw)
    return msgspec.json.encode(doc)
