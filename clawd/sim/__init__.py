"""Deterministic simulation of a whole clawd cluster in one process.

The real :class:`~clawd.distributor.Distributor` and real :class:`~clawd.worker.core.Worker`
objects run against an in-memory MQTT broker (:mod:`clawd.sim.broker`) and a simulated
clock (:mod:`clawd.sim.clock`); one seed decides the workload, every message latency and
every fault, so a failing run replays exactly with ``python -m clawd.sim --seed N``.
After a run, :mod:`clawd.sim.invariants` checks what the system promised.
"""

from clawd.sim.run import Report, simulate

__all__ = ["Report", "simulate"]
