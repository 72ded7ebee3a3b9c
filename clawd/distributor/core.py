"""The distributor's loop: submissions in, dispatch out, outcomes back, results out.

All state changes happen on one thread (``run_once``), which also drives the MQTT
connection: one turn reads what arrived (up to one 64 KiB read), handles every message,
commits the journal once (group commit), and only then acknowledges submissions and
publishes results, so nothing is promised before it is durable.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from clawd import clock, scaling, wire
from clawd.distributor import control, dispatch
from clawd.distributor.admission import Admission
from clawd.distributor.breakers import Breakers
from clawd.distributor.entry import Entry
from clawd.distributor.fleet import Fleet
from clawd.distributor.groups import Groups
from clawd.distributor.lanes import LaneScheduler
from clawd.distributor.lifecycle import Lifecycle
from clawd.distributor.liveness import Liveness
from clawd.distributor.metrics import Metrics
from clawd.distributor.outbox import Outbox
from clawd.distributor.rates import RateLimits
from clawd.distributor.schedules import Schedules
from clawd.distributor.tasks import TaskTable
from clawd.envelope import encode
from clawd.errors import Deposed
from clawd.journal import Journal
from clawd.message import Message
from clawd.routing.rules import RuleTable
from clawd.topics import Topics
from clawd.wire import Unreadable

log = logging.getLogger("clawd.distributor")

#: MQTT session expiry for the distributor: submissions wait this long while it is down
SESSION_EXPIRY = 7 * 24 * 3600


class Distributor:
    """Owns task state. Construct, give it a transport (``attach``), call ``run_once``.

    The state lives in parts that each own one thing: the task table (open tasks and
    their states), the fleet (workers, grants, liveness), the breakers, and the outbox
    (commit, acknowledge, publish); this class routes messages to them and runs the loop.
    """

    def __init__(self, config: Any, plugins: Any, journal: Journal) -> None:
        self.config = config
        self.plugins = plugins
        self.journal = journal
        self.topics = Topics(config.broker.prefix)
        self.inbox: deque[Message] = deque()
        self.lanes = LaneScheduler({n: lc.weight for n, lc in config.lanes.items()})
        self.tasks = TaskTable(journal, self.lanes)
        self.fleet = Fleet()
        self.types: set[str] = set(plugins.handlers)
        self.strategy = plugins.make_strategy(
            config.distributor.strategy, dict(config.distributor.strategy_options)
        )
        self.metrics = Metrics()
        self.outbox = Outbox(journal, self.topics)
        self.breakers = Breakers(config.breakers, on_change=self._breaker_changed)
        self.life = Lifecycle(
            config,
            plugins,
            tasks=self.tasks,
            fleet=self.fleet,
            breakers=self.breakers,
            outbox=self.outbox,
            metrics=self.metrics,
            topics=self.topics,
        )
        self.liveness = Liveness(self.fleet, self.life)
        self.transport: Any = None
        self.admission = Admission(self.tasks, self.outbox, self.metrics)
        self.flows = Groups(self.tasks, self.outbox, self.metrics, self.topics)
        self.life.flows = self.admission.flows = self.flows
        self.routes = RuleTable(journal, self._clear_route)
        self.schedules = Schedules(config, journal, self.admission)
        self.rates = RateLimits(config, clock.monotonic())
        self._next_tick = 0.0
        self.draining = False
        self.pending_reload: tuple[Any, Any] | None = None
        self._was_down = False

    def _apply_reload(self, config: Any, plugins: Any) -> None:
        """Apply a reloaded config on this loop's thread: lanes, strategy, retries."""
        self.pending_reload = None
        self.config = self.life.config = config
        self.plugins = self.life.plugins = plugins
        self.refresh_types()
        self.lanes.configure({n: lc.weight for n, lc in config.lanes.items()})
        self.strategy = plugins.make_strategy(
            config.distributor.strategy, dict(config.distributor.strategy_options)
        )
        self.breakers.configure(config.breakers)
        self.schedules.configure(config)
        self.rates.configure(config, clock.monotonic())

    # -- wiring --------------------------------------------------------------------------

    def subscriptions(self) -> list[tuple[str, int]]:
        t = self.topics
        return [
            (t.workers_filter, 1),
            (t.done_filter, 1),
            (t.tasks_filter, 1),
            (t.control, 1),
            (f"{t.prefix}/progress/+", 0),
            (f"{t.prefix}/routes/+", 1),
        ]

    def attach(self, transport: Any) -> None:
        self.transport = transport

    def on_message(self, msg: Message) -> None:
        """Called from the transport's poll(), on this loop's thread."""
        self.inbox.append(msg)

    def recover(self) -> int:
        """Load every queued task from the journal (after a restart)."""
        n = self.tasks.recover()
        if n:
            log.info("resumed %d open task(s) from the journal", n)
        groups = self.flows.load()
        if groups:
            log.info("resumed %d open group(s) from the journal", groups)
        # what was in flight may still run: a worker's report reclaims it within a
        # liveness timeout, after which it is dispatched again
        held = self.tasks.hold(float(self.config.distributor.liveness_timeout))
        if held:
            log.info("%d task(s) in flight at the restart wait for their workers' reports", held)
        if self.routes.load():
            log.info("resumed %d routing rule(s) from the journal", len(self.routes.rules))
        self.outbox.resend()
        return n

    # -- read-only views -------------------------------------------------------------------

    @property
    def entries(self) -> dict[str, Entry]:
        """Open tasks by id (the task table's)."""
        return self.tasks.entries

    @property
    def registry(self) -> Fleet:
        """The fleet (its former name)."""
        return self.fleet

    def in_flight(self) -> int:
        return self.fleet.in_flight()

    # -- the loop ------------------------------------------------------------------------

    def run_once(self, timeout: float = 0.2) -> int:
        """Handle what arrived (waiting up to ``timeout``), commit, acknowledge, dispatch."""
        if self.pending_reload is not None:
            self._apply_reload(*self.pending_reload)
        inbox = self.inbox
        if not inbox:
            wake = self.wake_at()
            if wake is not None:
                # a rate limit's bucket refills then: sleep until it, not a full timeout
                timeout = min(timeout, max(0.0, wake - clock.monotonic()))
        self.transport.poll(0.0 if inbox else timeout)
        handled = len(inbox)
        while inbox:
            self._handle(inbox.popleft())
        if self.admission.pending:
            self.admission.admit()
        now = clock.monotonic()
        if now >= self._next_tick:
            self._tick(now)
            self._next_tick = now + 0.5
        if not self.draining:
            dispatch.run(
                self.tasks,
                self.fleet,
                self.breakers,
                self.strategy,
                self.life,
                self.routes,
                self.rates,
            )
        self.outbox.settle()
        self.outbox.flush(self.transport)
        return handled

    def wake_at(self) -> float | None:
        """When a rate-limited task can next go (monotonic seconds), or None."""
        return self.rates.wake_at(self.lanes, self.routes, clock.monotonic())

    def _tick(self, now: float) -> None:
        self.tasks.promote_due(now)
        self.routes.tick()
        self.schedules.tick(clock.wall())
        if self._link_up(now):
            self.liveness.tick(now)
            if self.liveness.forget_departed(now, self.outbox, self.metrics):
                self.refresh_types()
        self.breakers.tick()
        snap = self.metrics.maybe_publish(self, now)
        if snap is not None:
            sc = self.config.scaler
            signals = scaling.signals(
                snap,
                target_utilisation=sc.target_utilisation,
                max_wait=sc.max_wait,
                worker_capacity=self.config.worker.concurrency,
            )
            self.plugins.notify("clawd_scale", signals=signals, config=self.config)

    def _link_up(self, now: float) -> bool:
        """Whether the broker connection is up; after an outage, results still owed are
        published again and every worker gets a fresh lease."""
        up = self.transport is None or self.transport.connected.is_set()
        if not up:
            self._was_down = True
            return False
        if self._was_down:
            self._was_down = False
            self.outbox.resend()
            self.liveness.reconnected(now)
        return True

    def _handle(self, msg: Message) -> None:
        levels = self.topics.split(msg.topic)
        kind = levels[0]
        if kind == "tasks":
            self.admission.submission(
                msg,
                levels,
                max_payload=self.config.daemon.max_payload,
                known_types=self.types,
            )
            return
        try:
            if kind == "_" and len(levels) == 3 and levels[1] == "done":
                rep = wire.report(msg.payload)
                if rep.status is not None and rep.status.id not in (None, levels[2]):
                    raise Unreadable(
                        f"report of worker {levels[2]!r} carries the status of {rep.status.id!r}"
                    )
                if self.liveness.report(levels[2], rep):
                    self.refresh_types()
            elif kind == "workers" and len(levels) == 2:
                if msg.payload:  # empty: a cleared retained status
                    self._worker_status(levels[1], msg)
            elif kind == "routes" and len(levels) == 2:
                self.routes.receive(levels[1], msg.payload)
            elif kind == "progress" and len(levels) == 2:
                wire.progress(msg.payload)
                self.liveness.progress(levels[1])
            elif kind == "_" and levels[1:] == ["control"]:
                control.handle(
                    wire.control(msg.payload),
                    msg,
                    tasks=self.tasks,
                    fleet=self.fleet,
                    outbox=self.outbox,
                    life=self.life,
                )
        except Unreadable as exc:
            self._error(exc.error, msg.topic, msg.payload)
        except Deposed:
            raise  # another distributor leads: this one stops, and acknowledges nothing
        except Exception as exc:  # one message never ends the loop
            log.exception("handling a message on %s failed", msg.topic)
            self._error(f"message could not be handled: {exc!r}", msg.topic, msg.payload)
        finally:
            self.outbox.ack(msg.mid, msg.qos)

    def _worker_status(self, worker_id: str, msg: Message) -> None:
        status = wire.worker_status(msg.payload)
        if status.id is not None and status.id != worker_id:
            raise Unreadable(
                f"worker status names worker {status.id!r} but was published for {worker_id!r}"
            )
        if self.liveness.worker_status(worker_id, status):
            self.refresh_types()

    def _breaker_changed(self, key: str, old: str, new: str) -> None:
        """A breaker changed state: retained on <prefix>/breakers/<key>, and the hook."""
        log.warning("breaker %s: %s -> %s", key, old, new)
        doc = {"key": key, "state": new, "previous": old, "at": clock.wall()}
        self.outbox.publish(f"{self.topics.prefix}/breakers/{key}", encode(doc), retain=True)
        self.plugins.notify("clawd_on_breaker_change", key=key, old=old, new=new)

    def _clear_route(self, rule_id: str) -> None:
        """A rule the distributor ended (TTL, scope) leaves the broker's retained state."""
        self.outbox.publish(f"{self.topics.prefix}/routes/{rule_id}", b"", retain=True, qos=1)

    def refresh_types(self) -> None:
        """What local plugins serve, and what any worker ever announced (offline and
        forgotten ones too); kept rather than rebuilt per submission."""
        self.types = set(self.plugins.handlers) | self.fleet.types

    def _error(self, error: str, topic: str, payload: bytes) -> None:
        self.outbox.error(error, topic, payload)

    def replay(self, task_id: str) -> bool:
        """Put a dead-lettered task back in its lane with fresh attempts."""
        return control.replay(self.tasks, task_id)
