"""One active distributor over a shared PostgreSQL journal: the advisory lock, the epoch,
and the fence that refuses a deposed leader's writes."""

from __future__ import annotations

import threading

import pytest

from clawd.envelope import Task
from clawd.errors import Deposed
from clawd.journal import Journal
from clawd.leader import Leadership
from tests.conftest import wait_until
from tests.postgres import pg_server, pg_url  # noqa: F401


def _task(i: str) -> Task:
    return Task(id=i, type="compute", lane="normal", input="1", submitted_at=1.0)


def _ids(j: Journal) -> list[str]:
    return [t.id for _, t, *_ in j.open_tasks("normal")]


def test_one_leader_at_a_time_and_the_deposed_one_writes_nothing(pg_url: str) -> None:
    a, b = Leadership(pg_url, name="a"), Leadership(pg_url, name="b")
    assert a.try_acquire() and a.epoch == 1
    assert not b.try_acquire() and b.epoch is None
    ja = Journal(pg_url, fence=a.fence)
    ja.add(_task("by-a"), None)
    ja.commit()
    # a's lock session ends (its host died): b takes over with the next epoch
    a.conn.close()
    wait_until(b.try_acquire, 30, "b to take the lock once a's session is gone")
    assert b.epoch == 2
    jb = Journal(pg_url, fence=b.fence)
    assert _ids(jb) == ["by-a"]  # what a wrote before is there
    # a has not noticed: its next commit is refused whole, and a single write too
    ja.add(_task("late-a"), None)
    ja.dispatched("by-a", 7)
    with pytest.raises(Deposed, match="epoch now 2"):
        ja.commit()
    with pytest.raises(Deposed):
        ja.save_route("r", b"{}", 1.0)
    assert a.lost
    with pytest.raises(Deposed):
        a.check()
    jb.add(_task("by-b"), None)
    jb.commit()
    assert _ids(jb) == ["by-a", "by-b"]
    assert jb.open_tasks("normal")[0][2] == 0  # a's late dispatch was not written
    assert jb.routes() == []
    b.release()
    ja.abandon()
    jb.close()


def test_a_silent_leader_loses_the_lock_after_the_timeout(pg_url: str) -> None:
    """A stalled leader (stopped, cut off) stops pinging: the server ends its idle lock
    session, a standby takes over, and the stalled one is deposed when it wakes."""
    a = Leadership(pg_url, name="a", lock_timeout=1.0)
    b = Leadership(pg_url, name="b", lock_timeout=1.0, poll=0.1)
    assert a.try_acquire()
    ja = Journal(pg_url, fence=a.fence)
    a._halt.set()  # a's pinger stops, as when the whole process is stopped
    stop = threading.Event()
    assert b.wait(stop.is_set)
    assert b.epoch == 2
    ja.add(_task("stalled"), None)
    with pytest.raises(Deposed):
        ja.commit()
    jb = Journal(pg_url, fence=b.fence)
    assert _ids(jb) == []
    b.release()
    ja.abandon()
    jb.close()


def test_a_takeover_waits_for_a_write_under_way(pg_url: str) -> None:
    """The epoch row is read FOR SHARE in every write: the new leader's increment waits
    for the old leader's transaction, so no write of the old epoch lands after it."""
    a = Leadership(pg_url, name="a")
    b = Leadership(pg_url, name="b", lock_timeout=120)  # waits, however slow the machine
    assert a.try_acquire()
    ja = Journal(pg_url, fence=a.fence)
    ja.db.execute("SET idle_in_transaction_session_timeout = 0")
    ja.db.execute("BEGIN")  # fenced: holds the epoch row
    ja.db.execute("INSERT INTO schedules VALUES (?, ?)", ("s", 1.0))
    a.conn.close()  # the lock is free, a's write still open
    took = threading.Event()
    t = threading.Thread(target=lambda: wait_until(b.try_acquire, 30) and took.set())
    t.start()
    wait_until(lambda: _waiting_on_lock(pg_url), what="the takeover to wait for the write")
    assert not took.is_set()
    ja.db.execute("COMMIT")
    t.join(30)
    assert took.is_set() and b.epoch == 2
    jb = Journal(pg_url, fence=b.fence)
    assert jb.schedule_slots() == {"s": 1.0}
    b.release()
    ja.abandon()
    jb.close()


def _waiting_on_lock(url: str) -> bool:
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        row = c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE 'UPDATE clawd_leader%%'"
        ).fetchone()
    return bool(row and row[0])


def test_a_write_stalled_midway_is_ended_by_the_takeover(pg_url: str) -> None:
    """A leader stopped in the middle of a write (where the server's idle timeouts do not
    reach) would hold the epoch row for ever: the new leader ends its sessions after the
    lock timeout, which rolls that write back."""
    a = Leadership(pg_url, name="a")
    b = Leadership(pg_url, name="b", lock_timeout=1.0)
    assert a.try_acquire()
    ja = Journal(pg_url, fence=a.fence)
    ja.db.execute("SET idle_in_transaction_session_timeout = 0")  # as if mid-statement
    ja.db.execute("BEGIN")
    ja.db.execute("INSERT INTO schedules VALUES (?, ?)", ("s", 1.0))
    a.conn.close()
    wait_until(b.try_acquire, 30, "b to take the lock")
    assert b.epoch == 2
    with pytest.raises(Exception):  # noqa: B017 - its session was ended: any driver error
        ja.db.execute("COMMIT")
    jb = Journal(pg_url, fence=b.fence)
    assert jb.schedule_slots() == {}
    b.release()
    jb.close()
