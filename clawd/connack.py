"""What a broker's CONNACK means for clawd: a refusal explained, and the limits it sets.

Free of paho: :mod:`clawd.transport` hands in the reason code and the CONNACK properties
as a plain dict. MQTT 3.1.1 return codes arrive already mapped to their v5 reason codes
(1 -> 0x84, 2 -> 0x85, 3 -> 0x88, 4 -> 0x86, 5 -> 0x87), so one table serves both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: reason code of "Unsupported Protocol Version" (3.1.1's return code 1 maps to it)
UNSUPPORTED_VERSION = 0x84

AUTH_HINT = (
    "check [broker] username and the password (password_file, or the systemd credential "
    "broker-password)"
)

#: refusals retrying cannot fix: what to do about each
PERMANENT: dict[int, str] = {
    0x81: "the broker could not read clawd's CONNECT (a broker bug, or not an MQTT broker)",
    0x82: "the broker saw a protocol error in clawd's CONNECT",
    0x84: "the broker does not speak this MQTT version; set [broker] protocol",
    0x85: "the broker rejected the client id; set [broker] client_id",
    0x86: AUTH_HINT,
    0x87: AUTH_HINT + "; and the broker's ACL for this user",
    0x8A: "this client is banned by the broker",
    0x8C: AUTH_HINT,
    0x90: "the broker refused the Last Will topic; check the broker's ACL and topic limits",
    0x95: "the broker refused the size of the CONNECT",
    0x99: "the broker refused the Last Will payload",
    0x9B: "the broker does not allow QoS 1, which clawd needs for at-least-once delivery",
}

#: refusals worth a retry (on the next node of the url list when there is one)
TRANSIENT = {0x80, 0x83, 0x88, 0x89, 0x97, 0x9C, 0x9D, 0x9F}


#: why a broker ends an established connection, for the ones clawd can explain
DISCONNECTS: dict[int, str] = {
    0x8E: "another client connected with the same client id (two clawd with one id?)",
    0x93: "more QoS 1 publishes in flight than the broker's Receive Maximum",
    0x95: "a packet larger than the broker's Maximum Packet Size",
    0x97: "the broker's quota for this client is exceeded",
    0x9A: "a retained publish, and the broker keeps no retained messages",
    0x9B: "a QoS the broker does not allow",
    0x9C: "the broker asks clients to use another server",
    0x9D: "the broker moved",
}


def disconnect_hint(code: int) -> str:
    """Why the broker ended an established connection, as " (...)" or ""."""
    why = DISCONNECTS.get(code)
    return f" ({why})" if why else ""


def refusal_hint(code: int) -> str:
    """What to do about a refused CONNECT, or "" when there is nothing to add."""
    return PERMANENT.get(code, "")


def is_permanent(code: int) -> bool:
    """True when retrying the same CONNECT cannot succeed."""
    return code in PERMANENT


@dataclass
class Limits:
    """What the broker said it allows (MQTT v5 CONNACK properties; 3.1.1 says nothing,
    so the defaults are the protocol's own)."""

    #: highest QoS the broker accepts from this client
    maximum_qos: int = 2
    #: QoS 1/2 publishes the broker takes in flight at once (65535: no limit given)
    receive_maximum: int = 65535
    #: largest packet the broker accepts, bytes (0: no limit given)
    maximum_packet_size: int = 0
    retain_available: bool = True
    wildcard_available: bool = True
    shared_available: bool = True

    @classmethod
    def from_properties(cls, props: dict[str, Any]) -> Limits:
        """Read the CONNACK properties (paho's attribute names, spaces removed)."""
        return cls(
            maximum_qos=int(props.get("MaximumQoS", 2)),
            receive_maximum=int(props.get("ReceiveMaximum", 65535)),
            maximum_packet_size=int(props.get("MaximumPacketSize", 0)),
            retain_available=bool(props.get("RetainAvailable", 1)),
            wildcard_available=bool(props.get("WildcardSubscriptionAvailable", 1)),
            shared_available=bool(props.get("SharedSubscriptionAvailable", 1)),
        )

    def unusable(self) -> str | None:
        """Why clawd cannot work with this broker at all, or None."""
        if self.maximum_qos < 1:
            return (
                f"the broker allows QoS {self.maximum_qos} only (CONNACK Maximum QoS); clawd "
                "needs QoS 1 so that no acknowledged task is lost"
            )
        if not self.wildcard_available:
            return (
                "the broker does not allow wildcard subscriptions (CONNACK Wildcard "
                "Subscription Available = 0); clawd subscribes to <prefix>/tasks/#"
            )
        return None

    def fits(self, topic: str, payload: bytes | str) -> bool:
        """True when a QoS 1 PUBLISH of this topic and payload is within the packet limit."""
        if not self.maximum_packet_size:
            return True
        return publish_size(topic, payload) <= self.maximum_packet_size


def publish_size(topic: str, payload: bytes | str) -> int:
    """The size of a QoS 1 PUBLISH packet (without properties), bytes."""
    body = 2 + len(topic.encode()) + 2 + 1  # topic length, topic, packet id, properties length
    body += len(payload.encode() if isinstance(payload, str) else payload)
    length = 1
    n = body
    while n >= 128:
        n //= 128
        length += 1
    return 1 + length + body
