"""Two distributors on one shared journal, in simulated time (``simulate(..., ha=True)``).

A stand-in for PostgreSQL's part (:mod:`clawd.leader`) with the same semantics: one
lock, held while its holder pings it at least every ``LOCK_TIMEOUT`` seconds (the
server's ``idle_session_timeout``) and freed at once when the holder crashes (its session
closes); an epoch incremented at every takeover; a fence in every write transaction of
the shared SQLite journal that refuses a write of an older epoch. Both distributors use
the same MQTT client id, as the real ones do, so whoever leads inherits the session and
the submissions queued for it.

A deposed distributor stops as the daemon does (``Deposed``) and is restarted as a
standby. The leader faults (a stall longer or shorter than the lock timeout, a crash) are
scheduled here; the shared lock records, per epoch, who wrote, for the invariant "never
two distributors' writes accepted in one epoch".
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clawd.errors import Deposed
from clawd.journal import Journal
from clawd.sim import internals
from clawd.sim.nodes import DistributorNode

if TYPE_CHECKING:
    from clawd.sim.run import Simulation

#: simulated seconds a leader may go without pinging before its lock is freed
LOCK_TIMEOUT = 2.0
#: a standby tries the lock this often
POLL = 0.5
#: a deposed distributor is started again (as a standby) after this long (RestartSec=)
RESTART = 1.0

_WRITE = re.compile(r"^\s*(INSERT|UPDATE|DELETE|REPLACE)\b", re.I)


class SharedLock:
    """The advisory lock and the epoch row, and who wrote in which epoch."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.holder: str | None = None
        self.last_ping = 0.0
        self.epoch = 0
        #: epoch -> the distributor that took it
        self.owners: dict[int, str] = {}
        #: epoch -> distributors whose write transactions were accepted in it
        self.writers: dict[int, set[str]] = defaultdict(set)

    def held(self) -> bool:
        return self.holder is not None and self.clock.now - self.last_ping <= LOCK_TIMEOUT

    def violations(self) -> list[str]:
        return [
            f"epoch {epoch} (taken by {self.owners.get(epoch)}) accepted writes of "
            f"{', '.join(sorted(names))}"
            for epoch, names in sorted(self.writers.items())
            if names - {self.owners.get(epoch)}
        ]


class SimLeadership:
    """:class:`clawd.leader.Leadership`'s interface over the shared lock."""

    def __init__(self, lock: SharedLock, name: str) -> None:
        self.lock = lock
        self.name = name
        self.epoch: int | None = None
        self.lost = False

    def try_acquire(self) -> bool:
        lk = self.lock
        if lk.held():
            return False
        lk.holder, lk.last_ping = self.name, lk.clock.now
        lk.epoch += 1
        lk.owners[lk.epoch] = self.name
        self.epoch, self.lost = lk.epoch, False
        return True

    def ping(self) -> None:
        """What the daemon's pinger thread does: keep the session (and the lock) alive."""
        lk = self.lock
        if self.lost:
            return
        if lk.holder == self.name and lk.clock.now - lk.last_ping <= LOCK_TIMEOUT:
            lk.last_ping = lk.clock.now
            return
        self.lost = True  # the server ended the idle session: the lock went with it
        if lk.holder == self.name:
            lk.holder = None

    def check(self) -> None:
        if self.lost:
            raise Deposed(f"distributor {self.name} lost its lock session")

    def fence(self, conn: Any = None) -> None:
        if self.epoch != self.lock.epoch:
            self.lost = True
            raise Deposed(f"distributor {self.name} of epoch {self.epoch} was deposed")

    def release(self) -> None:
        """The process died: its session, and so the lock, is gone at once."""
        if self.lock.holder == self.name:
            self.lock.holder = None
        self.epoch = None


class FencedSqlite:
    """A SQLite connection whose write transactions run the fence first (as
    :class:`clawd.journal_pg.PgConnection` does) and are recorded per epoch."""

    def __init__(self, db: Any, lead: SimLeadership) -> None:
        self.db = db
        self.lead = lead

    def _fence(self) -> None:
        self.lead.fence()
        self.lead.lock.writers[self.lead.lock.epoch].add(self.lead.name)

    def execute(self, sql: str, params: Any = ()) -> Any:
        if sql.strip().upper() == "BEGIN":
            cur = self.db.execute(sql)
            try:
                self._fence()
            except Deposed:
                self.db.execute("ROLLBACK")
                raise
            return cur
        if _WRITE.match(sql) and not self.db.in_transaction:
            self._fence()
        return self.db.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> Any:
        if not self.db.in_transaction:
            self._fence()
        return self.db.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


class HADistributorNode(DistributorNode):
    """A distributor that stands by until it takes the shared lock."""

    def __init__(self, sim: Simulation, name: str, journal_path: Path, lock: SharedLock) -> None:
        super().__init__(sim, journal_path)
        self.name = name
        self.lead = SimLeadership(lock, name)
        self._standby_gen = 0

    def start(self) -> None:
        """Come up as a standby: poll the lock, lead once it is free."""
        self._standby_gen += 1
        gen = self._standby_gen
        self.sim.clock.after(0.0, lambda: self._poll(gen))

    def _poll(self, gen: int) -> None:
        if gen != self._standby_gen or self.alive:
            return
        if self.lead.try_acquire():
            self._lead()
        else:
            self.sim.clock.after(POLL, lambda: self._poll(gen))

    def _lead(self) -> None:
        s = self.sim
        journal = Journal(self.journal_path, fsync=False)
        journal.db = FencedSqlite(journal.db, self.lead)
        s.distributor = self
        self.run_on(journal, self.lead.epoch or 0)

    def step(self) -> None:
        assert self.d is not None
        try:
            self.lead.check()
            self.d.run_once(0.0)
        except Deposed:
            self.deposed()
            return
        self.lead.ping()
        if self.sim.check_steps:
            for problem in internals.consistency(self.d):
                self.sim.ledger.violation(problem)

    def deposed(self) -> None:
        """Stop as the daemon does on Deposed; systemd starts it again as a standby."""
        self.sim.faults.count("deposed")
        self.crash()
        self.sim.clock.after(RESTART, self.start)

    def crash(self) -> None:
        super().crash()
        self.lead.release()
        self._standby_gen += 1  # a standby's polling ends with the process too


def schedule_leader_faults(sim: Simulation, end: float) -> None:
    """One leader stall past the lock timeout (a takeover, then the stalled one wakes and
    must be refused), and sometimes a short stall or a crash of the leader."""
    rng = sim.rng
    sim.clock.at(sim.clock.now + rng.uniform(1.0, end / 2), lambda: _stall(sim, long=True))
    for _ in range(rng.choice((0, 1, 2))):
        at, long = sim.clock.now + rng.uniform(1.0, end), rng.random() < 0.5
        sim.clock.at(at, lambda long=long: _stall(sim, long=long))  # type: ignore[misc]
    if rng.random() < 0.5:
        sim.clock.at(sim.clock.now + rng.uniform(1.0, end), lambda: _crash(sim))


def _stall(sim: Simulation, *, long: bool) -> None:
    node = sim.distributor
    if not node.alive:
        return
    lasts = sim.rng.uniform(LOCK_TIMEOUT + POLL + 0.5, LOCK_TIMEOUT + 6.0)
    if not long:
        lasts = sim.rng.uniform(0.1, LOCK_TIMEOUT / 2)
    sim.fault("leader_stall", lasts=lasts)
    node.stalled_until = sim.clock.now + lasts


def _crash(sim: Simulation) -> None:
    node = sim.distributor
    if not node.alive:
        return
    sim.fault("leader_crash", lasts=LOCK_TIMEOUT)
    node.crash()
    sim.clock.after(RESTART, node.start)
