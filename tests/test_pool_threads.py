"""The worker's thread pool: a burst of fast jobs on one thread, slow ones spread out."""

from __future__ import annotations

import threading
from typing import Any

from clawd.worker.pool import Threads
from tests.conftest import wait_until


def blocking(started: threading.Semaphore, release: threading.Event) -> Any:
    def job() -> None:
        started.release()
        release.wait(10)

    return job


def test_a_burst_of_fast_jobs_runs_on_one_thread() -> None:
    pool = Threads(8, spill=60.0)  # a running job counts as about to end for a minute
    gate = threading.Event()
    names: list[str] = []
    done = threading.Semaphore(0)

    def job() -> None:
        gate.wait(10)
        names.append(threading.current_thread().name)
        done.release()

    for _ in range(8):
        pool.submit(job)
    gate.set()
    for _ in range(8):
        assert done.acquire(timeout=10)
    assert len(set(names)) == 1, names
    assert pool._threads == 1
    pool.shutdown()


def test_jobs_behind_a_slow_one_get_threads_when_spilled() -> None:
    pool = Threads(3, spill=60.0)
    started, release = threading.Semaphore(0), threading.Event()
    for _ in range(3):
        pool.submit(blocking(started, release))
    assert started.acquire(timeout=10)
    assert not started.acquire(timeout=0)  # the other two wait behind the first
    pool.spill_after = 0.0  # as if a minute had passed
    assert pool.spill() is None  # they have waited long enough: threads now
    for _ in range(2):
        assert started.acquire(timeout=10)
    after = threading.Event()
    pool.submit(after.set)  # the limit is reached: it waits for a free thread
    assert pool.spill() is None
    assert not after.is_set()
    release.set()
    assert after.wait(10)
    assert pool._threads == 3
    pool.shutdown()


def test_spill_says_when_a_queued_job_will_be_due() -> None:
    pool = Threads(2, spill=60.0)
    started, release = threading.Semaphore(0), threading.Event()
    pool.submit(blocking(started, release))
    assert started.acquire(timeout=10)
    assert pool.spill() is None  # nothing queued
    pool.submit(lambda: None)
    wait = pool.spill()
    assert wait is not None and 0 < wait <= 60.0
    release.set()
    pool.shutdown()


def test_a_job_behind_one_that_runs_long_gets_a_thread_at_once() -> None:
    pool = Threads(2, spill=0.0)  # any running job has run "long"
    started, release = threading.Semaphore(0), threading.Event()
    pool.submit(blocking(started, release))
    assert started.acquire(timeout=10)
    pool.submit(blocking(started, release))
    assert started.acquire(timeout=10)  # without spill()
    release.set()
    pool.shutdown()


def test_eager_jobs_get_a_thread_each_at_once() -> None:
    pool = Threads(4, spill=60.0)
    started, release = threading.Semaphore(0), threading.Event()
    for _ in range(3):
        pool.submit(blocking(started, release), eager=True)
    for _ in range(3):
        assert started.acquire(timeout=10)  # without waiting for spill()
    release.set()
    pool.shutdown()


def test_a_free_thread_is_reused_rather_than_a_new_one_started() -> None:
    pool = Threads(8)
    for _ in range(5):
        ran = threading.Event()
        pool.submit(ran.set, eager=True)
        assert ran.wait(10)
        wait_until(lambda: pool._idle, 10, "the thread waiting for work again")
    assert pool._threads == 1
    pool.shutdown()


def test_shutdown_runs_what_is_queued_unless_told_to_drop_it() -> None:
    for cancel in (False, True):
        pool = Threads(1)
        started, release = threading.Semaphore(0), threading.Event()
        ran: list[str] = []
        pool.submit(blocking(started, release))
        assert started.acquire(timeout=10)
        pool.submit(lambda ran=ran: ran.append("queued"))
        pool.shutdown(cancel=cancel)
        release.set()
        wait_until(lambda pool=pool: pool._threads == 0, 10, "the thread gone")
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
    assert pool._threads == 1
    pool.shutdown()
