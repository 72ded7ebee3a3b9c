"""The sd_notify client, tested against a real datagram socket standing in for systemd."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from clawd.systemd import Notifier


@pytest.fixture
def sock_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A short directory: AF_UNIX paths are limited to 107 bytes.
    return tmp_path_factory.mktemp("sd") / "notify"


@pytest.fixture
def systemd(sock_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound datagram socket playing systemd, with NOTIFY_SOCKET pointing at it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(sock_path))
        server.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", str(sock_path))
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        yield server


@pytest.fixture
def notifier(systemd: socket.socket) -> Iterator[Notifier]:
    n = Notifier()
    yield n
    n.close()


def assert_silent(server: socket.socket) -> None:
    """Fail if any datagram is waiting."""
    server.setblocking(False)
    try:
        with pytest.raises(BlockingIOError):
            print("unexpected datagram:", server.recv(4096))
    finally:
        server.settimeout(2)


def test_ready_and_status_send_exact_datagrams(systemd: socket.socket, notifier: Notifier) -> None:
    assert notifier.enabled
    notifier.status("connecting to mqtt://broker:1883")
    notifier.ready("serving: 0 queued, 0 in flight, 2 workers")
    notifier.ready()
    notifier.status("serving: 5 queued, 1 in flight, 2 workers")

    assert systemd.recv(4096) == b"STATUS=connecting to mqtt://broker:1883"
    assert systemd.recv(4096) == b"READY=1\nSTATUS=serving: 0 queued, 0 in flight, 2 workers"
    assert systemd.recv(4096) == b"READY=1"
    assert systemd.recv(4096) == b"STATUS=serving: 5 queued, 1 in flight, 2 workers"
    assert_silent(systemd)


def test_status_is_utf8_and_kept_on_one_line(systemd: socket.socket, notifier: Notifier) -> None:
    # A newline would let the text inject a protocol field such as READY=1.
    notifier.status("lane “high” → 3\nREADY=1")
    assert systemd.recv(4096) == "STATUS=lane “high” → 3 READY=1".encode()


def test_reloading_carries_current_monotonic_usec(
    systemd: socket.socket, notifier: Notifier
) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.ready("reloaded")

    first, second = systemd.recv(4096).split(b"\n")
    assert first == b"RELOADING=1"
    key, _, value = second.partition(b"=")
    assert key == b"MONOTONIC_USEC"
    assert before <= int(value) <= after
    assert systemd.recv(4096) == b"READY=1\nSTATUS=reloaded"


def test_stopping_and_extend_timeout(systemd: socket.socket, notifier: Notifier) -> None:
    notifier.stopping("draining 3 tasks")
    notifier.extend_timeout(90)
    notifier.stopping()
    assert systemd.recv(4096) == b"STOPPING=1\nSTATUS=draining 3 tasks"
    assert systemd.recv(4096) == b"EXTEND_TIMEOUT_USEC=90000000"
    assert systemd.recv(4096) == b"STOPPING=1"


def test_abstract_namespace_address(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"clawd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        n = Notifier()
        n.ready("up")
        n.close()
        assert server.recv(4096) == b"READY=1\nSTATUS=up"


def test_environment_is_popped_so_children_do_not_inherit_it(
    systemd: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    n = Notifier()
    try:
        for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            assert var not in os.environ
        # The values were remembered: notifications and the watchdog still work.
        assert n.watchdog_interval == 15.0
        n.ready()
        assert systemd.recv(4096) == b"READY=1"
    finally:
        n.close()


def test_watchdog_pings_only_when_due_and_progressing(
    systemd: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # 0.4 s: ping every 0.2 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    n = Notifier()
    try:
        assert n.watchdog_interval == pytest.approx(0.2)
        assert n.watchdog_due()  # never pinged yet
        assert n.maybe_watchdog(progressing=True)
        assert systemd.recv(4096) == b"WATCHDOG=1"

        # Not due yet: a busy loop calling every iteration must not flood systemd.
        assert not n.watchdog_due()
        assert not n.maybe_watchdog(progressing=True)
        assert n.watchdog_due(now=time.monotonic() + 0.2)
        assert_silent(systemd)

        time.sleep(0.25)
        # Due, but the loop says it is stuck: no ping, so systemd will restart us.
        assert n.watchdog_due()
        assert not n.maybe_watchdog(progressing=False)
        assert_silent(systemd)

        assert n.maybe_watchdog(progressing=True)
        assert systemd.recv(4096) == b"WATCHDOG=1"
        assert not n.maybe_watchdog(progressing=True)
        assert_silent(systemd)
    finally:
        n.close()


def test_watchdog_pid_of_another_process_disables_the_watchdog(
    systemd: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    n = Notifier()
    try:
        assert n.watchdog_interval is None
        assert not n.watchdog_due()
        assert not n.maybe_watchdog(progressing=True)
        assert_silent(systemd)
        n.ready()  # other notifications are unaffected
        assert systemd.recv(4096) == b"READY=1"
    finally:
        n.close()


def test_no_watchdog_without_watchdog_usec(notifier: Notifier, systemd: socket.socket) -> None:
    assert notifier.watchdog_interval is None
    assert not notifier.maybe_watchdog(progressing=True)
    assert_silent(systemd)


def test_without_notify_socket_everything_is_a_no_op(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    n = Notifier()
    assert not n.enabled
    assert n.watchdog_interval is None
    n.ready("x")
    n.status("y")
    n.reloading()
    n.stopping()
    assert not n.maybe_watchdog(progressing=True)
    assert caplog.records == []


def test_send_failure_is_logged_once_and_not_raised(
    systemd: socket.socket, sock_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = Notifier()
    n.ready()
    assert systemd.recv(4096) == b"READY=1"
    # systemd goes away: the connected socket now gets ECONNREFUSED.
    systemd.close()
    sock_path.unlink()

    with caplog.at_level(logging.DEBUG, logger="clawd.systemd"):
        n.status("one")
        n.status("two")
        n.watchdog()
        n.stopping()
    n.close()

    records = [r for r in caplog.records if r.name == "clawd.systemd"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert str(sock_path) in records[0].getMessage()


def test_unreachable_socket_at_start_is_logged_once(
    sock_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock_path))  # nothing bound there
    with caplog.at_level(logging.DEBUG, logger="clawd.systemd"):
        n = Notifier()
        n.ready()
        n.status("still running")
    assert n.enabled
    assert "NOTIFY_SOCKET" not in os.environ
    assert len([r for r in caplog.records if r.name == "clawd.systemd"]) == 1


def test_a_full_socket_drops_status_and_pings_instead_of_stalling_the_loop(
    notifier: Notifier, systemd: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    # nobody reads: the socket holds net.unix.max_dgram_qlen (10 by default) datagrams
    start = time.monotonic()
    for i in range(40):
        notifier.status(f"turn {i}")
        notifier.watchdog()
    assert time.monotonic() - start < 0.5  # a blocking send would take a second each
    first = systemd.recv(4096).decode()
    assert first == "STATUS=turn 0"


def test_a_followed_listener_keeps_receiving(tmp_path_factory: pytest.TempPathFactory) -> None:
    import subprocess
    import sys

    from clawd.systemd import NotifyListener

    path = tmp_path_factory.mktemp("sd") / "n"
    listener = NotifyListener(path)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nfrom clawd.systemd import Notifier\n"
            "n = Notifier(); n.ready('up'); time.sleep(0.5)\n"
            "for i in range(50): n.status(f'line {i}'); time.sleep(0.01)\n"
            "n.stopping()",
        ],
        env={**os.environ, "NOTIFY_SOCKET": str(path)},
    )
    listener.wait_for("READY=1", child, 10)
    listener.follow()
    child.wait(10)
    deadline = time.monotonic() + 5
    while "STOPPING=1" not in listener.messages and time.monotonic() < deadline:
        time.sleep(0.02)
    listener.close()
    assert listener.messages[-1] == "STOPPING=1"
    assert sum(m.startswith("STATUS=line") for m in listener.messages) == 50
