"""Circuit breakers and worker ejection: stop routing work where it keeps failing.

A :class:`Breaker` follows resilience4j's count-based breaker: it judges the last
``window`` calls and opens when, with at least ``minimum_calls`` of them, the share of
failed (or slow) calls reaches the threshold; after ``open_seconds`` it lets
``half_open_calls`` probes through, and their outcome closes or reopens it.
:class:`Breakers` keeps one per task type and one per (worker, type), and ejects a worker
after consecutive failures, like Envoy's outlier detection. No I/O and no threads: the
clock is injected, state moves only when a method is called.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from clawd import clock
from clawd.config import BreakerConfig

Clock = Callable[[], float]


def _monotonic() -> float:
    return clock.monotonic()  # read at call time: a simulation may swap the clock


#: ``on_change(key, old, new)``: key is "type/<type>", "worker/<id>/<type>" or "eject/<id>"
OnChange = Callable[[str, str, str], None]
#: a repeated ejection lasts at most this many times ``eject_seconds``
MAX_EJECT_FACTOR = 10


def _ignore(key: str, old: str, new: str) -> None:
    pass


class Breaker:
    """One breaker: "closed" (calls flow), "open" (calls refused) or "half_open" (probing)."""

    def __init__(
        self,
        key: str,
        cfg: BreakerConfig,
        *,
        now: Clock | None = None,
        on_change: OnChange = _ignore,
        fleet: Callable[[], int] | None = None,
    ) -> None:
        self.key = key
        #: a type's breaker: how many workers there are; with more than one, failures
        #: must come from more than one of them to trip it (see _tripped)
        self._fleet = fleet
        self.cfg = cfg
        self.state = "closed"
        #: permission checks refused while open or out of probe slots
        self.rejected = 0
        #: clock time of the last opening; None while it never opened
        self.opened_at: float | None = None
        self._now: Clock = now or _monotonic
        self._on_change = on_change
        #: (failed, slow, worker) of the last calls; in half-open, of the probes only
        self._calls: deque[tuple[bool, bool, str]] = deque(maxlen=cfg.window)
        #: how many of ``_calls`` failed and were slow, kept as calls come and go
        self._failed = self._slow = 0
        self._probes = 0  # half-open slots handed out

    def _reset(self, size: int) -> None:
        """A fresh window of ``size`` calls."""
        self._calls = deque(maxlen=size)
        self._failed = self._slow = 0

    def _push(self, failed: bool, slow: bool, who: str) -> None:
        calls = self._calls
        if len(calls) == calls.maxlen:
            old_failed, old_slow, _ = calls[0]  # about to fall out of the window
            self._failed -= old_failed
            self._slow -= old_slow
        calls.append((failed, slow, who))
        self._failed += failed
        self._slow += slow

    def _set(self, new: str) -> None:
        old, self.state = self.state, new
        self._on_change(self.key, old, new)

    def _advance(self) -> None:
        """Open turns half-open once ``open_seconds`` are over (checked lazily)."""
        if self.state == "open" and self._now() - (self.opened_at or 0.0) >= self.cfg.open_seconds:
            self._reset(self.cfg.half_open_calls)
            self._probes = 0
            self._set("half_open")

    def permits(self) -> bool:
        """Whether a call may start now; takes nothing (a strategy asks about many workers)."""
        self._advance()
        if self.state == "half_open":
            return self._probes < self.cfg.half_open_calls
        return self.state == "closed"

    def started(self) -> None:
        """A call started: in half-open it takes a probe slot."""
        self._advance()
        if self.state == "half_open":
            self._probes += 1

    def allow(self) -> bool:
        """Ask and take at once (resilience4j's tryAcquirePermission); a refusal is counted."""
        if not self.permits():
            self.rejected += 1
            return False
        self.started()
        return True

    def release(self) -> None:
        """A started call ended without an outcome (handed back, lost): free its probe slot,
        or a half-open breaker would wait forever for a report that never comes."""
        if self.state == "half_open" and self._probes > len(self._calls):
            self._probes -= 1

    def record(self, ok: bool, seconds: float, who: str = "") -> None:
        """The outcome of a call (made on worker ``who``)."""
        self._advance()
        slow = self.cfg.slow_call_seconds is not None and seconds > self.cfg.slow_call_seconds
        if self.state == "open":
            return  # a call started before the opening: the window is judged already
        if self.state == "half_open":
            if len(self._calls) >= self._probes:
                return  # not a probe: started before the breaker opened
            self._push(not ok, slow, who)
            if len(self._calls) >= self.cfg.half_open_calls:
                if self._tripped():
                    self._open()
                else:
                    self._reset(self.cfg.window)
                    self._set("closed")
            return
        self._push(not ok, slow, who)
        if len(self._calls) >= self.cfg.minimum_calls and self._tripped():
            self._open()

    def _rates(self) -> tuple[float, float]:
        n = len(self._calls)
        if not n:
            return 0.0, 0.0
        return self._failed / n, self._slow / n

    def _tripped(self) -> bool:
        failed, slow = self._rates()
        if self._fleet is not None and failed and self._fleet() > 1:
            failing = {c[2] for c in self._calls if c[0]}
            if len(failing) < 2:
                # one worker failing where others succeed is that worker's breaker's
                # business: holding the whole type would punish the healthy ones
                failed = 0.0
        return failed >= self.cfg.failure_rate or (
            self.cfg.slow_call_seconds is not None and slow >= self.cfg.slow_call_rate
        )

    def _open(self) -> None:
        self.opened_at = self._now()
        self._set("open")

    def snapshot(self) -> dict[str, Any]:
        """State, rates and counters, JSON-able; ``opened_at`` is wall-clock (epoch) time."""
        self._advance()
        failed, slow = self._rates()
        doc: dict[str, Any] = {
            "state": self.state,
            "failure_rate": round(failed, 4),
            "slow_call_rate": round(slow, 4),
            "calls": len(self._calls),
            "rejected": self.rejected,
        }
        if self.opened_at is not None:
            age = self._now() - self.opened_at
            doc["opened_at"] = round(clock.wall() - age, 3)
            if self.state == "open":
                doc["retry_in"] = round(self.cfg.open_seconds - age, 3)
        return doc


class Breakers:
    """The distributor's breakers: per task type, per (worker, type), and worker ejection.

    ``allows`` and ``type_allows`` only ask (a refusal is counted in ``rejected``);
    ``dispatched`` starts a call; every dispatched call must end in exactly one ``record``
    or ``cancelled``, or a half-open breaker keeps waiting for its probe.
    """

    def __init__(
        self,
        cfg: BreakerConfig,
        *,
        on_change: OnChange = _ignore,
        now: Clock | None = None,
    ) -> None:
        self.cfg = cfg
        self._on_change = on_change
        self._now: Clock = now or _monotonic
        #: "type/<type>" and "worker/<id>/<type>" -> its breaker
        self._all: dict[str, Breaker] = {}
        self._known: set[str] = set()
        self._streak: dict[str, int] = {}  # consecutive failures, any type
        self._until: dict[str, float] = {}  # ejected worker -> end of its ejection
        #: worker -> (ejections that still count towards the doubling, when the last ended)
        self._history: dict[str, tuple[int, float]] = {}

    def _get(self, key: str, type_: str) -> Breaker | None:
        """The breaker named ``key``, made on first use; None when the type has them off."""
        b = self._all.get(key)
        if b is None:
            cfg = self.cfg.for_type(type_)
            if not cfg.enabled:
                return None
            b = self._all[key] = Breaker(
                key,
                cfg,
                now=self._now,
                on_change=self._on_change,
                fleet=(lambda: len(self._known)) if key.startswith("type/") else None,
            )
        return b

    def _both(self, worker_id: str, type_: str) -> list[Breaker]:
        self._known.add(worker_id)
        found = (self._get(f"type/{type_}", type_), self._get(f"worker/{worker_id}/{type_}", type_))
        return [b for b in found if b is not None]

    def _refuses(self, b: Breaker | None) -> bool:
        if b is None or b.permits():
            return False
        b.rejected += 1
        return True

    def allows(self, worker_id: str, type_: str) -> bool:
        """May a task of ``type_`` go to this worker? No while it is ejected or its breaker
        for the type refuses."""
        self._known.add(worker_id)
        if self.ejected(worker_id):
            return False
        return not self._refuses(self._get(f"worker/{worker_id}/{type_}", type_))

    def type_allows(self, type_: str) -> bool:
        """May any task of ``type_`` start? No: hold them (it is the type that fails, so
        another worker would not help and an attempt would be wasted)."""
        return not self._refuses(self._get(f"type/{type_}", type_))

    def dispatched(self, worker_id: str, type_: str) -> None:
        """A call started: it takes a half-open probe slot of both breakers."""
        for b in self._both(worker_id, type_):
            b.started()

    def cancelled(self, worker_id: str, type_: str) -> None:
        """A dispatched call ended without an outcome: give its probe slots back."""
        for b in self._both(worker_id, type_):
            b.release()

    def record(self, worker_id: str, type_: str, ok: bool, seconds: float) -> None:
        """The outcome of a call: feeds both breakers and the worker's failure streak."""
        for b in self._both(worker_id, type_):
            b.record(ok, seconds, worker_id)
        if ok:
            self._streak[worker_id] = 0
            return
        self._streak[worker_id] = streak = self._streak.get(worker_id, 0) + 1
        if streak >= self.cfg.eject_after and self.cfg.enabled and not self.ejected(worker_id):
            self._eject(worker_id)

    def _eject(self, worker_id: str) -> None:
        # Envoy's max_ejection_percent: ejecting everyone would stop all work, so past the
        # cap a failing worker stays in (its per-type breakers still protect it).
        if len(self._until) + 1 > math.floor(self.cfg.max_ejected * len(self._known)):
            return
        now = self._now()
        count, ended = self._history.get(worker_id, (0, now))
        # each eject_seconds spent back in without a new ejection forgives one
        count = max(0, count - int((now - ended) // self.cfg.eject_seconds)) + 1
        factor = min(2 ** (count - 1), MAX_EJECT_FACTOR)
        self._until[worker_id] = now + self.cfg.eject_seconds * factor
        self._history[worker_id] = (count, now)
        self._on_change(f"eject/{worker_id}", "active", "ejected")

    def ejected(self, worker_id: str) -> bool:
        """Whether the worker is ejected now (an ejection that has run out ends here)."""
        until = self._until.get(worker_id)
        if until is None:
            return False
        now = self._now()
        if now < until:
            return True
        del self._until[worker_id]
        # forgiveness counts from when it ended, not from when someone asked
        self._history[worker_id] = (self._history[worker_id][0], until)
        self._streak[worker_id] = 0  # back with a clean slate, as Envoy does
        self._on_change(f"eject/{worker_id}", "ejected", "active")
        return False

    def tick(self) -> None:
        """Let time-driven transitions happen (open -> half_open, ejections ending), so
        their ``on_change`` fires even when no task of that type or worker comes along."""
        for b in list(self._all.values()):
            b.permits()
        for worker_id in list(self._until):
            self.ejected(worker_id)

    def worker_keys(self, worker_id: str) -> list[str]:
        """The keys of every breaker and ejection about ``worker_id`` (the retained
        ``<prefix>/breakers/<key>`` topics that may exist for it)."""
        mine = f"worker/{worker_id}/"
        return [k for k in self._all if k.startswith(mine)] + [f"eject/{worker_id}"]

    def states(self, worker_id: str, types: Iterable[str]) -> dict[str, str | None]:
        """What the retained ``<prefix>/breakers/<key>`` topics about a worker and the
        types it serves should say: the state of each breaker this distributor has, None
        (cleared) for the keys it has none for."""
        out: dict[str, str | None] = {}
        for type_ in sorted(types):
            for key in (f"type/{type_}", f"worker/{worker_id}/{type_}"):
                b = self._all.get(key)
                out[key] = None if b is None else b.state
        out[f"eject/{worker_id}"] = "ejected" if self.ejected(worker_id) else None
        return out

    def configure(self, cfg: BreakerConfig) -> None:
        """A reloaded config: breakers made from now on and the ones that exist follow it."""
        self.cfg = cfg
        for b in self._all.values():
            b.cfg = cfg.for_type(b.key.rsplit("/", 1)[-1])

    def forget_worker(self, worker_id: str) -> None:
        """Drop a worker that is gone; its states are reported back to normal, so whatever
        mirrors them (retained topics) shows no stale open breaker. Its ejection count is
        kept: reconnecting must not reset the doubling of a flapping worker."""
        self._known.discard(worker_id)
        for key in [k for k in self._all if k.startswith(f"worker/{worker_id}/")]:
            b = self._all.pop(key)
            if b.state != "closed":
                self._on_change(b.key, b.state, "closed")
        if self._until.pop(worker_id, None) is not None:
            self._history[worker_id] = (self._history[worker_id][0], self._now())
            self._on_change(f"eject/{worker_id}", "ejected", "active")
        self._streak.pop(worker_id, None)

    def snapshot(self) -> dict[str, Any]:
        """Every breaker and ejection, JSON-able, for metrics and ``clawd status``."""
        self.tick()
        now = self._now()
        doc: dict[str, Any] = {"types": {}, "workers": {}}
        for key, b in sorted(self._all.items()):
            kind, name = key.split("/", 1)  # "worker/w1/compute" -> "w1/compute"
            doc["types" if kind == "type" else "workers"][name] = b.snapshot()
        doc["ejected"] = {w: round(u - now, 3) for w, u in sorted(self._until.items())}
        return doc
