"""Priority lanes: weighted-fair service (stride scheduling) with aging.

Each lane has a *pass*; serving a lane advances its pass by 1/weight, and the lane with
the lowest pass among those with work goes next. Under a full backlog every lane gets
its weight's share; a lane that was idle rejoins at the current virtual time, so it
cannot bank credit and burst. A lane whose oldest task has waited past ``max_wait`` is
served first (aging): no task waits unboundedly behind heavier lanes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from collections.abc import Set as AbstractSet

from clawd import clock
from clawd.distributor.entry import Entry


class Lane:
    __slots__ = ("name", "weight", "queue", "pass_", "spilled", "cursor", "served", "parked")

    def __init__(self, name: str, weight: int) -> None:
        self.name = name
        self.weight = weight
        self.queue: deque[Entry] = deque()
        self.pass_ = 0.0
        #: True while part of this lane's backlog lives only in the journal
        self.spilled = False
        #: the journal seq of the last spilled task paged in
        self.cursor = 0
        self.served = 0
        #: queued tasks set aside while a rate limit (the key) has no token: still in this
        #: lane, out of the scan's way (clawd.distributor.rates)
        self.parked: dict[str, deque[Entry]] = {}

    def waiting(self) -> int:
        """Queued tasks, the rate-limited ones included."""
        if not self.parked:
            return len(self.queue)
        return len(self.queue) + sum(len(q) for q in self.parked.values())

    def oldest_age(self, now: float) -> float:
        return now - self.queue[0].enqueued_at if self.queue else 0.0


class LaneScheduler:
    """Chooses which lane the next free slot serves."""

    def __init__(self, weights: dict[str, int], max_wait: float = 30.0) -> None:
        self.lanes: dict[str, Lane] = {}
        self.max_wait = max_wait
        self.vtime = 0.0
        self.configure(weights)

    def configure(self, weights: dict[str, int]) -> None:
        """Apply (possibly changed) lane weights; queued work of a removed lane is kept."""
        for name, weight in weights.items():
            lane = self.lanes.get(name)
            if lane is None:
                self.lanes[name] = Lane(name, weight)
            else:
                lane.weight = weight
        # heaviest first: breaks pass ties in favour of the higher lane
        self._order = sorted(self.lanes.values(), key=lambda ln: -ln.weight)

    def push(self, entry: Entry, *, front: bool = False) -> None:
        lane = self.lanes[entry.task.lane]
        if not lane.queue and not lane.spilled:
            lane.pass_ = max(lane.pass_, self.vtime)
        if front:
            lane.queue.appendleft(entry)
        else:
            lane.queue.append(entry)

    def candidates(self, exclude: Iterable[str] = ()) -> list[Lane]:
        """Lanes with work in the order they should be served."""
        skip = set(exclude)
        ready = [ln for ln in self._order if ln.queue and ln.name not in skip]
        if not ready:
            return []
        now = clock.monotonic()
        aged = [ln for ln in ready if ln.oldest_age(now) > self.max_wait]
        if aged:
            aged.sort(key=lambda ln: -ln.oldest_age(now))
            return aged + [ln for ln in sorted(ready, key=lambda ln: ln.pass_) if ln not in aged]
        return sorted(ready, key=lambda ln: ln.pass_)

    def first(self, exclude: AbstractSet[str] = frozenset()) -> Lane | None:
        """The lane to serve next: ``candidates(exclude)[0]`` without ordering the rest
        (the dispatch pass asks once per task)."""
        ready = [ln for ln in self._order if ln.queue and ln.name not in exclude]
        if not ready:
            return None
        if len(ready) == 1:
            return ready[0]
        now = clock.monotonic()
        oldest = max(ready, key=lambda ln: ln.oldest_age(now))  # the first of the oldest
        if oldest.oldest_age(now) > self.max_wait:
            return oldest
        return min(ready, key=lambda ln: ln.pass_)  # the first of the lowest pass

    def served(self, lane: Lane) -> None:
        lane.served += 1
        self.vtime = lane.pass_
        lane.pass_ += 1.0 / lane.weight

    def depth(self) -> int:
        return sum(ln.waiting() for ln in self.lanes.values())
