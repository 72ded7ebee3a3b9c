"""Global rate limits, enforced at dispatch: one token bucket per limited task type
(``[handlers.<type>] rate_limit``) and per routing rule with a ``rate_limit``.

The distributor is the only place tasks leave from, so a bucket here limits the whole
fleet, however many workers there are (unlike a per-worker limit). A dispatch takes a
token from its type's bucket and from the bucket of the rule that routed it. A task whose
bucket is empty is *parked* beside its lane's queue (:meth:`TaskTable.park`): it stays
queued, holds no worker slot, and the tasks behind it in the lane go on being dispatched.
When a bucket has tokens again, that many of its parked tasks go back to the front of
their lane (:meth:`release`); :meth:`wake_at` tells the loop when that will be, so it
sleeps until then rather than polling.

Buckets live in memory: a restarted distributor starts with full buckets, so a restart
can let one extra burst through.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from clawd.token_bucket import Rate, TokenBucket, parse_rate

if TYPE_CHECKING:
    from clawd.distributor.lanes import LaneScheduler
    from clawd.distributor.tasks import TaskTable
    from clawd.routing.rules import Rule, RuleTable

#: key prefixes of the two kinds of limit
TYPE, RULE = "type:", "rule:"


def type_rates(config: Any) -> dict[str, Rate]:
    """``[handlers.<type>] rate_limit`` of every type that has one (validated at load)."""
    out: dict[str, Rate] = {}
    for name, hc in config.handlers.items():
        limit = getattr(hc, "rate_limit", None)
        if limit is not None:
            out[name] = parse_rate(limit)
    return out


class RateLimits:
    """The buckets, by key (``type:<type>`` or ``rule:<rule id>``)."""

    def __init__(self, config: Any, now: float) -> None:
        self.buckets: dict[str, TokenBucket] = {}
        #: the routing rules' version the rule buckets were last pruned at
        self._routes_version = -1
        self.configure(config, now)

    def configure(self, config: Any, now: float) -> None:
        """Apply (possibly changed) type limits: a changed rate gets a new bucket that
        keeps the tokens it had (up to its new burst); a removed limit frees its parked
        tasks at the next dispatch pass."""
        rates = type_rates(config)
        for key in [k for k in self.buckets if k.startswith(TYPE)]:
            if key[len(TYPE) :] not in rates:
                del self.buckets[key]
        for name, rate in rates.items():
            self._bucket(TYPE + name, rate, now)

    def _bucket(self, key: str, rate: Rate, now: float) -> TokenBucket:
        b = self.buckets.get(key)
        if b is None or b.rate != rate:
            tokens = None if b is None else b.available(now)
            b = self.buckets[key] = TokenBucket(rate, now, tokens)
        return b

    # -- at dispatch -----------------------------------------------------------------------

    def type_key(self, type_name: str, now: float) -> str | None:
        """The key of ``type_name``'s limit if its bucket is empty now, else None."""
        b = self.buckets.get(TYPE + type_name)
        if b is None or b.ready(now):
            return None
        return TYPE + type_name

    def rule_key(self, rule: Rule | None, now: float) -> str | None:
        """The key of ``rule``'s limit if it has one and its bucket is empty now."""
        if rule is None or rule.rate is None:
            return None
        if self._bucket(RULE + rule.id, rule.rate, now).ready(now):
            return None
        return RULE + rule.id

    def take(self, type_name: str, rule: Rule | None, now: float) -> None:
        """A task of ``type_name`` routed by ``rule`` was dispatched: a token from each."""
        b = self.buckets.get(TYPE + type_name)
        if b is not None:
            b.take(now)
        if rule is not None and rule.rate is not None:
            self._bucket(RULE + rule.id, rule.rate, now).take(now)

    # -- parked tasks ------------------------------------------------------------------------

    def _live(self, key: str, routes: RuleTable | None, now: float) -> TokenBucket | None:
        """The bucket of a parked key, or None when the limit is gone (removed from the
        config, its rule deleted or no longer limited)."""
        if key.startswith(RULE):
            rule = routes.rules.get(key[len(RULE) :]) if routes is not None else None
            if rule is None or rule.rate is None:
                self.buckets.pop(key, None)
                return None
            return self._bucket(key, rule.rate, now)
        return self.buckets.get(key)

    def release(self, tasks: TaskTable, routes: RuleTable | None, now: float) -> int:
        """Parked tasks whose bucket has tokens (as many as it has), or whose limit is
        gone (all of them), back to the front of their lanes; returns how many."""
        if routes is not None and routes.version != self._routes_version:
            self._routes_version = routes.version
            for key in [k for k in self.buckets if k.startswith(RULE)]:
                self._live(key, routes, now)  # drops the bucket of a rule that is gone
        n = 0
        for lane in tasks.lanes.lanes.values():
            for key in list(lane.parked):
                b = self._live(key, routes, now)
                count = -1 if b is None else math.floor(b.available(now) + 1e-9)
                if count:
                    n += tasks.unpark(lane, key, count)
        return n

    def wake_at(self, lanes: LaneScheduler, routes: RuleTable | None, now: float) -> float | None:
        """When a parked task's bucket next gets a token (monotonic seconds), or None if
        no parked task waits for a refill. A bucket that has a token already is left out:
        its tasks go back at the next dispatch pass, which a free slot brings about (an
        outcome arriving), so a loop waiting for that does not spin."""
        when: float | None = None
        for lane in lanes.lanes.values():
            for key in lane.parked:
                b = self._live(key, routes, now)
                at = now if b is None else b.next_token(now)
                if at > now:
                    when = at if when is None else min(when, at)
        return when

    def snapshot(self, lanes: LaneScheduler, now: float) -> dict[str, dict[str, Any]]:
        """Each limit: its rate, the tokens it has, and the tasks waiting for it."""
        waiting: dict[str, int] = {}
        for lane in lanes.lanes.values():
            for key, parked in lane.parked.items():
                waiting[key] = waiting.get(key, 0) + len(parked)
        return {
            key: {
                "rate": str(b.rate),
                "tokens": round(b.available(now), 3),
                "waiting": waiting.get(key, 0),
            }
            for key, b in sorted(self.buckets.items())
        }
