"""The transport: the buffered socket under paho, and a connection driven from its owner's
thread, against a real mosquitto."""

from __future__ import annotations

import fcntl
import logging
import socket
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from clawd.connection import Endpoint, Options
from clawd.message import Message
from clawd.paho_compat import Compat, Paho, version_gate
from clawd.sockbuf import FILL, BufferedSocket
from clawd.transport import PAHO, Transport
from tests.conftest import Broker, client_id, lines, pub, sub, wait_until


@pytest.fixture(params=[True, False], ids=["compat", "plain"])
def paho(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Run the test with clawd's paho speed-ups, and with paho as it comes."""
    Compat(PAHO, request.param)
    yield request.param
    Compat(PAHO, True)  # the process default again


@pytest.fixture
def pair() -> Iterator[tuple[BufferedSocket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    yield BufferedSocket(a), b
    a.close()
    b.close()


def wait_readable(sock: BufferedSocket) -> None:
    import select

    select.select([sock.fileno()], [], [], 5)


# -- BufferedSocket ------------------------------------------------------------------------


def test_small_reads_are_served_from_one_fill(pair) -> None:
    sock, peer = pair
    peer.sendall(b"".join(bytes([i]) * 10 for i in range(50)))
    wait_readable(sock)
    sock.fills = 1  # one system call allowed
    got = [sock.recv(1) + sock.recv(9) for _ in range(50)]
    assert got == [bytes([i]) * 10 for i in range(50)]
    assert sock.buffered == 0
    with pytest.raises(BlockingIOError):  # the fill was used: no second recv
        sock.recv(1)


def test_a_read_larger_than_the_buffer_returns_what_there_is(pair) -> None:
    sock, peer = pair
    peer.sendall(b"abcdef")
    wait_readable(sock)
    assert sock.recv(2) == b"ab"
    assert sock.pending() == 4
    assert sock.recv(100) == b"cdef"
    with pytest.raises(BlockingIOError):  # nothing more: the socket would block
        sock.recv(1)
    peer.close()
    wait_readable(sock)
    assert sock.recv(1) == b""  # end of stream, as paho expects it


def test_batched_writes_leave_in_one_send_in_order(pair) -> None:
    sock, peer = pair
    sock.batch = True
    for i in range(100):
        assert sock.send(b"%03d" % i) == 3
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):  # nothing left yet
        peer.recv(10)
    assert sock.unsent == 300
    assert sock.flush()
    peer.setblocking(True)
    data = b""
    while len(data) < 300:
        data += peer.recv(4096)
    assert data == b"".join(b"%03d" % i for i in range(100))


def test_a_full_socket_keeps_the_rest_until_it_drains(pair) -> None:
    sock, peer = pair
    sock.batch = True
    blob = bytes(range(256)) * 40_000  # ~10 MB: more than the socket buffers hold
    sock.send(blob)
    assert sock.flush() is False
    assert 0 < sock.unsent < len(blob)
    received = bytearray()
    peer.settimeout(5)
    while len(received) < len(blob):
        received += peer.recv(1 << 20)
        sock.flush()
    assert sock.unsent == 0
    assert bytes(received) == blob


def test_a_broken_connection_is_reported_by_the_next_read(pair) -> None:
    sock, peer = pair
    peer.close()
    sock.batch = True
    sock.send(b"x" * 1000)
    assert sock.flush()  # nothing to wait for: the connection is gone
    assert isinstance(sock.error, BrokenPipeError)
    assert sock.unsent == 0
    with pytest.raises(OSError):
        sock.recv(1)
    with pytest.raises(OSError):
        sock.send(b"z")


def test_close_sends_what_is_left(pair) -> None:
    sock, peer = pair
    sock.batch = True
    sock.send(b"bye")
    sock.close()
    peer.settimeout(5)
    assert peer.recv(10) == b"bye"


# -- paho's property tables, shared ---------------------------------------------------------


def test_properties_behave_as_paho_defines_them(paho: bool) -> None:
    assert getattr(Properties, "_clawd_shared", False) is paho
    p = Properties(PacketTypes.PUBLISH)
    p.ResponseTopic = "reply/here"
    p.CorrelationData = b"\x01\x02"
    p.MessageExpiryInterval = 30
    p.UserProperty = [("k", "v")]
    q = Properties(PacketTypes.PUBLISH)
    q.unpack(p.pack())
    assert (q.ResponseTopic, q.CorrelationData, q.MessageExpiryInterval) == (
        "reply/here",
        b"\x01\x02",
        30,
    )
    assert q.UserProperty == [("k", "v")]
    assert Properties(PacketTypes.PUBLISH).isEmpty()  # instances do not share values
    q.clear()
    assert q.isEmpty() and not p.isEmpty()
    with pytest.raises(Exception, match="does not apply"):
        Properties(PacketTypes.PUBACK).ResponseTopic = "x"


def test_reason_codes_behave_as_paho_defines_them(paho: bool) -> None:
    """With the speed-ups every reason code refers to the class's table of names instead
    of a copy; names, values, unpacking and refusals stay paho's."""
    rc = ReasonCode(PacketTypes.PUBACK)
    assert (rc.value, rc.getName()) == (0, "Success")
    assert (rc.names is ReasonCode.names) is paho
    assert ReasonCode(PacketTypes.DISCONNECT).getName() == "Normal disconnection"
    assert ReasonCode(PacketTypes.DISCONNECT, identifier=4).getName() == (
        "Disconnect with will message"
    )
    assert ReasonCode(PacketTypes.SUBACK, "Granted QoS 1").value == 1
    got = ReasonCode(PacketTypes.PUBACK)
    got.unpack(bytes([0x87]))
    assert (got.value, got.getName(), got.is_failure) == (0x87, "Not authorized", True)
    with pytest.raises(KeyError):
        ReasonCode(PacketTypes.PUBACK, "No such reason")
    with pytest.raises(KeyError):
        ReasonCode(PacketTypes.PUBACK, identifier=0xFE)
    assert ReasonCode.names[0]["Success"]  # the shared table was never written to


# -- a driven connection --------------------------------------------------------------------


def driven(broker: Broker, got: list[Message], compat: bool = True, **kw: object) -> Transport:
    kw.setdefault("client_id", f"t-{time.monotonic_ns()}")
    opts = Options(driven=True, compat=compat, **kw)  # type: ignore[arg-type]
    t = Transport(Endpoint("127.0.0.1", broker.port), opts, got.append)
    t.start(timeout=10)
    assert t.wait_subscribed(10)
    # the speed-ups are what they were asked to be: paho's socket is buffered, or its own
    assert isinstance(t._client.socket(), BufferedSocket) is compat
    return t


def poll_until(t: Transport, cond, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        t.poll(0.05)


def test_messages_are_delivered_on_the_polling_thread(broker: Broker, paho: bool) -> None:
    got: list[Message] = []
    threads: list[int] = []
    t = driven(broker, got, paho, subscriptions=[("in/#", 1)])
    t._on_message = lambda m: (got.append(m), threads.append(threading.get_ident()))
    subprocess.run(
        ["mosquitto_pub", *broker.args, "-t", "in/a", "-m", "hello", "-q", "1"], check=True
    )
    poll_until(t, lambda: got)
    assert got[0].topic == "in/a" and got[0].payload == b"hello" and got[0].qos == 1
    assert threads == [threading.get_ident()]
    t.stop()


def test_a_publish_from_another_thread_wakes_a_waiting_poll(broker: Broker, paho: bool) -> None:
    got: list[Message] = []
    t = driven(broker, got, paho, subscriptions=[("loop/#", 1)])

    def poll_returns_before_a_20s_timer(poke: Any) -> bool:
        late = threading.Event()
        timer = threading.Timer(20.0, late.set)
        timer.start()
        threading.Timer(0.1, poke).start()
        t.poll(30.0)
        timer.cancel()
        return not late.is_set()

    # a publish from another thread wakes it (the message comes back to it)
    assert poll_returns_before_a_20s_timer(lambda: t.publish("loop/x", b"from a thread"))
    poll_until(t, lambda: got, timeout=5)
    assert got[0].payload == b"from a thread"
    assert poll_returns_before_a_20s_timer(t.wake)  # and so does wake()
    t.stop()


def _pending(sock: Any) -> int:
    """Bytes received by the kernel and not yet read (FIONREAD)."""
    raw = getattr(sock, "sock", sock)  # the buffered socket wraps the real one
    return struct.unpack("i", fcntl.ioctl(raw.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def test_one_poll_reads_at_most_one_buffer_and_nothing_is_lost(broker: Broker, paho: bool) -> None:
    got: list[Message] = []
    t = driven(broker, got, paho, subscriptions=[("flood", 1)])
    n, body = 3000, b"x" * 100  # ~400 KB with headers: several buffers' worth
    sub = Transport(
        Endpoint("127.0.0.1", broker.port),
        Options(client_id="flooder", compat=paho),
        lambda m: None,
    )
    sub.start(timeout=10)
    last = None
    for i in range(n):
        last = sub.publish_tracked("flood", b"%05d" % i + body)
    assert last is not None and last.wait(10)
    sub.stop()
    # wait until more than one buffer's worth is waiting in this client's socket
    sock = t._sock()
    assert sock is not None
    wait_until(lambda: _pending(sock) > FILL, what="a buffer's worth in the socket")
    t.poll(0)
    assert 0 < len(got) < n
    assert len(got) * len(body) <= FILL * 2
    poll_until(t, lambda: len(got) == n)
    assert [m.payload[:5] for m in got] == [b"%05d" % i for i in range(n)]
    t.stop()


def test_an_idle_driven_connection_is_kept_alive(broker: Broker, paho: bool) -> None:
    got: list[Message] = []
    t = driven(broker, got, paho, keepalive=1, subscriptions=[("idle", 1)])
    end = time.monotonic() + 3.5  # the broker drops a silent client after 1.5 keepalives
    while time.monotonic() < end:
        t.poll(0.2)
    assert t.connected.is_set()
    subprocess.run(["mosquitto_pub", *broker.args, "-t", "idle", "-m", "still here"], check=True)
    poll_until(t, lambda: got)
    t.stop()


def test_a_driven_connection_comes_back_after_a_broker_restart(
    broker: Broker, tmp_path: Path, paho: bool
) -> None:
    got: list[Message] = []
    states: list[bool] = []
    opts = Options(client_id="comeback", driven=True, compat=paho, subscriptions=[("back", 1)])
    t = Transport(
        Endpoint("127.0.0.1", broker.port), opts, got.append, lambda up, why: states.append(up)
    )
    t.start(timeout=10)
    assert t.wait_subscribed(10)
    broker.stop()
    poll_until(t, lambda: not t.connected.is_set())
    broker.start()
    poll_until(t, lambda: t.subscribed.is_set(), timeout=40)
    subprocess.run(["mosquitto_pub", *broker.args, "-t", "back", "-m", "again"], check=True)
    poll_until(t, lambda: got)
    assert states == [True, False, True]
    t.stop()


def test_stop_with_will_makes_the_broker_publish_it(broker: Broker, paho: bool) -> None:
    from clawd.connection import Will

    cid = client_id("will-watch")
    watcher = subprocess.Popen(
        ["mosquitto_sub", *broker.args, "-i", cid, "-t", "wills/#", "-C", "1", "-W", "10"],
        stdout=subprocess.PIPE,
        text=True,
    )
    broker.wait_subscribed(cid, "wills/#", watcher)
    got: list[Message] = []
    t = driven(broker, got, paho, will=Will("wills/me", b"gone", retain=False))
    t.stop(will=True)
    out, _ = watcher.communicate(timeout=15)
    assert out.strip() == "gone"


def test_manual_acks_decide_what_the_broker_redelivers(broker: Broker, paho: bool) -> None:
    got: list[Message] = []
    session = {"clean_start": False, "session_expiry": 300, "manual_ack": True}
    t = driven(broker, got, paho, client_id="acker", subscriptions=[("work", 1)], **session)
    for body in ("a", "b"):
        subprocess.run(
            ["mosquitto_pub", *broker.args, "-t", "work", "-m", body, "-q", "1"], check=True
        )
    poll_until(t, lambda: len(got) == 2)
    (first,) = [m for m in got if m.payload == b"a"]
    t.ack(first.mid, first.qos)  # "b" stays unacknowledged
    t.stop()
    again: list[Message] = []
    t2 = driven(broker, again, paho, client_id="acker", subscriptions=[("work", 1)], **session)
    subprocess.run(["mosquitto_pub", *broker.args, "-t", "work", "-m", "c", "-q", "1"], check=True)
    poll_until(t2, lambda: any(m.payload == b"c" for m in again))
    assert [m.payload for m in again] == [b"b", b"c"]
    t2.stop()


def test_a_tracked_publish_is_acknowledged_and_delivered(broker: Broker, paho: bool) -> None:
    got: list[Message] = []
    t = driven(broker, got, paho, subscriptions=[("tracked", 1)])
    d = t.publish_tracked("tracked", b"mine")
    assert not d.acknowledged  # queued, not yet sent
    poll_until(t, lambda: d.acknowledged and got)
    assert [m.payload for m in got] == [b"mine"]
    t.stop()


def test_a_publish_made_while_the_link_is_down_goes_out_after_it_is_back(
    broker: Broker, paho: bool
) -> None:
    t = driven(broker, [], paho, client_id="patient")
    broker.stop()
    poll_until(t, lambda: not t.connected.is_set())
    d = t.publish_tracked("later", b"while down", retain=True)
    assert not d.acknowledged  # pending, not an error (the outbox publishes it again)
    broker.start()
    poll_until(t, lambda: t.connected.is_set(), timeout=40)
    # paho sends what it queued while down on reconnecting, before anything newer
    after = t.publish_tracked("after", b"x")
    poll_until(t, lambda: after.acknowledged)
    t.stop()
    out = subprocess.run(
        ["mosquitto_sub", *broker.args, "-t", "later", "-C", "1", "-W", "10", "--retained-only"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.stdout.strip() == "while down"


def test_a_threaded_connection_publishes_and_receives(broker: Broker, paho: bool) -> None:
    arrived = threading.Event()
    got: list[Message] = []

    def on_message(m: Message) -> None:
        got.append(m)
        arrived.set()

    opts = Options(client_id="threaded", compat=paho, subscriptions=[("thr", 1)])
    t = Transport(Endpoint("127.0.0.1", broker.port), opts, on_message)
    t.start(timeout=10)
    assert t.wait_subscribed(10)
    assert isinstance(t._client.socket(), BufferedSocket) is paho
    assert t.publish_tracked("thr", b"round trip").wait(10)
    assert arrived.wait(10)
    assert got[0].payload == b"round trip"
    t.stop()


# -- the gate on paho's version ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "ok"),
    [
        ("2.1.0", True),
        ("2.2.0", True),
        ("2.2.5.dev1", True),
        ("2.3.0", False),
        ("3.0", False),
        ("1.6.1", False),
        ("unknown", False),
    ],
)
def test_the_gate_admits_only_the_paho_versions_it_was_written_for(version: str, ok: bool) -> None:
    why = version_gate(version)
    assert (why is None) is ok
    if not ok:
        assert version in why  # type: ignore[operator]


def test_an_unknown_paho_version_gets_paho_as_it_comes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    future = Paho("2.3.0", PAHO.client, PAHO.properties, PAHO.publish_type)
    try:
        with caplog.at_level(logging.WARNING, "clawd.transport"):
            c = Compat(future)
        assert not c.enabled and c.client_class() is PAHO.client
        assert c.off_reason == "paho-mqtt 2.3.0 is not a version they were written for (2.1, 2.2)"
        assert not getattr(Properties, "_clawd_shared", False)  # paho's own methods again
        assert "paho speed-ups off: paho-mqtt 2.3.0" in caplog.text
    finally:
        Compat(PAHO, True)
    assert getattr(Properties, "_clawd_shared", False)


def test_a_paho_that_fails_the_check_gets_paho_as_it_comes() -> None:
    class Client:  # a "2.2" whose client is not the one the speed-up was written for
        def _create_socket(self, timeout: float) -> None: ...

    c = Compat(Paho("2.2.0", Client, PAHO.properties, PAHO.publish_type))
    try:
        assert not c.enabled and c.client_class() is Client
        assert c.off_reason == "paho's _create_socket takes arguments it did not take"
    finally:
        Compat(PAHO, True)


def test_a_paho_whose_properties_differ_gets_paho_as_it_comes() -> None:
    class Properties:  # no shared lookup tables to take
        def __init__(self, packet_type: int) -> None:
            self.packetType = packet_type

    c = Compat(Paho("2.2.0", PAHO.client, Properties, PAHO.publish_type))
    try:
        assert not c.enabled and c.client_class() is PAHO.client
        assert c.off_reason == "paho's Properties builds its tables differently"
        assert Properties.__init__.__qualname__.endswith("Properties.__init__")  # untouched
    finally:
        Compat(PAHO, True)


def test_the_environment_turns_the_speed_ups_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAWD_PAHO_COMPAT", "0")
    try:
        c = Compat(PAHO)
        assert not c.enabled and c.client_class() is PAHO.client
        assert not getattr(Properties, "_clawd_shared", False)
        monkeypatch.setenv("CLAWD_PAHO_COMPAT", "1")
        assert Compat(PAHO).enabled
    finally:
        Compat(PAHO, True)


def test_the_daemon_runs_on_paho_as_it_comes(
    broker: Broker, make_config: Any, start_clawd: Any
) -> None:
    d = start_clawd("-c", str(make_config()), "run", env={"CLAWD_PAHO_COMPAT": "0"})
    s = sub(broker, "clawd/results/+", 1)
    pub(broker, "clawd/tasks/normal/compute", "6*7")
    (result,) = lines(s)
    assert result["status"] == "ok" and result["result"] == 42
    assert "paho speed-ups off: CLAWD_PAHO_COMPAT or the caller turned them off" in d.output()
