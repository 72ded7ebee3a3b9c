"""The worker's thread pool: threads only when none is free, queued jobs in turn."""

from __future__ import annotations

import threading

from clawd.worker.pool import Threads
from tests.conftest import wait_until


def test_jobs_reuse_a_free_thread_instead_of_starting_one() -> None:
    pool = Threads(8)
    names: list[str] = []
    for _ in range(20):
        ran = threading.Event()

        def job(ran: threading.Event = ran) -> None:
            names.append(threading.current_thread().name)
            ran.set()

        pool.submit(job)
        assert ran.wait(10)
        # the thread counts itself free just after its job: wait until it has
        wait_until(lambda: pool._idle, 10, "the thread free again")
    assert len(set(names)) == 1
    pool.shutdown()


def test_blocked_jobs_get_threads_of_their_own_up_to_the_limit() -> None:
    pool = Threads(3)
    release = threading.Event()
    started = threading.Semaphore(0)
    after = threading.Event()

    def blocked() -> None:
        started.release()
        release.wait(10)

    for _ in range(3):
        pool.submit(blocked)
    for _ in range(3):
        assert started.acquire(timeout=10)  # three at once: a thread each
    pool.submit(after.set)  # the limit is reached: it waits for a free thread
    assert not after.is_set()
    release.set()
    assert after.wait(10)
    assert pool._threads == 3
    pool.shutdown()


def test_shutdown_runs_what_is_queued_unless_told_to_drop_it() -> None:
    for cancel in (False, True):
        pool = Threads(1)
        release = threading.Event()
        started = threading.Event()
        ran: list[str] = []

        def blocked(started: threading.Event = started, release: threading.Event = release) -> None:
            started.set()
            release.wait(10)

        pool.submit(blocked)
        assert started.wait(10)
        pool.submit(lambda ran=ran: ran.append("queued"))
        pool.shutdown(cancel=cancel)
        release.set()
        for t in [t for t in threading.enumerate() if t.name.startswith("clawd-task")]:
            t.join(10)
        assert ran == ([] if cancel else ["queued"])
        try:
            pool.submit(lambda: None)
        except RuntimeError as exc:
            assert "shut down" in str(exc)
        else:
            raise AssertionError("a shut-down pool took a job")


def test_a_job_that_raises_leaves_its_thread_working() -> None:
    pool = Threads(1)
    ok = threading.Event()

    def boom() -> None:
        raise ValueError("bug")

    pool.submit(boom)
    pool.submit(ok.set)
    assert ok.wait(10)
    pool.shutdown()
