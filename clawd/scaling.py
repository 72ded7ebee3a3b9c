"""Autoscaling decisions: scaling signals from the metrics snapshot, and worker concurrency.

Both halves are pure: :func:`signals` reads a ``clawd/metrics`` snapshot and says how many
slots and workers the system should have; :class:`ConcurrencyScaler` decides one worker's
concurrency from what it observes, with an injectable clock. Acting on them (starting
processes, re-announcing capacity) is left to their callers: a ``clawd_scale`` plugin such
as :mod:`clawd.scalers.local`, and the worker.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

#: counters whose rate is attempts ending per second: each freed a slot
THROUGHPUT_COUNTERS = ("ok", "failed", "retried")


def _num(value: Any) -> float:
    """A finite, non-negative number from a snapshot field, else 0 (snapshots are JSON)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if math.isfinite(value) and value > 0 else 0.0


def signals(
    snapshot: Mapping[str, Any],
    *,
    target_utilisation: float,
    max_wait: float,
    worker_capacity: int | None = None,
) -> dict[str, Any]:
    """Scaling signals from a ``clawd/metrics`` snapshot.

    The formula (``S`` is the observed time a task holds a slot)::

        throughput = rates.ok + rates.failed + rates.retried     # attempts ending per s
        S          = in_flight / throughput                      # Little's law; unknown if 0
        k          = min(1, S / max_wait)                        # 1 when S is unknown
        busy       = in_flight + backlog * k                     # slots busy to clear in time
        recommended_capacity = ceil(busy / target_utilisation)
        recommended_workers  = ceil(recommended_capacity / per_worker)

    ``backlog * S / max_wait`` slots finish ``backlog`` tasks within ``max_wait`` seconds;
    when a task takes longer than ``max_wait`` (or nothing has finished yet, so ``S`` is
    unknown) each queued task needs a slot of its own, hence the cap at 1. Dividing by the
    target leaves headroom. ``per_worker`` is the mean capacity of the online workers, else
    ``worker_capacity``, else 1. Idle (nothing queued or running) recommends 0; the result
    is never negative. Tasks waiting out a retry backoff (``delayed``) are reported but not
    counted as backlog: they are not runnable yet.

    :param snapshot: the document published on ``clawd/metrics``.
    :param target_utilisation: the share of slots meant to be busy, in (0, 1].
    :param max_wait: seconds a queued task should wait at most.
    :param worker_capacity: slots of one new worker, used when no worker is online.
    :returns: ``lanes`` ({lane: {depth, oldest_age}}), ``backlog``, ``oldest_age``,
        ``delayed``, ``in_flight``, ``capacity``, ``utilisation``, ``throughput``,
        ``service_time`` (None when unknown), ``workers_online``, ``online_workers``
        (ids), ``recommended_capacity``, ``recommended_workers`` and ``reason``.
    """
    if not 0 < target_utilisation <= 1:
        raise ValueError(f"target_utilisation must be in (0, 1], not {target_utilisation!r}")
    if not max_wait > 0:
        raise ValueError(f"max_wait must be > 0, not {max_wait!r}")
    raw_lanes = snapshot.get("lanes")
    lanes = {
        str(name): {
            "depth": int(_num(ln.get("depth"))),
            "oldest_age": _num(ln.get("oldest_age")),
        }
        for name, ln in (raw_lanes.items() if isinstance(raw_lanes, Mapping) else ())
        if isinstance(ln, Mapping)
    }
    backlog = sum(ln["depth"] for ln in lanes.values())
    oldest = max((ln["oldest_age"] for ln in lanes.values() if ln["depth"]), default=0.0)

    raw_workers = snapshot.get("workers")
    online = {
        str(wid): w
        for wid, w in (raw_workers.items() if isinstance(raw_workers, Mapping) else ())
        if isinstance(w, Mapping) and w.get("online") and _num(w.get("capacity")) > 0
    }
    capacity = int(sum(_num(w.get("capacity")) for w in online.values()))
    in_flight = int(sum(_num(w.get("in_flight")) for w in online.values()))
    utilisation = in_flight / capacity if capacity else 0.0

    rates = snapshot.get("rates")
    rates = rates if isinstance(rates, Mapping) else {}
    throughput = sum(_num(rates.get(k)) for k in THROUGHPUT_COUNTERS)
    service_time = in_flight / throughput if throughput > 0 and in_flight else None
    k = 1.0 if service_time is None else min(1.0, service_time / max_wait)
    busy = in_flight + backlog * k
    # round first: 0.8 * 5 / 0.8 is 5.000000000000001, not a reason for a sixth slot
    rec_capacity = math.ceil(round(busy / target_utilisation, 9))
    per_worker = max(1, capacity // len(online) if online else worker_capacity or 1)
    rec_workers = math.ceil(rec_capacity / per_worker)

    if not busy:
        reason = "idle: nothing queued or running"
    elif backlog and not capacity:
        reason = f"{backlog} queued and no worker online"
    elif backlog:
        how = (
            f"at {service_time:.3g} s per task"
            if service_time is not None
            else "task time unknown, a slot per queued task"
        )
        reason = (
            f"{backlog} queued (oldest {oldest:.3g} s), {in_flight}/{capacity} slots busy: "
            f"{rec_capacity} slots clear it within {max_wait:g} s {how}"
        )
    else:
        reason = (
            f"no backlog, {in_flight}/{capacity} slots busy: {rec_capacity} slots keep "
            f"utilisation near {target_utilisation:g}"
        )
    return {
        "lanes": lanes,
        "backlog": backlog,
        "oldest_age": oldest,
        "delayed": int(_num(snapshot.get("delayed"))),
        "in_flight": in_flight,
        "capacity": capacity,
        "utilisation": round(utilisation, 3),
        "throughput": round(throughput, 3),
        "service_time": None if service_time is None else round(service_time, 3),
        "workers_online": len(online),
        "online_workers": sorted(online),
        "recommended_capacity": max(0, rec_capacity),
        "recommended_workers": max(0, rec_workers),
        "reason": reason,
    }


class ConcurrencyScaler:
    """Decides one worker's concurrency between ``minimum`` and ``maximum``.

    Up, doubling (capped at ``maximum``), once the backlog has exceeded the free slots with
    utilisation at or above ``busy`` for ``up_after`` seconds; down by one (toward
    ``minimum``) once the worker has been idle (utilisation below ``idle``, nothing queued)
    for ``down_after`` seconds. A condition that lapses restarts its timer, and each change
    restarts both, so one burst gives one step and a long one a step per period.

    Call :meth:`update` on every observation; it returns the concurrency to use.
    """

    def __init__(
        self,
        minimum: int,
        maximum: int,
        *,
        initial: int | None = None,
        up_after: float = 5.0,
        down_after: float = 30.0,
        busy: float = 0.8,
        idle: float = 0.3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= minimum <= maximum:
            raise ValueError(f"need 1 <= minimum <= maximum, got {minimum} and {maximum}")
        self.minimum = minimum
        self.maximum = maximum
        start = minimum if initial is None else initial
        self.concurrency = min(maximum, max(minimum, start))
        self.up_after = up_after
        self.down_after = down_after
        self.busy = busy
        self.idle = idle
        self.clock = clock
        self._pressed_since: float | None = None
        self._idle_since: float | None = None

    @property
    def enabled(self) -> bool:
        """False when the limits leave nothing to decide."""
        return self.minimum < self.maximum

    def update(self, *, in_flight: int, backlog: int) -> int:
        """Observe the worker's running tasks and the queued backlog; the concurrency to use.

        :param in_flight: tasks this worker is running.
        :param backlog: tasks queued for workers (``backlog`` of :func:`signals`).
        """
        now = self.clock()
        utilisation = in_flight / self.concurrency
        free = max(0, self.concurrency - in_flight)
        pressed = backlog > free and utilisation >= self.busy
        idle = utilisation < self.idle and backlog == 0
        if not pressed:
            self._pressed_since = None
        elif self._pressed_since is None:
            self._pressed_since = now
        if not idle:
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = now
        if (
            self._pressed_since is not None
            and now - self._pressed_since >= self.up_after
            and self.concurrency < self.maximum
        ):
            self._change(min(self.maximum, self.concurrency * 2))
        elif (
            self._idle_since is not None
            and now - self._idle_since >= self.down_after
            and self.concurrency > self.minimum
        ):
            self._change(self.concurrency - 1)
        return self.concurrency

    def _change(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self._pressed_since = self._idle_since = None
