"""Everything clawd does to paho beyond its public API, in one place, and only where it is safe.

Two speed-ups reach into paho's internals:

- **buffered socket**: a client class whose private ``_create_socket`` wraps paho's socket
  in a :class:`~clawd.sockbuf.BufferedSocket` (one system call for many packets). It is a
  subclass, so it applies per client: only the clients clawd makes get it.
- **shared reason-code names**: paho's ``ReasonCode.__init__`` copies its whole table of
  reason names (``dict(type(self).names)``, from a read-only mapping) for every PUBACK it
  reads, though nothing ever writes to the copy: every instance now refers to the class's
  table. Process-wide like the
  property tables, checked against paho's own constructor before it is installed.
- **shared property tables**: paho's ``Properties.__init__`` rebuilds three lookup tables
  (about 8 µs) for every PUBLISH and PUBACK it reads, and ``clear()`` probes all 27
  property names: together a sixth of the distributor's CPU under load. The tables never
  change, so every instance can share one copy. paho builds these objects in its packet
  parser, which no client owns, so this one is process-wide (it changes no behaviour, which
  the check below verifies before installing it); it is undone when a client is made with
  the speed-ups off.

Both are written for paho-mqtt 2.1 and 2.2 (:data:`SUPPORTED`). With any other version, when
the sanity check run before installing them fails, or when ``CLAWD_PAHO_COMPAT=0`` is set,
clawd uses paho exactly as it comes: its own client class, socket and properties; the
transport then reads and writes through paho's public ``loop_read``/``loop_write``.

paho itself is imported by :mod:`clawd.transport` only: it hands the classes in (:class:`Paho`).
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from clawd.sockbuf import BufferedSocket

log = logging.getLogger("clawd.transport")

#: the paho-mqtt (major, minor) versions the speed-ups were written for
SUPPORTED = ((2, 1), (2, 2))
#: ``0``/``off``/``false``/``no`` turns the speed-ups off (paho as it comes)
ENV = "CLAWD_PAHO_COMPAT"
_OFF = {"0", "off", "false", "no"}
#: the property names set in the install-time check
_SAMPLE = {
    "ResponseTopic": "clawd/check",
    "CorrelationData": b"\x00\x01",
    "MessageExpiryInterval": 30,
    "UserProperty": [("k", "v")],
}


@dataclass(frozen=True)
class Paho:
    """The parts of paho the speed-ups touch, handed in by :mod:`clawd.transport`."""

    version: str
    client: type[Any]
    properties: type[Any]
    publish_type: int
    #: paho's ReasonCode class and the DISCONNECT packet type its constructor special-cases
    reason_code: type[Any] | None = None
    disconnect_type: int = 14


def version_gate(version: str) -> str | None:
    """None when the speed-ups were written for paho ``version``, else why not."""
    try:
        major, minor = (int(x) for x in version.split(".")[:2])
    except ValueError:
        return f"paho-mqtt version {version!r} cannot be read"
    if (major, minor) in SUPPORTED:
        return None
    known = ", ".join(f"{a}.{b}" for a, b in SUPPORTED)
    return f"paho-mqtt {version} is not a version they were written for ({known})"


class Compat:
    """The decision for the clients made now: speed-ups on (``enabled``) or paho as it comes.

    ``enabled=None`` follows :data:`ENV` (on by default); ``False`` forces them off; ``True``
    asks for them, still subject to the version gate and the check.
    """

    def __init__(self, paho: Paho, enabled: bool | None = None) -> None:
        self.paho = paho
        if enabled is None:
            enabled = os.environ.get(ENV, "1").strip().lower() not in _OFF
        why = None if enabled else f"{ENV} or the caller turned them off"
        why = why or version_gate(paho.version) or _check(paho)
        #: why the speed-ups are off (None: they are on)
        self.off_reason = why
        self.enabled = why is None
        if self.enabled:
            _share_tables(paho)
            _share_reason_names(paho)
        else:
            _restore_tables(paho)
            _restore_reason_names(paho)
            _note(why or "", logging.INFO if enabled is False else logging.WARNING)

    def client_class(self) -> type:
        """The client class to instantiate: paho's own, or one on a buffered socket."""
        if not self.enabled:
            return self.paho.client
        return _buffered_client(self.paho.client)


# -- the buffered socket -----------------------------------------------------------------

_BUFFERED: dict[type, type] = {}


def _buffered_client(base: type) -> type:
    cls = _BUFFERED.get(base)
    if cls is None:

        def _create_socket(self: Any) -> Any:
            return BufferedSocket(base._create_socket(self))  # type: ignore[attr-defined]

        cls = type("BufferedClient", (base,), {"_create_socket": _create_socket})
        _BUFFERED[base] = cls
    return cls


# -- the property tables -----------------------------------------------------------------

#: paho's own methods, kept to undo the speed-up
_ORIGINAL: dict[type, tuple[Callable[..., None], Callable[..., None]]] = {}


def _tables(paho: Paho) -> tuple[dict[str, Any], tuple[str, ...]] | None:
    proto = paho.properties(paho.publish_type)
    try:
        tables = {k: getattr(proto, k) for k in ("types", "names", "properties")}
    except AttributeError:
        return None
    names = tuple(n.replace(" ", "") for n in tables["names"])
    return tables, names


def _shared_methods(tables: dict[str, Any], names: tuple[str, ...]) -> tuple[Any, Any]:
    fixed = len(tables) + 1  # packetType and the tables: what an empty instance holds

    def __init__(self: Any, packetType: int) -> None:
        d = self.__dict__
        d["packetType"] = packetType
        d.update(tables)

    def clear(self: Any) -> None:
        d = self.__dict__
        if len(d) > fixed:
            for name in names:
                d.pop(name, None)

    return __init__, clear


def _check(paho: Paho) -> str | None:
    """Run both speed-ups on sample data and compare with paho's own; None when equal."""
    if not inspect.isfunction(getattr(paho.client, "_create_socket", None)):
        return "paho's client has no _create_socket method"
    if list(inspect.signature(paho.client._create_socket).parameters) != ["self"]:  # type: ignore[attr-defined]
        return "paho's _create_socket takes arguments it did not take"
    if getattr(paho.properties, "_clawd_shared", False):
        return None  # installed and checked before
    found = _tables(paho)
    if found is None:
        return "paho's Properties builds its tables differently"
    init, clear = _shared_methods(*found)
    try:
        theirs = paho.properties(paho.publish_type)
        for k, v in _SAMPLE.items():
            setattr(theirs, k, v)
        wire = theirs.pack()
        ours = object.__new__(paho.properties)
        init(ours, paho.publish_type)
        ours.unpack(wire[:])
        same = ours.pack() == wire and all(
            getattr(ours, k, None) == getattr(theirs, k, None) for k in _SAMPLE
        )
        clear(ours)
        empty = paho.properties(paho.publish_type)
        same = same and ours.pack() == empty.pack() and not any(hasattr(ours, k) for k in _SAMPLE)
    except Exception as exc:  # a paho that differs in a way the check did not foresee
        return f"shared property tables failed the check ({exc!r})"
    return None if same else "shared property tables do not round-trip like paho's own"


def _share_tables(paho: Paho) -> None:
    cls = paho.properties
    if getattr(cls, "_clawd_shared", False):
        return
    found = _tables(paho)
    if found is None:
        return
    init, clear = _shared_methods(*found)
    _ORIGINAL[cls] = (cls.__init__, cls.clear)  # type: ignore[attr-defined]
    setattr(cls, "__init__", init)  # noqa: B010 - a method, replaced
    setattr(cls, "clear", clear)  # noqa: B010
    cls._clawd_shared = True  # type: ignore[attr-defined]


def _restore_tables(paho: Paho) -> None:
    cls = paho.properties
    original = _ORIGINAL.pop(cls, None)
    if original is not None:
        setattr(cls, "__init__", original[0])  # noqa: B010 - a method, put back
        setattr(cls, "clear", original[1])  # noqa: B010
        cls._clawd_shared = False  # type: ignore[attr-defined]


# -- the reason-code names ---------------------------------------------------------------

#: paho's own ReasonCode.__init__, kept to undo the speed-up
_REASON_INIT: dict[type, Callable[..., None]] = {}
#: (packet type, name, identifier) constructions compared with paho's own in the check
_REASON_SAMPLES = (
    (4, "Success", -1),
    (4, "Success", 0x10),
    (4, "Success", 0x87),
    (14, "Success", -1),
    (14, "Success", 0x8E),
    (9, "Granted QoS 1", -1),
)


def _reason_init(cls: type[Any], disconnect: int) -> Callable[..., None]:
    names = cls.names

    def __init__(self: Any, packetType: int, aName: str = "Success", identifier: int = -1) -> None:
        self.names = names  # read-only (a mapping proxy): paho's copy was never written to
        self.packetType = packetType
        if identifier == -1:
            if packetType == disconnect and aName == "Success":
                aName = "Normal disconnection"
            self.set(aName)
        else:
            self.value = identifier
            self.getName()  # paho's check that the code is valid for the packet type

    return __init__


def _reason_check(cls: type[Any], init: Callable[..., None]) -> bool:
    """Our constructor gives what paho's gives on the samples, and unpacks alike."""
    if not isinstance(getattr(cls, "names", None), Mapping):
        return False
    try:
        for packet, name, ident in _REASON_SAMPLES:
            theirs = cls(packet, name, ident)
            ours = object.__new__(cls)
            init(ours, packet, name, ident)
            if (ours.value, ours.getName(), ours.packetType) != (
                theirs.value,
                theirs.getName(),
                theirs.packetType,
            ):
                return False
            ours.unpack(bytes([theirs.value]))
            if ours != theirs:
                return False
    except Exception:  # a paho that differs in a way the check did not foresee
        return False
    return True


def _share_reason_names(paho: Paho) -> None:
    cls = paho.reason_code
    if cls is None or cls in _REASON_INIT:
        return
    init = _reason_init(cls, paho.disconnect_type)
    if not _reason_check(cls, init):
        log.info("paho's ReasonCode differs from the one shared names were written for: left as is")
        return
    _REASON_INIT[cls] = cls.__init__
    setattr(cls, "__init__", init)  # noqa: B010 - a method, replaced


def _restore_reason_names(paho: Paho) -> None:
    cls = paho.reason_code
    original = _REASON_INIT.pop(cls, None) if cls is not None else None
    if original is not None:
        setattr(cls, "__init__", original)  # noqa: B010 - a method, put back


_noted: set[str] = set()


def _note(why: str, level: int) -> None:
    # once per reason: every client made would otherwise say it again
    if why not in _noted:
        _noted.add(why)
        log.log(level, "paho speed-ups off: %s; using paho as it comes", why)


# -- the protocol version of a client made already ---------------------------------------


def use_mqtt311(client: Any, protocol: int, clean_session: bool) -> bool:
    """Make ``client`` send its next CONNECT as MQTT 3.1.1 (``protocol`` is paho's
    constant for it); False when this paho keeps the version elsewhere.

    paho fixes the version when a client is made, but downgrades its own clients the same
    way (3.1.1 to 3.1, on a CONNACK refusing the version), by setting these two
    attributes; doing the same keeps the client, its queued publishes and its callbacks.
    """
    if not hasattr(client, "_protocol"):
        return False
    client._protocol = protocol
    client._clean_session = clean_session
    return True


def cap_inflight(client: Any, value: int) -> None:
    """Cap the QoS>0 publishes ``client`` keeps in flight at ``value`` (> 0), also on an
    established connection: the broker's CONNACK Receive Maximum arrives on one.

    paho's setter refuses once connected, only because a change between 0 and a limit
    was not tested: paho counts what is in flight either way, and from a limit to a
    smaller one it sends the rest as PUBACKs free slots (as it does under any limit).
    """
    if value <= 0:
        raise ValueError("an in-flight cap must be positive")
    client._max_inflight_messages = value


def move_to(client: Any, host: str, port: int) -> bool:
    """Point the next (re)connect of ``client`` at another broker node; False when this
    paho keeps the address elsewhere.

    paho's ``host``/``port`` setters refuse while a reconnect is pending (its state is
    "connecting", not "closed"), which is exactly when a failed node must be left; its
    ``reconnect()`` reads these two attributes.
    """
    if not (hasattr(client, "_host") and hasattr(client, "_port")):
        return False
    client._host = host
    client._port = port
    return True
