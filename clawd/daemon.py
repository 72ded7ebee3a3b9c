"""``clawd run``: one process running the distributor role, the worker role, or both.

Each role has its own MQTT connection, driven by its own loop thread; the main thread
only waits for signals and supervises the embedded broker. The systemd watchdog is pinged
from the first role's loop, and only while every role loop keeps turning. It proves the
loops make progress, nothing else: a broker outage shows in STATUS and the log, and the
loops keep turning (and reconnecting) through it, so systemd has no reason to kill clawd.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from typing import Any

from clawd import broker as embedded
from clawd import config as cfgmod
from clawd import journal_pg, logs, reload_report
from clawd.broker_wait import wait_for_broker
from clawd.config_check import check_roles
from clawd.connection import Endpoint, Options, url_text
from clawd.distributor.core import SESSION_EXPIRY, Distributor
from clawd.errors import BrokerError, ConfigError, Deposed
from clawd.journal import Journal
from clawd.plugins import load_plugins
from clawd.state_lock import StateLock, prepare
from clawd.systemd import Notifier
from clawd.transport import Transport
from clawd.worker.core import Worker

log = logging.getLogger("clawd.daemon")

#: seconds a role loop may go without turning before the watchdog stops being fed
STALL = 5.0
#: seconds a reload may take to reach every loop before it is reported anyway
RELOAD_WAIT = 10.0
#: exit status of a distributor deposed by another (EX_TEMPFAIL): restarted, it stands by
EX_DEPOSED = 75


class Daemon:
    def __init__(self, config: Any, roles: list[str], config_path: str | None = None) -> None:
        self.config = config
        self.roles = roles
        self.config_path = config_path
        self.stop_event = threading.Event()
        self.notifier = Notifier()
        self.broker: embedded.EmbeddedBroker | None = None
        self.distributor: Distributor | None = None
        self.worker: Worker | None = None
        self.transports: list[Transport] = []
        self.loops: dict[str, float] = {}
        self.threads: list[threading.Thread] = []
        #: set by the signal handlers, read by run()'s loop
        self._stop_requested = False
        self._reload_requested = False
        self.exit_code = 0
        self.locks: list[StateLock] = []
        self.endpoint: Endpoint | None = None
        self.state_dir = config.state_path
        #: monotonic time the broker link went down (None while every link is up)
        self.down_since: float | None = None
        #: the broker node the roles were last connected to (a url list has several)
        self.up_at: str | None = None
        #: this distributor's lead over a shared journal (None: a journal of its own)
        self.leadership: Any = None
        self.deposed = False

    # -- start ---------------------------------------------------------------------------

    def start(self) -> None:
        cfg = self.config
        check_roles(self.roles)
        self.state_dir = cfg.state_path  # a reload cannot move it
        prepare(cfg.state_path)
        # before the journal or the broker session: a second clawd here is refused, not
        # left to fight the first one for its journal and its MQTT client id
        if "distributor" in self.roles:
            self.locks.append(StateLock(cfg.state_path, "distributor", "the distributor"))
        if "worker" in self.roles:
            wid = cfg.worker.id
            self.locks.append(StateLock(cfg.state_path, f"worker-{wid}", f"worker {wid}"))
        for lock in self.locks:
            lock.acquire()
        self.plugins = load_plugins(cfg)
        url = url_text(cfg.broker.url)
        if url == "embedded":
            info = embedded.find(cfg.state_path)
            if info is None:
                self.broker = embedded.EmbeddedBroker(cfg.state_path)
                url = self.broker.start()
            else:
                url = info["url"]
        endpoints = Endpoint.parse_all(url)
        self.endpoint = endpoints[0]
        password = cfgmod.read_password(cfg.broker)
        if password:
            logs.register_secret(password)
        base = {
            "protocol": cfg.broker.protocol,
            "keepalive": cfg.broker.keepalive,
            "username": cfg.broker.username,
            "password": password,
            "tls_ca": cfg.broker.tls_ca,
            "tls_cert": cfg.broker.tls_cert,
            "tls_key": cfg.broker.tls_key,
            "tls_insecure": cfg.broker.tls_insecure,
            "driven": True,
        }
        if "distributor" in self.roles:
            journal = self._open_journal()
            if journal is None:
                return  # stopped while standing by
            d = self.distributor = Distributor(cfg, self.plugins, journal)
            if self.leadership is not None:
                d.outbox.epoch = self.leadership.epoch
            if cfg.metrics.prometheus_port:
                from clawd.prometheus import Exporter

                d.metrics.exporter = Exporter(
                    cfg.metrics.prometheus_port, cfg.metrics.prometheus_addr
                )
            d.recover()
        if "worker" in self.roles:
            self.worker = Worker(cfg, self.plugins)
        if not self._connect(endpoints, base):
            return  # stopped while waiting for the broker
        for t in self.transports:
            if not t.wait_subscribed(10):
                raise BrokerError(f"broker at {t.endpoint} did not acknowledge subscriptions")
        # what start-up made (modules, plugins, config, recovered tasks) lives as long as the
        # process: out of the collector's sight, a full collection scans only what came
        # after (the longest pause went from 11-21 ms to 0.5 ms: python -m bench.micro gc)
        gc.collect()
        gc.freeze()
        for role in self.roles:
            th = threading.Thread(
                target=self._loop, args=(role,), name=f"clawd-{role}", daemon=True
            )
            self.loops[role] = time.monotonic()
            self.threads.append(th)
            th.start()
        self.up_at = self._where()
        log.info("clawd running: roles %s, broker %s", ", ".join(self.roles), self.up_at)
        self.notifier.ready(self.status_line())

    def _open_journal(self) -> Journal | None:
        """The distributor's journal: SQLite in the state dir, or a shared PostgreSQL one
        once this distributor leads (:mod:`clawd.leader`); None: stopped while standing by.
        A standby makes no MQTT connection: the distributor's client id (and the
        submissions the broker queues for it) belongs to the leader."""
        cfg = self.config
        if not cfg.journal.url:
            return Journal(
                cfg.state_path / "journal.db",
                fsync=cfg.daemon.journal_sync == "full",
                checkpointer=True,
                retention=cfg.journal.retention,
            )
        from clawd.leader import Leadership

        lead = self.leadership = Leadership(cfg.journal.url, lock_timeout=cfg.journal.lock_timeout)
        self.notifier.ready("standby: another distributor leads")
        told: list[bool] = []

        def waiting() -> None:
            self.notifier.maybe_watchdog(True)  # standing by is this loop's progress
            if "worker" in self.roles and not told:
                told.append(True)
                log.warning(
                    "this process's worker role starts once its distributor leads: run "
                    "workers as processes of their own (--role worker) beside HA distributors"
                )

        if not lead.wait(lambda: self._stop_requested, waiting):
            return None
        return Journal(
            cfg.journal.url,
            checkpointer=True,
            retention=cfg.journal.retention,
            fence=lead.fence,
        )

    def _connect(self, endpoint: list[Endpoint], base: dict[str, Any]) -> bool:
        """Connect every role; a broker that is not there yet is waited for (False: a stop
        came first). Only then is its socket probed, so a normal start makes one
        connection per role and no more."""
        while True:
            self._make_transports(endpoint, base)
            try:
                for t in self.transports:
                    t.start(timeout=15)
                return True
            except BrokerError:
                if self.broker is not None or any(t.refused_for_good for t in self.transports):
                    raise
                for t in self.transports:
                    t.stop()
                self.transports.clear()
                if not wait_for_broker(endpoint, self.notifier, lambda: self._stop_requested):
                    return False

    def _make_transports(self, endpoint: list[Endpoint], base: dict[str, Any]) -> None:
        cfg = self.config
        if self.distributor is not None:
            d = self.distributor
            t = Transport(
                endpoint,
                Options(
                    client_id=cfg.broker.client_id or f"clawd-distributor-{cfg.broker.prefix}",
                    clean_start=False,
                    session_expiry=SESSION_EXPIRY,
                    manual_ack=True,
                    subscriptions=d.subscriptions(),
                    **base,
                ),
                d.on_message,
            )
            t.fail_fast = self.broker is None
            d.attach(t)
            self.transports.append(t)
        if self.worker is not None:
            w = self.worker
            t = Transport(
                endpoint,
                Options(
                    client_id=f"clawd-worker-{w.id}",
                    clean_start=True,
                    will=w.will(),
                    subscriptions=w.subscriptions(),
                    **base,
                ),
                w.on_message,
                on_state=lambda up, why: w.announce() if up else None,
            )
            t.fail_fast = self.broker is None
            w.attach(t)
            self.transports.append(t)

    def _where(self) -> str:
        """The broker node in use (the first role's), for status lines and logs."""
        return str(self.transports[0].endpoint if self.transports else self.endpoint)

    def status_line(self) -> str:
        parts = []
        if self.down_since is not None:
            down = time.monotonic() - self.down_since
            parts.append(f"broker {self._where()} unreachable for {down:.0f}s, reconnecting")
        if self.distributor is not None:
            d = self.distributor
            parts.append(
                f"{d.lanes.depth()} queued, {d.in_flight()} in flight, "
                f"{len(d.registry.online())} workers"
            )
        if self.worker is not None:
            parts.append(f"worker {self.worker.id}: {len(self.worker.running)} running")
        return "; ".join(parts)

    # -- loops ---------------------------------------------------------------------------

    def _loop(self, role: str) -> None:
        component: Any = self.distributor if role == "distributor" else self.worker
        first = role == self.roles[0]
        next_status = 0.0
        lead = self.leadership if role == "distributor" else None
        while not self.stop_event.is_set():
            try:
                if lead is not None:
                    lead.check()
                component.run_once(0.2)
            except Exception as exc:
                if lead is not None and isinstance(exc, (Deposed, journal_pg.DatabaseError)):
                    # deposed, or the journal's session ended (a takeover ends a stalled
                    # leader's): either way another distributor may lead now
                    log.error("%s; stopping (restarted, this distributor stands by)", exc)
                    self.deposed = True
                    self.exit_code = EX_DEPOSED
                    self.stop_event.set()
                    return
                log.exception("%s loop failed; stopping", role)
                # a shared journal that failed a write is not written to again on the way out
                self.deposed = lead is not None
                self.exit_code = 1
                self.stop_event.set()
                return
            now = time.monotonic()
            self.loops[role] = now
            if first:
                # progress of the loops only: a broker outage is not a reason to be killed
                progressing = all(now - t < STALL for t in self.loops.values())
                self.notifier.maybe_watchdog(progressing)
                up = all(t.connected.is_set() for t in self.transports)
                if up == (self.down_since is not None):
                    self.down_since = None if up else now
                    next_status = now  # say so at once
                    exporter = self.distributor.metrics.exporter if self.distributor else None
                    if exporter is not None:
                        exporter.broker(up)
                    if up:
                        lost_at = self.up_at
                        self.up_at = self._where()
                        log.info("broker %s reachable again", self.up_at)
                        if lost_at not in (None, self.up_at):
                            log.info("moved from broker %s to %s", lost_at, self.up_at)
                    else:
                        # the node that went away: by now the transport may be trying the next
                        log.warning(
                            "broker %s unreachable; reconnecting", self.up_at or self._where()
                        )
                if now >= next_status:
                    self.notifier.status(self.status_line())
                    next_status = now + 5

    # -- run until stopped ---------------------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        # only plain assignments: a handler that took a lock (Event.set) would deadlock
        # when a second signal lands while the first handler holds it
        if signum == signal.SIGHUP:
            self._reload_requested = True
        else:
            self._stop_requested = True

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        try:
            self.start()
            while not self._stop_requested and not self.stop_event.wait(0.1):
                if self.broker is not None:
                    self.broker.check()
                if self._reload_requested:
                    self._reload_requested = False
                    self.reload()
        finally:
            self.shutdown()
        return self.exit_code

    def reload(self) -> None:
        """SIGHUP: re-read config and plugins; an invalid config keeps the old one."""
        self.notifier.reloading()
        try:
            new = cfgmod.load(self.config_path)
            plugins = load_plugins(new)
            if self.distributor is not None:
                plugins.make_strategy(
                    new.distributor.strategy, dict(new.distributor.strategy_options)
                )
        except Exception as exc:  # plugin code ran here: anything it raises refuses the reload
            problems = exc.problems if isinstance(exc, ConfigError) else [str(exc) or repr(exc)]
            for p in problems:
                log.error("reload refused: %s", p)
            log.error("reload refused: keeping the running configuration")
            self.notifier.ready(self.status_line())
            self._report_reload(False, "; ".join(problems))
            return
        components: list[Any] = [c for c in (self.distributor, self.worker) if c is not None]
        for c in components:
            c.pending_reload = (new, plugins)
        logging.getLogger("clawd").setLevel(new.daemon.log_level.upper())
        self.config = new
        # READY only once every loop runs the new configuration (each takes it on its
        # next turn, on its own thread)
        deadline = time.monotonic() + RELOAD_WAIT
        while any(c.pending_reload is not None for c in components):
            if time.monotonic() > deadline or self.stop_event.is_set():
                log.warning("reload: a loop did not take the new configuration in time")
                break
            time.sleep(0.02)
        log.info("configuration reloaded from %s", ", ".join(new.sources) or "defaults")
        self.notifier.ready(self.status_line())
        self._report_reload(True, "configuration reloaded")

    def _report_reload(self, ok: bool, message: str) -> None:
        """For ``clawd systemd reload`` (the units' ExecReload=), waiting on the outcome."""
        try:
            reload_report.record(self.state_dir, ok, message)
        except OSError as exc:
            log.warning("cannot record the reload outcome in %s: %s", self.state_dir, exc)

    def shutdown(self) -> None:
        self.notifier.stopping("draining")
        self.stop_event.set()
        for th in self.threads:
            th.join(5)
        if self.distributor is not None:
            from clawd.scalers import local

            local.shutdown()  # workers the local scaler started drain and stop too
        if self.worker is not None and self.worker.transport is not None:
            try:
                self.worker.drain(self.config.worker.drain_timeout)
            except Exception:
                log.exception("worker drain failed")
        if self.deposed and self.distributor is not None:
            self.distributor.journal.abandon()  # it may write nothing more
        elif self.distributor is not None and self.distributor.transport is not None:
            d = self.distributor
            d.draining = True
            # a last turn: take in hand-backs and outcomes the drain produced
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and d.run_once(0.1):
                pass
            d.journal.close()
        for t in reversed(self.transports):
            try:
                t.stop()
            except Exception:
                log.debug("transport stop failed", exc_info=True)
        if self.broker is not None:
            self.broker.stop()
        if self.leadership is not None:
            self.leadership.release()  # a standby takes over at once
        for lock in self.locks:
            lock.release()
        if self.threads:  # a start that failed says why, and only that
            log.info("clawd stopped")
