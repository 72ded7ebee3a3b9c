"""The MQTT producer both the raw pipeline and clawd are measured with (paho directly).

Throughput: publish N tasks as fast as paho takes them (QoS 1), count results until all
have arrived. Round trip: one task at a time, submit to result.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def nodelay(client: Any, userdata: Any, sock: Any) -> None:
    # paho leaves Nagle on; a lone small publish would wait for a delayed ACK
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connect(port: int, name: str, on_message: Callable[..., None] | None = None) -> mqtt.Client:
    """A connected MQTT v5 client with its network thread running."""
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{name}-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    # 0 = no client-side window: paho's window rescans every in-flight message on each
    # PUBACK (O(window) per ack); the broker's receive maximum (65535) still applies, so
    # callers publish in chunks below that (see CHUNK)
    c.max_inflight_messages_set(0)
    c.max_queued_messages_set(0)
    c.on_socket_open = nodelay
    if on_message is not None:
        c.on_message = on_message
    up = threading.Event()
    c.on_connect = lambda *a: up.set()
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    if not up.wait(10):
        raise RuntimeError(f"{name}: no CONNACK from the broker on port {port}")
    return c


def subscribe(c: mqtt.Client, topic: str, qos: int = 1) -> None:
    done = threading.Event()
    c.on_subscribe = lambda *a: done.set()
    c.subscribe(topic, qos)
    if not done.wait(10):
        raise RuntimeError(f"no SUBACK for {topic}")


class Producer:
    """Submits tasks and hears their results.

    ``topic_for(id)``/``payload_for(id)`` say where and what to publish; ``result_filter``
    is where results arrive, the id being the last topic level.
    """

    def __init__(
        self,
        port: int,
        topic_for: Callable[[str], str],
        payload_for: Callable[[str], bytes],
        result_filter: str,
    ) -> None:
        self.topic_for = topic_for
        self.payload_for = payload_for
        self.results: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._count = 0
        self._want = -1
        self._all = threading.Event()
        self._last = 0.0
        self._prefix = ""
        #: set when a result arrives while the publisher waits for room in its window
        self._room = threading.Event()
        self._waiting = False
        self.client = connect(port, "bench-producer", self._on_message)
        subscribe(self.client, result_filter, 1)
        # a clean-start session loses its subscription when paho reconnects (a keepalive
        # missed on a loaded machine during an hour-long backlog fill): subscribe again
        self.client.on_connect = lambda c, *a: c.subscribe(result_filter, 1)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        task_id = msg.topic.rsplit("/", 1)[-1]
        if self._want >= 0:
            if task_id.startswith(self._prefix):
                self._count += 1
                if self._waiting:  # after the count: see the publisher's re-check
                    self._room.set()
                if self._count == self._want:
                    self._last = time.perf_counter()
                    self._all.set()
        else:
            self.results.put(task_id)

    def throughput(self, n: int, timeout: float = 600, window: int = 0) -> float:
        """Tasks per second for ``n`` tasks submitted at once, or with at most ``window``
        of them outstanding (submitted, result not yet received) when it is set."""
        prefix = f"t{uuid.uuid4().hex[:6]}-"
        self._prefix, self._count, self._want = prefix, 0, n
        self._all.clear()
        publish = self.client.publish
        topic_for, payload_for = self.topic_for, self.payload_for
        start = time.perf_counter()
        for i in range(n):
            if window and i - self._count >= window:
                self._wait_for_room(i, window, timeout)
            task_id = f"{prefix}{i}"
            info = publish(topic_for(task_id), payload_for(task_id), qos=1)
            if i % CHUNK == CHUNK - 1:
                info.wait_for_publish(timeout)
        if not self._all.wait(timeout):
            got = self._count
            self._want = -1
            raise RuntimeError(f"only {got} of {n} results within {timeout} s")
        self._want = -1
        return n / (self._last - start)

    def _wait_for_room(self, sent: int, window: int, timeout: float) -> None:
        """Block until fewer than ``window`` of ``sent`` tasks are outstanding.

        Cheaper than a semaphore per task: the result thread only signals while the
        publisher waits, and the publisher then fills all the room a burst of results made.
        """
        room = self._room
        while sent - self._count >= window:
            room.clear()
            self._waiting = True
            if sent - self._count >= window and not room.wait(timeout):  # re-check, then wait
                self._waiting = False
                raise RuntimeError(f"no result for {timeout} s with {window} tasks outstanding")
            self._waiting = False

    def round_trips(self, n: int, timeout: float = 10) -> list[float]:
        """Seconds from submit to result, one task at a time."""
        prefix = f"r{uuid.uuid4().hex[:6]}-"
        times = []
        for i in range(n):
            task_id = f"{prefix}{i}"
            start = time.perf_counter()
            self.client.publish(self.topic_for(task_id), self.payload_for(task_id), qos=1)
            while True:
                got = self.results.get(timeout=timeout)
                if got == task_id:
                    break
            times.append(time.perf_counter() - start)
        return times

    def publish_all(self, n: int, prefix: str) -> float:
        """Publish ``n`` tasks and wait until the broker acknowledged them all; seconds."""
        start = time.perf_counter()
        info = None
        for i in range(n):
            task_id = f"{prefix}{i}"
            info = self.client.publish(self.topic_for(task_id), self.payload_for(task_id), qos=1)
            if i % CHUNK == CHUNK - 1:
                info.wait_for_publish(timeout=600)
        if info is not None:
            info.wait_for_publish(timeout=600)
        return time.perf_counter() - start

    def expect(self, n: int, prefix: str) -> None:
        """Count the next ``n`` results whose ids start with ``prefix`` (see :meth:`wait`)."""
        self._prefix, self._count, self._want = prefix, 0, n
        self._all.clear()

    def wait(self, timeout: float) -> tuple[float, int]:
        """(perf_counter of the last expected result, or 0.0 on timeout; results seen)."""
        ok = self._all.wait(timeout)
        return (self._last if ok else 0.0), self._count

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


#: publishes in flight at most before waiting for the broker's acknowledgements
CHUNK = 20_000


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return 0.0
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]
