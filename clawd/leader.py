"""One active distributor among several sharing a PostgreSQL journal.

The active one holds a PostgreSQL advisory lock (``pg_try_advisory_lock``) on a
connection of its own; the others poll for it. Whoever takes the lock increments the
epoch in ``clawd_leader`` and keeps the new value: every write transaction of its journal
then runs :meth:`Leadership.fence`, which reads the epoch ``FOR SHARE`` and refuses the
write (:class:`clawd.errors.Deposed`) when another distributor has taken over since. The
``FOR SHARE`` makes a takeover's increment wait for a write already under way, so the new
leader loads the journal after the last write of the old one, and the old one can write
nothing after that (Kleppmann's fencing token, the way Oban's peers elect a leader).

The lock session sets ``idle_session_timeout``: a leader that stops talking (SIGSTOP,
a partition, a wedged host) loses its session, and so its lock, after ``lock_timeout``
seconds; a thread pings it every ``lock_timeout / 4`` seconds meanwhile. A leader that
finds its lock session gone (:meth:`Leadership.check`) is deposed too: it stops, and
its supervisor (systemd) starts it again as a standby.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from clawd import clock, journal_pg
from clawd.errors import Deposed, JournalError

log = logging.getLogger("clawd.leader")

#: the advisory lock's key: "clawd" in ASCII
LOCK_KEY = 0x636C617764

LEADER = (
    "CREATE TABLE IF NOT EXISTS clawd_leader (id INTEGER PRIMARY KEY, epoch BIGINT NOT NULL,"
    " holder TEXT NOT NULL, since DOUBLE PRECISION NOT NULL)"
)


def default_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Leadership:
    """This distributor's claim to be the active one, on ``url``'s database."""

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        lock_timeout: float = 5.0,
        poll: float = 0.5,
        key: int = LOCK_KEY,
    ) -> None:
        self.url = url
        self.name = name or default_name()
        self.lock_timeout = lock_timeout
        self.poll = poll
        self.key = key
        #: the epoch this distributor leads (None: not the leader)
        self.epoch: int | None = None
        self.conn: Any = None
        self._lost = threading.Event()
        self._halt = threading.Event()
        self._pinger: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- becoming the leader -------------------------------------------------------------

    def _connect(self) -> Any:
        ms = int(self.lock_timeout * 1000)
        # tcp_user_timeout: a ping into a partition fails within the lock timeout too
        conn = journal_pg.connect_raw(self.url, tcp_user_timeout=ms, connect_timeout=10)
        try:
            conn.execute(f"SET idle_session_timeout = {ms}")
        except journal_pg.DatabaseError as exc:
            conn.close()
            raise JournalError(
                f"journal {journal_pg.redact(self.url)}: PostgreSQL 14 or newer is needed for"
                f" distributors to share it (idle_session_timeout): {exc}"
            ) from None
        conn.execute(f"SET application_name = 'clawd distributor {self.name}'")
        return conn

    def try_acquire(self) -> bool:
        """Take the lock if it is free; on success the epoch is incremented and kept."""
        if self.conn is None:
            self.conn = self._connect()
        (got,) = self.conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        if not got:
            return False
        c = self.conn
        c.execute(LEADER)
        c.execute("INSERT INTO clawd_leader VALUES (1, 0, '', 0) ON CONFLICT (id) DO NOTHING")
        self.epoch = self._increment()
        self._lost.clear()
        self._halt.clear()
        self._pinger = threading.Thread(target=self._ping, name="clawd-leader", daemon=True)
        self._pinger.start()
        log.warning("leading the distributors as %s, epoch %d", self.name, self.epoch)
        return True

    def _increment(self) -> int:
        """The next epoch, ours. The increment waits for a write of the old leader still
        under way (it holds the row FOR SHARE); one that does not end within the lock
        timeout is a stalled leader's (stopped mid-write, where the server's idle timeouts
        do not reach): its sessions are ended, which rolls the write back."""
        c = self.conn
        c.execute(f"SET lock_timeout = {int(self.lock_timeout * 1000)}")
        while True:
            try:
                row = c.execute(
                    "UPDATE clawd_leader SET epoch = epoch + 1, holder = %s, since = %s"
                    " WHERE id = 1 RETURNING epoch",
                    (self.name, clock.wall()),
                ).fetchone()
                return int(row[0])
            except journal_pg.LockNotAvailable:
                (ended,) = c.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_locks"
                    " WHERE relation = 'clawd_leader'::regclass AND granted"
                    " AND pid <> pg_backend_pid()"
                ).fetchone()
                log.warning(
                    "a write of the deposed distributor held the takeover up for %gs: "
                    "ended %d session(s) of it",
                    self.lock_timeout,
                    ended,
                )

    def wait(self, stop: Callable[[], bool], on_wait: Callable[[], None] | None = None) -> bool:
        """Poll until this distributor leads (True), or ``stop()`` (False)."""
        said = False
        complained = 0.0
        while not stop():
            try:
                if self.try_acquire():
                    return True
                if not said:
                    log.warning("standby: another distributor leads; waiting for its lock")
                    said = True
            except (JournalError, journal_pg.DatabaseError) as exc:
                if time.monotonic() >= complained:  # once a minute, not every poll
                    log.warning("standby: the journal's database is unreachable: %s", exc)
                    complained = time.monotonic() + 60.0
                self._drop()
            if on_wait is not None:
                on_wait()
            time.sleep(self.poll)
        return False

    # -- staying the leader --------------------------------------------------------------

    def _ping(self) -> None:
        every = self.lock_timeout / 4
        while not self._halt.wait(every):
            try:
                with self._lock:
                    self.conn.execute("SELECT 1")
            except Exception as exc:  # any failure: the session and its lock may be gone
                log.error("lost the distributors' lock session: %s", exc)
                self._lost.set()
                return

    def check(self) -> None:
        """Raise Deposed once the lock session is gone (the lock may be someone else's)."""
        if self._lost.is_set():
            raise Deposed(f"distributor {self.name} lost its lock session (epoch {self.epoch})")

    def fence(self, conn: Any) -> None:
        """Inside a write transaction on ``conn``: raise Deposed unless this distributor's
        epoch is still the newest. Holds the epoch row ``FOR SHARE`` to the commit."""
        row = conn.execute("SELECT epoch FROM clawd_leader WHERE id = 1 FOR SHARE").fetchone()
        if self.epoch is None or row is None or int(row[0]) != self.epoch:
            self._lost.set()
            newest = None if row is None else int(row[0])
            raise Deposed(
                f"distributor {self.name} of epoch {self.epoch} was deposed (epoch now"
                f" {newest}): the write was refused"
            )

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def release(self) -> None:
        """Give the lock up (closing its session frees it at once)."""
        self._halt.set()
        if self._pinger is not None:
            self._pinger.join(2)
        self._drop()
        self.epoch = None

    def _drop(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                log.debug("closing the lock session failed", exc_info=True)
            self.conn = None
