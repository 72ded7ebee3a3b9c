"""The faults a seed injects, and how often: one profile per seed, drawn from its RNG.

Message faults stay within what MQTT allows: a QoS 0 message may be lost, a QoS 1 message
may arrive twice, any message may be late, and only the order of one publisher's messages
on one topic is kept (:mod:`clawd.sim.net`). Process and broker faults (crashes, stalls,
partitions, drains, restarts) are scheduled by :mod:`clawd.sim.run` at times drawn here.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: every kind of fault, in the order reports list them
KINDS = (
    "worker_crash",
    "worker_takeover",
    "worker_stall",
    "worker_partition",
    "worker_drain",
    "worker_retire",
    "poison_crash",
    "client_drop",
    "broker_restart",
    "distributor_crash",
    "leader_stall",
    "leader_crash",
    "deposed",
    "msg_dup",
    "msg_lost_qos0",
    "msg_late",
    "resubmit",
    "stale_will",
)

#: the scheduled faults, drawn per run (message faults happen per message instead)
SCHEDULED = (
    "worker_crash",
    "worker_takeover",
    "worker_stall",
    "worker_partition",
    "worker_drain",
    "worker_retire",
    "client_drop",
    "broker_restart",
    "distributor_crash",
    "resubmit",
    "member_lost",
    "stale_will",
)


@dataclass
class Profile:
    """How hostile one run is."""

    #: one-way latency of a message: uniform in [min, max] seconds
    latency_min: float
    latency_max: float
    #: chance that a message is late by up to ``late_max`` seconds
    late_rate: float
    late_max: float
    #: chance that a QoS 0 message is lost
    qos0_loss: float
    #: chance that a QoS 1 message is delivered twice
    dup_rate: float
    #: how many of each scheduled fault the run gets
    counts: dict[str, int]

    @classmethod
    def draw(cls, rng: random.Random, *, calm: bool = False) -> Profile:
        if calm:
            return cls(0.0005, 0.003, 0.0, 0.0, 0.0, 0.0, {k: 0 for k in SCHEDULED})
        hostile = rng.random()  # some seeds are quiet, some are storms
        counts = {k: _count(rng, hostile) for k in SCHEDULED}
        return cls(
            latency_min=0.0005,
            latency_max=rng.choice((0.002, 0.01, 0.05)),
            late_rate=rng.choice((0.0, 0.01, 0.05)) * hostile,
            late_max=rng.choice((0.5, 2.0, 6.0)),
            qos0_loss=rng.choice((0.0, 0.05, 0.3)),
            dup_rate=rng.choice((0.0, 0.01, 0.05)) * hostile,
            counts=counts,
        )


def _count(rng: random.Random, hostile: float) -> int:
    # most faults are rare in most runs; a hostile run gets several of each
    return sum(1 for _ in range(4) if rng.random() < 0.15 + 0.45 * hostile)


class Faults:
    """The per-message decisions, and the tally of every fault injected."""

    def __init__(self, rng: random.Random, profile: Profile) -> None:
        self.rng = rng
        self.profile = profile
        self.injected: Counter[str] = Counter()
        #: told of every QoS 1 message that may arrive twice (the packet): duplicated
        #: here, or sent again after a reconnect because its PUBACK never came
        self.on_dup: Callable[[Any], None] | None = None
        #: told of every late message (the client id at one end, and the packet)
        self.on_late: Callable[[str, Any], None] | None = None

    def end(self) -> None:
        """No more message faults: the run is settling (latency stays)."""
        p = self.profile
        p.late_rate = p.qos0_loss = p.dup_rate = 0.0

    def count(self, kind: str, n: int = 1) -> None:
        self.injected[kind] += n

    def latency(self) -> float:
        p = self.profile
        delay = self.rng.uniform(p.latency_min, p.latency_max)
        if p.late_rate and self.rng.random() < p.late_rate:
            self.count("msg_late")
            delay += self.rng.uniform(0.0, p.late_max)
        return delay

    def lose_qos0(self) -> bool:
        lost = bool(self.profile.qos0_loss) and self.rng.random() < self.profile.qos0_loss
        if lost:
            self.count("msg_lost_qos0")
        return lost

    def duplicate(self, pkt: Any) -> bool:
        """Whether this QoS 1 message (``pkt``) is to arrive twice."""
        dup = bool(self.profile.dup_rate) and self.rng.random() < self.profile.dup_rate
        if dup:
            self.count("msg_dup")
            if self.on_dup is not None:
                self.on_dup(pkt)
        return dup
