"""The MQTT transport: the only module that imports paho (with the speed-ups it hands to
:mod:`clawd.paho_compat`).

Two ways to run a connection. **Driven** (the daemon's roles): the owner's loop thread
calls :meth:`Transport.poll` each turn, which sends everything queued in one write, waits
for the broker (or a :meth:`Transport.wake` from another thread), and reads; messages are
delivered on that same thread, so there is no hand-off between threads per message and
no wake-up write per publish. **Threaded** (the CLI and other short-lived clients):
paho's own network thread, started by ``loop_start``.

Either way paho reads and writes through a :class:`~clawd.sockbuf.BufferedSocket`, one
system call for many packets (when :mod:`clawd.paho_compat` finds this paho is one it was
written for; otherwise through paho's own socket), and every callback only hands a plain
:class:`Message` (or event) to the owner's callable, so paho types never leak.
Subscriptions are (re)made in on_connect, so they come back after every reconnect.
"""

from __future__ import annotations

import contextlib
import logging
import random
import select
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt import __version__ as paho_version
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from clawd import connack, paho_compat
from clawd.connack import Limits
from clawd.connection import Endpoint, Options, tls_context
from clawd.errors import BrokerError, BrokerRefused
from clawd.message import Delivery, Message
from clawd.sockbuf import BufferedSocket

log = logging.getLogger("clawd.transport")

#: publishes paho will hold while disconnected before refusing more (bounded memory)
MAX_QUEUED = 100_000

#: how often a driven connection runs keepalive and timeout checks, seconds
MISC_EVERY = 0.25
#: paho's own socket (speed-ups off): at most this many reads per poll() turn
PLAIN_READS = 256
#: reconnect backoff cap, seconds (the first retry after a lost connection is jittered)
MAX_BACKOFF = 30.0
#: the CONNACK properties read into :class:`~clawd.connack.Limits`
LIMIT_NAMES = (
    "MaximumQoS",
    "ReceiveMaximum",
    "MaximumPacketSize",
    "RetainAvailable",
    "WildcardSubscriptionAvailable",
    "SharedSubscriptionAvailable",
)
#: what clawd does without MQTT v5, said once when it falls back to 3.1.1
V311_NOTE = (
    "without v5, replies to operator requests travel on the reply topic named in the "
    "request's payload, and submissions cannot carry a response topic or a message expiry "
    "(use clawd/results/<id> and the envelope's ttl)"
)


#: the paho this process runs, for the speed-ups in :mod:`clawd.paho_compat`
PAHO = paho_compat.Paho(
    version=paho_version,
    client=mqtt.Client,
    properties=Properties,
    publish_type=PacketTypes.PUBLISH,
    reason_code=ReasonCode,
    disconnect_type=PacketTypes.DISCONNECT,
)


class Transport:
    """One MQTT connection (v5, or 3.1.1 with ``protocol``), to one broker or to the first
    node of a list that answers. ``on_message`` receives every inbound :class:`Message`;
    ``on_state(connected: bool, reason: str)`` hears about (dis)connections."""

    def __init__(
        self,
        endpoint: Endpoint | Sequence[Endpoint],
        options: Options,
        on_message: Callable[[Message], None],
        on_state: Callable[[bool, str], None] | None = None,
    ) -> None:
        #: the broker's nodes (``broker.url``); ``endpoint`` is the one in use
        self.endpoints = [endpoint] if isinstance(endpoint, Endpoint) else list(endpoint)
        if not self.endpoints:
            raise BrokerError("no broker url given")
        self._node = 0
        self.endpoint = endpoint = self.endpoints[0]
        self.options = options
        #: the MQTT version in use: "5" or "3.1.1" (auto starts with "5")
        self.protocol = "3.1.1" if options.protocol == "3.1.1" else "5"
        #: what the broker's last CONNACK allows
        self.limits = Limits()
        #: a CONNACK came on the current socket (else the broker closed it unanswered)
        self._connack_seen = False
        #: the next retry is immediate, on the same node (after a protocol fallback)
        self._retry_now = False
        #: failed attempts since the last successful one
        self._failures = 0
        #: subscription packet id -> topic filter, for a refusal naming the filter
        self._sub_topics: dict[int, tuple[str, int]] = {}
        self._said: set[str] = set()
        self._on_message = on_message
        self._on_state = on_state or (lambda up, why: None)
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self._pending_subs: set[int] = set()
        self._lock = threading.Lock()
        self._closing = False
        #: why the last attempt to connect failed, for the error start() raises
        self._refused: str | None = None
        #: set when the first connection succeeded or failed in a way retrying cannot fix
        self._settled = threading.Event()
        self._ever_connected = False
        #: the first connection failed in a way retrying cannot fix (credentials, TLS)
        self.refused_for_good = False
        #: start() gives up at once when nothing listens at the endpoint (the caller waits)
        self.fail_fast = False
        self.compat = paho_compat.Compat(PAHO, options.compat)
        v311 = self.protocol == "3.1.1"
        c = self.compat.client_class()(
            CallbackAPIVersion.VERSION2,
            client_id=options.client_id,
            protocol=mqtt.MQTTv311 if v311 else mqtt.MQTTv5,
            clean_session=options.clean_start if v311 else None,
            transport="unix" if endpoint.unix else "tcp",
            manual_ack=options.manual_ack,
        )
        c.max_inflight_messages_set(options.max_inflight)
        c.max_queued_messages_set(MAX_QUEUED)
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        if options.username is not None:
            c.username_pw_set(options.username, options.password)
        if endpoint.tls:
            c.tls_set_context(tls_context(options))
        if options.will is not None:
            w = options.will
            c.will_set(w.topic, w.payload, qos=w.qos, retain=w.retain)
        c.on_connect = self._handle_connect
        c.on_disconnect = self._handle_disconnect
        c.on_message = self._handle_message
        c.on_subscribe = self._handle_subscribe
        c.on_socket_open = self._handle_socket_open
        c.on_connect_fail = self._handle_connect_fail
        self._client = c
        self.driven = options.driven
        if self.driven:
            # with this set, paho queues packets instead of writing each one: poll() does
            c.on_socket_register_write = self._handle_queued
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._wake_fd = self._wake_r.fileno()
            self._woken = False
            self._owner: int | None = None
            self._next_attempt = 0.0
            self._backoff = 0.0
            self._next_misc = 0.0

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float | None = 10.0) -> None:
        """Connect and start the network thread; wait for CONNACK when ``timeout`` is set."""
        props = Properties(PacketTypes.CONNECT)
        if self.options.session_expiry:
            props.SessionExpiryInterval = self.options.session_expiry
        try:
            self._client.connect_async(
                self.endpoint.host,
                self.endpoint.port or 1883,
                keepalive=self.options.keepalive,
                clean_start=self.options.clean_start,
                properties=props,
            )
        except (OSError, ValueError) as exc:
            raise BrokerError(f"cannot connect to broker at {self.where()}: {exc}") from None
        if not self.driven:
            self._client.loop_start()
        if timeout is None:
            return
        # settles early on a refusal retrying cannot fix (bad credentials, TLS verification)
        self._wait(self._settled, timeout)
        if not self.connected.is_set():
            why = self._refused or f"no answer within {timeout:g}s"
            self.stop()
            error = BrokerRefused if self.refused_for_good else BrokerError
            raise error(f"cannot connect to broker at {self.where()}: {why}")

    def where(self) -> str:
        """The broker for messages: its url, or the list of its nodes."""
        if len(self.endpoints) == 1:
            return str(self.endpoint)
        return ", ".join(str(e) for e in self.endpoints)

    def wait_subscribed(self, timeout: float) -> bool:
        """Wait until the broker acknowledged the subscriptions (polling, when driven)."""
        return self._wait(self.subscribed, timeout)

    def _wait(self, event: threading.Event, timeout: float) -> bool:
        if not self.driven:
            return event.wait(timeout)
        deadline = time.monotonic() + timeout
        while not event.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.poll(min(left, 0.05))
        return True

    def stop(self, *, will: bool = False) -> None:
        """Disconnect cleanly (``will=True`` asks the broker to publish the Last Will: MQTT v5
        only; a 3.1.1 broker discards the Will on every clean disconnect)."""
        self._closing = True
        props = None
        if will:
            # reason code 0x04: "disconnect with will message"
            rc = ReasonCode(PacketTypes.DISCONNECT, identifier=4)
            self._client.disconnect(reasoncode=rc, properties=props)
        else:
            self._client.disconnect()
        if not self.driven:
            self._client.loop_stop()
            return
        sock = self._sock()
        deadline = time.monotonic() + 1.0
        while sock is not None and self._sock() is sock:
            self._write(sock)  # the DISCONNECT; paho closes the socket once it is out
            if not self._client.want_write() or time.monotonic() > deadline:
                break
            with contextlib.suppress(OSError, ValueError):
                select.select([], [sock], [], 0.1)
        if sock is not None and self._sock() is sock:
            sock.close()  # no DISCONNECT went out (not connected): just close
        self._wake_r.close()
        self._wake_w.close()

    # -- driving the connection (driven mode) --------------------------------------------

    def poll(self, timeout: float = 0.0) -> None:
        """One turn of a driven connection: send what is queued, wait up to ``timeout``
        seconds for the broker or a :meth:`wake`, read what arrived (``on_message`` runs
        here, on this thread), keep the connection alive, and reconnect when it is due.

        One turn reads at most one buffer's worth (64 KiB), so a flood of messages comes
        in batches the owner can handle between two turns.
        """
        c = self._client
        self._owner = threading.get_ident()
        sock = self._sock()
        if sock is None:
            if not self._closing and time.monotonic() >= self._next_attempt:
                self._reconnect()
            sock = self._sock()
            if sock is None:
                self._sleep(min(timeout, max(0.0, self._next_attempt - time.monotonic())))
                return
        self._write(sock)
        if self._sock() is not sock:
            return  # writing found the connection broken
        if type(sock) is not BufferedSocket:
            self._poll_plain(sock, timeout)
            return
        ready = sock.pending() > 0 or sock.error is not None
        fd, wake = sock.fileno(), self._wake_fd
        try:
            r, w, _ = select.select(
                [fd, wake], [fd] if sock.unsent else [], [], 0.0 if ready else timeout
            )
        except (OSError, ValueError):
            r, w = [], []
        if self._woken or wake in r:
            self._drain_wake()
        if w:
            sock.flush()
        if ready or fd in r:
            sock.fills = 1
            try:
                while c.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS:
                    if self._sock() is not sock or not sock.buffered:
                        break
            finally:
                sock.fills = 0
        self._misc()

    def _poll_plain(self, sock: Any, timeout: float) -> None:
        """poll() on paho's own socket (speed-ups off): paho's public loop_read/loop_write."""
        c = self._client
        ready = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
        fd, wake = sock.fileno(), self._wake_fd
        try:
            r, w, _ = select.select(
                [fd, wake], [fd] if c.want_write() else [], [], 0.0 if ready else timeout
            )
        except (OSError, ValueError):
            r, w = [], []
        if self._woken or wake in r:
            self._drain_wake()
        if w:
            c.loop_write()
        if ready or fd in r:
            for _ in range(PLAIN_READS):
                if c.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS or c.socket() is not sock:
                    break
                if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                    try:
                        more, _, _ = select.select([fd], [], [], 0.0)
                    except (OSError, ValueError):
                        break
                    if not more:
                        break
        self._misc()

    def _misc(self) -> None:
        now = time.monotonic()
        if now >= self._next_misc and self._client.socket() is not None:
            self._next_misc = now + MISC_EVERY
            self._client.loop_misc()

    def flush(self) -> None:
        """Send everything queued now, rather than at the start of the next poll()."""
        sock = self._sock()
        if self.driven and sock is not None:
            self._write(sock)

    def _sock(self) -> Any:
        """paho's socket: a :class:`BufferedSocket` with the speed-ups on, else its own."""
        return self._client.socket()

    def wake(self) -> None:
        """Make the owner's poll() return now; safe from any thread."""
        if self.driven and not self._woken:
            self._woken = True
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0")

    def _drain_wake(self) -> None:
        # cleared before the owner looks at its work, so a wake() from now on is seen
        self._woken = False
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass

    def _sleep(self, timeout: float) -> None:
        if timeout > 0 and not self._woken:
            with contextlib.suppress(OSError, ValueError):
                select.select([self._wake_r], [], [], timeout)
        self._drain_wake()

    def _write(self, sock: Any) -> None:
        buffered = type(sock) is BufferedSocket
        if buffered:
            sock.batch = True
        if self._client.want_write():
            self._client.loop_write()  # paho's packets into the socket's buffer
        if buffered and sock.unsent:
            sock.flush()  # one send for all of them

    def _reconnect(self) -> None:
        """Open a new connection (the CONNECT goes out with the next write)."""
        try:
            self._client.reconnect()
        except (OSError, ValueError) as exc:
            self._connect_failed(self._client, exc)

    def _schedule_retry(self, *, lost: bool) -> None:
        """Choose the node and the delay of the next attempt.

        After a failed attempt the next node of the url list is tried at once (a short
        jitter); once every node failed, the delay doubles per round up to
        :data:`MAX_BACKOFF`, jittered so a fleet does not stampede a restarted broker.
        After losing an established connection, the first retry comes in 0.2-1 s.
        """
        if self._retry_now:
            self._retry_now = False
            delay = 0.05
        else:
            n = len(self.endpoints)
            if n > 1:
                self._use_node((self._node + 1) % n)
            if lost:
                self._failures = 0
                delay = random.uniform(0.2, 1.0)
            else:
                self._failures += 1
                if n > 1 and self._failures % n:
                    delay = random.uniform(0.05, 0.3)
                else:
                    cap = min(MAX_BACKOFF, 2.0 ** (self._failures // n))
                    delay = random.uniform(cap / 2, cap)
        if self.driven:
            self._backoff = delay
            self._next_attempt = time.monotonic() + delay
        else:
            self._client.reconnect_delay_set(min_delay=delay, max_delay=delay)  # type: ignore[arg-type]

    def _use_node(self, node: int) -> None:
        if node == self._node:
            return
        ep = self.endpoints[node]
        if self._client.socket() is not None or not paho_compat.move_to(
            self._client, ep.host, ep.port or 1883
        ):
            return  # still open, or a paho that cannot move: stay on this node
        self._node = node
        self.endpoint = ep

    def _handle_queued(self, client: Any, userdata: Any, sock: Any) -> None:
        # a publish from another thread (a handler's progress report) must not wait for
        # the owner's next turn
        if self._owner is not None and threading.get_ident() != self._owner:
            self.wake()

    # -- publishing ----------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 1,
        retain: bool = False,
        *,
        response_topic: str | None = None,
        correlation: bytes | None = None,
        expiry: int | None = None,
    ) -> bool:
        """Queue a publish; False when paho refused it (queue full or not connected) or
        when it is larger than the broker accepts (logged, naming the topic and both sizes).

        Under MQTT 3.1.1 the v5 properties (response topic, correlation, expiry) are not
        sent; on a broker without retained messages, ``retain`` is dropped.
        """
        if not self._allowed(topic, payload):
            return False
        retain = retain and self.limits.retain_available
        props = None
        if self.protocol == "5" and (response_topic or correlation or expiry):
            props = Properties(PacketTypes.PUBLISH)
            if response_topic:
                props.ResponseTopic = response_topic
            if correlation:
                props.CorrelationData = correlation
            if expiry:
                props.MessageExpiryInterval = expiry
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.warning("publish to %s refused: %s", topic, mqtt.error_string(info.rc))
            return False
        return True

    def publish_tracked(
        self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False
    ) -> Delivery:
        """Queue a publish and return its :class:`Delivery`, to learn when the broker has it.

        One larger than the broker accepts is not sent: its Delivery is ``refused``.
        """
        if not self._allowed(topic, payload):
            return Delivery(None, refused=self._too_large(topic, payload))
        retain = retain and self.limits.retain_available
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if qos > 0 and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            # paho keeps it and sends it once connected (to whichever node): pending, so
            # its PUBACK is seen, rather than an error its wait would raise for ever
            info.rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        return Delivery(info)

    def fits(self, topic: str, payload: bytes | str) -> bool:
        """True when the broker accepts a publish this large (CONNACK Maximum Packet Size)."""
        return self.limits.fits(topic, payload)

    def _allowed(self, topic: str, payload: bytes | str) -> bool:
        if self.limits.fits(topic, payload):
            return True
        # sending it would make the broker disconnect us, and paho would send it again on
        # every reconnect: a loop that blocks everything behind it
        log.error("%s", self._too_large(topic, payload))
        return False

    def _too_large(self, topic: str, payload: bytes | str) -> str:
        return (
            f"not publishing to {topic}: {connack.publish_size(topic, payload)} bytes, and the "
            f"broker at {self.endpoint} accepts packets of at most "
            f"{self.limits.maximum_packet_size} bytes (CONNACK Maximum Packet Size)"
        )

    def ack(self, mid: int, qos: int) -> None:
        """Acknowledge an inbound message (manual_ack mode): after it is durable."""
        if qos > 0:
            self._client.ack(mid, qos)

    # -- paho callbacks: hand off, never work --------------------------------------------

    def _handle_socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        self._connack_seen = False
        # paho leaves Nagle on: a small publish then waits ~40 ms for a delayed ACK
        if not self.endpoint.unix:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _handle_connect_fail(self, client: Any, userdata: Any) -> None:
        # paho calls this from inside its ``except OSError`` around the socket connect and
        # TLS handshake, so the exception is still in hand: keep it for the error message
        self._connect_failed(client, sys.exc_info()[1])

    def _connect_failed(self, client: Any, exc: BaseException | None) -> None:
        fatal = False
        if isinstance(exc, ssl.SSLCertVerificationError):
            why = (
                f"TLS certificate verification failed: {exc.verify_message} (check tls_ca, "
                "and that the url's host is a name the broker's certificate was issued for)"
            )
            fatal = True
        elif isinstance(exc, ssl.SSLError):
            why = f"TLS handshake failed: {exc.reason or exc} (is the port a TLS listener?)"
            fatal = True
        elif exc is not None:
            why = str(exc) or type(exc).__name__
        else:
            why = "connection failed"
        if len(self.endpoints) > 1:
            why = f"{self.endpoint}: {why}"
        self._refused = why
        if self._ever_connected:
            log.error("cannot reconnect to %s: %s", self.endpoint, why)
        elif fatal:
            self.refused_for_good = True
            self._give_up(client)
            return
        elif self.fail_fast and self._failures + 1 >= len(self.endpoints):
            self._give_up(client)  # every node tried once: the caller waits for one
            return
        self._schedule_retry(lost=False)

    def _give_up(self, client: Any) -> None:
        """Stop retrying a first connection that cannot succeed; start() raises."""
        self._closing = True
        client.disconnect()
        self._settled.set()

    def _refuse(self, client: Any, why: str) -> None:
        """A broker clawd cannot work with: say so once, and stop trying at start-up."""
        self._refused = why
        log.error("%s", why)
        if not self._ever_connected:
            self.refused_for_good = True
            self._give_up(client)

    def _fall_back(self, client: Any, why: str) -> bool:
        """Speak MQTT 3.1.1 from the next attempt on (``protocol = "auto"`` only)."""
        if self.options.protocol != "auto" or self.protocol != "5" or self._ever_connected:
            return False
        if not paho_compat.use_mqtt311(client, mqtt.MQTTv311, self.options.clean_start):
            return False
        self.protocol = "3.1.1"
        self._retry_now = True
        log.warning(
            'broker at %s %s: falling back to MQTT 3.1.1 (set [broker] protocol = "3.1.1" '
            "to skip the v5 attempt); %s",
            self.endpoint,
            why,
            V311_NOTE,
        )
        return True

    def _handle_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._connack_seen = True
        if rc.is_failure:
            code = rc.value
            if code == connack.UNSUPPORTED_VERSION and self._fall_back(client, "refused MQTT v5"):
                return
            if code == 0x9A and self.options.will is not None and self.options.will.retain:
                # no retained messages here, not even a retained Will: send it unretained
                w = self.options.will
                client.will_set(w.topic, w.payload, qos=w.qos, retain=False)
                self.limits.retain_available = False
                self._retry_now = True
                return
            if code == connack.UNSUPPORTED_VERSION:
                other = "3.1.1" if self.protocol == "5" else "5"
                hint = (
                    f"the broker does not speak MQTT {self.protocol}; set [broker] protocol = "
                    f'"{other}" or "auto"'
                )
            else:
                hint = connack.refusal_hint(code)
            why = f"the broker at {self.endpoint} refused the connection: {rc}"
            why += f"; {hint}" if hint else ""
            self._refused = why
            log.error("%s", why)
            if connack.is_permanent(code) and not self._ever_connected:
                # at start-up, retrying bad credentials only hammers the broker; later
                # (credentials rotated under us) the capped backoff keeps retrying
                self.refused_for_good = True
                self._give_up(client)
            return
        limits = self.limits = Limits.from_properties(
            {n: getattr(props, n) for n in LIMIT_NAMES if hasattr(props, n)}
        )
        unusable = limits.unusable()
        if unusable:
            self._refuse(client, f"cannot use the broker at {self.endpoint}: {unusable}")
            client.disconnect()
            return
        self._apply_limits(client, limits)
        self._ever_connected = True
        self._refused = None
        self._failures = 0
        if self.driven:
            self._backoff = 0.0
        subs = self.options.subscriptions
        if subs:
            # one filter per SUBSCRIBE: some brokers never acknowledge a SUBSCRIBE with
            # several filters (aedes with redis persistence), and it costs a few packets
            with self._lock:
                self._sub_topics.clear()
                for t, q in subs:
                    result, mid = client.subscribe(t, qos=q)
                    if mid is not None:
                        self._pending_subs.add(mid)
                        self._sub_topics[mid] = (t, q)
                if not self._pending_subs:
                    self.subscribed.set()
        else:
            self.subscribed.set()
        self.connected.set()
        self._settled.set()
        log.info(
            "connected to %s as %s (MQTT %s)", self.endpoint, self.options.client_id, self.protocol
        )
        self._on_state(True, "connected")

    def _apply_limits(self, client: Any, limits: Limits) -> None:
        """Follow what the CONNACK said: in-flight window, retained messages, packet size."""
        wanted = self.options.max_inflight
        if limits.receive_maximum < 65535:
            # more QoS 1 publishes in flight than the broker's Receive Maximum is a protocol
            # error (the broker may disconnect); paho does not read it, so clawd caps paho.
            # A cap stays for later connections: lifting it while publishes wait behind it
            # would strand them in paho
            cap = limits.receive_maximum
            paho_compat.cap_inflight(client, min(wanted, cap) if wanted else cap)
        if not limits.retain_available:
            self._say_once(
                "retain",
                f"the broker at {self.endpoint} keeps no retained messages: worker status, "
                "metrics and routes go out unretained (workers are found from their "
                "heartbeats)",
            )
        if limits.maximum_packet_size:
            log.info(
                "broker at %s accepts packets up to %d bytes",
                self.endpoint,
                limits.maximum_packet_size,
            )

    def _say_once(self, key: str, text: str) -> None:
        if key not in self._said:
            self._said.add(key)
            log.warning("%s", text)

    def _handle_subscribe(self, client: Any, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        with self._lock:
            topic, qos = self._sub_topics.pop(mid, ("?", 1))
        for rc in rcs:
            if rc.is_failure:
                log.error(
                    "broker at %s refused the subscription to %s: %s", self.endpoint, topic, rc
                )
            elif rc.value < qos:
                log.warning(
                    "broker at %s granted QoS %d for %s (asked %d): messages on it may be lost",
                    self.endpoint,
                    rc.value,
                    topic,
                    qos,
                )
        with self._lock:
            self._pending_subs.discard(mid)
            if not self._pending_subs:
                self.subscribed.set()

    def _handle_disconnect(
        self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        was_up = self.connected.is_set()
        self.connected.clear()
        self.subscribed.clear()
        if self._closing:
            return
        if not self._connack_seen and not self._ever_connected:
            # closed with no answer to CONNECT: a broker without v5 may do that
            if self._fall_back(client, "closed the connection on an MQTT v5 CONNECT"):
                self._schedule_retry(lost=False)
                return
            tried = (
                "MQTT v5 and 3.1.1"
                if self.options.protocol == "auto"
                else "MQTT " + (self.protocol)
            )
            self._refused = (
                f"the broker at {self.endpoint} closed the connection without answering "
                f"CONNECT ({rc}; tried {tried}): it is not an MQTT listener, or it is a TLS "
                "listener (use mqtts://), or it wants a client certificate (set tls_cert and "
                "tls_key)"
            )
        hint = connack.disconnect_hint(rc.value) if was_up else ""
        node = self.endpoint  # before the retry moves on to the next one
        if not was_up:
            # a failed attempt (e.g. refused after a credential change): the backoff
            # keeps growing up to 30 s; resetting it here would retry every second forever
            self._schedule_retry(lost=False)
            return
        self._schedule_retry(lost=True)
        log.warning("disconnected from %s: %s%s; reconnecting", node, rc, hint)
        self._on_state(False, str(rc))

    def _handle_message(self, client: Any, userdata: Any, msg: Any) -> None:
        props = getattr(msg, "properties", None)
        rt = corr = exp = None
        if props is not None:
            rt = getattr(props, "ResponseTopic", None)
            corr = getattr(props, "CorrelationData", None)
            exp = getattr(props, "MessageExpiryInterval", None)
        self._on_message(
            Message(msg.topic, msg.payload, msg.qos, bool(msg.retain), msg.mid, rt, corr, exp)
        )
