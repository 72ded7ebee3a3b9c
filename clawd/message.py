"""What a transport hands its owner: an inbound :class:`Message` and the
:class:`Delivery` of a tracked publish, both free of paho types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Message:
    """An inbound message, free of paho types."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    mid: int = 0
    response_topic: str | None = None
    correlation: bytes | None = None
    expiry: float | None = None


class Delivery:
    """A QoS>0 publish on its way: ``acknowledged`` once the broker has answered it."""

    __slots__ = ("_info", "refused")

    def __init__(self, info: Any, refused: str | None = None) -> None:
        self._info = info
        #: why it was never sent (larger than the broker accepts), else None
        self.refused = refused

    @property
    def acknowledged(self) -> bool:
        """True once the broker acknowledged it (PUBACK): the broker owns it now.

        A publish made while the link was down is pending, not an error: the outbox sends
        it again once the link is back.
        """
        if self._info is None:
            return False
        try:
            return bool(self._info.is_published())
        except (RuntimeError, ValueError):
            return False

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for the acknowledgement; True when it came."""
        if self._info is None:
            return False
        try:
            self._info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            return False
        return self.acknowledged
