"""A tiny MQTT broker socket for protocol tests: it answers CONNECT the way a test asks
(refusing v5 in either protocol's form, closing unanswered, CONNACK properties), records
every SUBSCRIBE and PUBLISH, and can hold back PUBACKs. It serves one client at a time."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from dataclasses import dataclass, field


@dataclass
class Publish:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass
class Seen:
    """What the fake broker was sent."""

    #: protocol level of each CONNECT (4: 3.1.1, 5: v5)
    connects: list[int] = field(default_factory=list)
    #: the topic filters of each SUBSCRIBE packet
    subscribes: list[list[str]] = field(default_factory=list)
    publishes: list[Publish] = field(default_factory=list)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _varint(len(body)) + body


def props(*items: tuple[int, int, int]) -> bytes:
    """v5 properties from (identifier, size in bytes, value)."""
    body = b"".join(bytes([ident]) + value.to_bytes(size, "big") for ident, size, value in items)
    return _varint(len(body)) + body


MAXIMUM_QOS = 0x24
RECEIVE_MAXIMUM = 0x21
MAXIMUM_PACKET_SIZE = 0x27
RETAIN_AVAILABLE = 0x25


class FakeBroker:
    """``v5``: "accept", "v5-refusal" (CONNACK 0x84), "v3-refusal" (CONNACK return code 1,
    what a 3.1.1 broker sends) or "close" (closes unanswered). ``v311``: the return code a
    3.1.1 CONNECT gets (0 accepts). ``connack_props``: v5 CONNACK properties."""

    def __init__(self, v5: str = "accept", v311: int = 0, connack_props: bytes = b"\x00") -> None:
        self.v5 = v5
        self.v311 = v311
        self.connack_props = connack_props
        self.seen = Seen()
        #: set: PUBACKs are held until it is cleared (then all held ones go out)
        self.hold_acks = threading.Event()
        self._held: list[bytes] = []
        self.changed = threading.Condition()
        self._srv = socket.socket()
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(8)
        self.port = self._srv.getsockname()[1]
        self._conn: socket.socket | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop = True
        # shutdown wakes the accept() of the serving thread; close alone would not
        with contextlib.suppress(OSError):
            self._srv.shutdown(socket.SHUT_RDWR)
        self._srv.close()
        if self._conn is not None:
            self._conn.close()

    def wait(self, test, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
        """Wait until ``test(seen)`` is true."""
        with self.changed:
            return self.changed.wait_for(lambda: test(self.seen), timeout)

    def release(self) -> None:
        """Send the held PUBACKs and stop holding."""
        self.hold_acks.clear()
        with self.changed:
            held, self._held = self._held, []
        if self._conn is not None:
            for p in held:
                self._conn.sendall(p)

    # -- serving ------------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._srv.accept()
            except OSError:
                return
            self._conn = conn
            try:
                self._session(conn)
            except (OSError, ValueError):
                pass
            finally:
                conn.close()

    def _read(self, conn: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise ValueError("closed")
            data += chunk
        return data

    def _packet(self, conn: socket.socket) -> tuple[int, bytes]:
        kind = self._read(conn, 1)[0]
        length, mult = 0, 1
        while True:
            b = self._read(conn, 1)[0]
            length += (b & 0x7F) * mult
            mult *= 128
            if not b & 0x80:
                break
        return kind, self._read(conn, length)

    def _session(self, conn: socket.socket) -> None:
        kind, body = self._packet(conn)
        if kind != 0x10:
            return
        level = body[6]
        with self.changed:
            self.seen.connects.append(level)
            self.changed.notify_all()
        if level == 5:
            if self.v5 == "close":
                return
            if self.v5 == "v5-refusal":
                conn.sendall(packet(0x20, b"\x00\x84\x00"))
                return
            if self.v5 == "v3-refusal":
                conn.sendall(packet(0x20, b"\x00\x01"))
                return
            conn.sendall(packet(0x20, b"\x00\x00" + self.connack_props))
        else:
            conn.sendall(packet(0x20, bytes([0, self.v311])))
            if self.v311:
                return
        while True:
            kind, body = self._packet(conn)
            t = kind & 0xF0
            if t == 0x80:  # SUBSCRIBE
                pid, rest = body[:2], body[2:]
                if level == 5:
                    n, i = 0, 0
                    while rest[i] & 0x80:
                        i += 1
                    n = rest[i]
                    rest = rest[i + 1 + n :]
                filters, qos = [], []
                while rest:
                    ln = struct.unpack("!H", rest[:2])[0]
                    filters.append(rest[2 : 2 + ln].decode())
                    qos.append(rest[2 + ln] & 0x03)
                    rest = rest[3 + ln :]
                with self.changed:
                    self.seen.subscribes.append(filters)
                    self.changed.notify_all()
                granted = bytes(qos)
                conn.sendall(packet(0x90, pid + (b"\x00" if level == 5 else b"") + granted))
            elif t == 0x30:  # PUBLISH
                qos, retain = (kind >> 1) & 0x03, bool(kind & 0x01)
                ln = struct.unpack("!H", body[:2])[0]
                topic = body[2 : 2 + ln].decode()
                rest = body[2 + ln :]
                pid = b""
                if qos:
                    pid, rest = rest[:2], rest[2:]
                if level == 5:
                    i = 0
                    n, mult = 0, 1
                    while True:
                        b = rest[i]
                        n += (b & 0x7F) * mult
                        mult *= 128
                        i += 1
                        if not b & 0x80:
                            break
                    rest = rest[i + n :]
                ack = packet(0x40, pid) if qos else b""
                with self.changed:
                    self.seen.publishes.append(Publish(topic, rest, qos, retain))
                    if ack and self.hold_acks.is_set():
                        self._held.append(ack)
                        ack = b""
                    self.changed.notify_all()
                if ack:
                    conn.sendall(ack)
            elif t == 0xC0:  # PINGREQ
                conn.sendall(b"\xd0\x00")
            elif t == 0xE0:  # DISCONNECT
                return
