"""Talk to systemd through the sd_notify protocol: readiness, status, reload, stop, watchdog.

Every method is a no-op when the daemon was not started by systemd (``NOTIFY_SOCKET``
unset), so the daemon calls them unconditionally. A notification that cannot be sent
is logged once and otherwise ignored: losing a STATUS line must never stop the daemon.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
import time
import warnings
from pathlib import Path

import sdnotify

log = logging.getLogger("clawd.systemd")

# Seconds a state change (READY, RELOADING, STOPPING) may block. PID 1 drains its socket
# quickly; if it ever stalls, the loop must not stall with it. STATUS lines and watchdog
# pings, sent from the working loop, never wait: a full socket drops them (a datagram
# socket holds only net.unix.max_dgram_qlen, 10 by default, unread messages).
_SEND_TIMEOUT = 1.0


def _one_line(text: str) -> str:
    """Keep a STATUS value on one line: a newline would start a new protocol field."""
    return " ".join(text.splitlines())


class Notifier:
    """One connection to the service manager's notification socket.

    Construction removes ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` from
    ``os.environ``: with ``NotifyAccess=main`` systemd ignores notifications from other
    processes anyway, and a handler subprocess that inherited them could otherwise
    claim readiness or feed the watchdog on the daemon's behalf.
    """

    def __init__(self) -> None:
        self._address = os.environ.pop("NOTIFY_SOCKET", "") or None
        usec = os.environ.pop("WATCHDOG_USEC", "")
        pid = os.environ.pop("WATCHDOG_PID", "")
        self._failed = False  # a failure has been logged: later ones are not
        self._last_ping: float | None = None
        self._sd: sdnotify.SystemdNotifier | None = None
        if self._address is not None:
            # sdnotify reads the address from the environment, so hand it back for the
            # constructor only. debug=True makes it raise instead of swallowing errors,
            # which is the only way to learn that notifications go nowhere.
            os.environ["NOTIFY_SOCKET"] = self._address
            try:
                with warnings.catch_warnings():
                    # On a failed connect sdnotify drops its socket unclosed; not ours to fix.
                    warnings.simplefilter("ignore", ResourceWarning)
                    self._sd = sdnotify.SystemdNotifier(debug=True)
            except Exception as exc:
                self._sd = None
                self._fail(exc)
            finally:
                del os.environ["NOTIFY_SOCKET"]
        self._interval: float | None = None
        # WATCHDOG_PID names the process systemd expects pings from; if it is another
        # process (we were forked or exec'd by it), this one must not ping.
        if self._address is not None and (not pid or pid == str(os.getpid())):
            # Ping at half the timeout, as sd_watchdog_enabled(3) advises.
            try:
                interval = int(usec) / 2_000_000
            except ValueError:
                interval = 0.0
            self._interval = interval if interval > 0 else None

    def close(self) -> None:
        """Close the socket; later notifications are silently dropped."""
        if self._sd is not None:
            self._sd.socket.close()
            self._sd = None

    @property
    def enabled(self) -> bool:
        """True when systemd gave us a notification socket (``NOTIFY_SOCKET`` was set)."""
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half of ``WatchdogSec=``), or None without one."""
        return self._interval

    def ready(self, status: str | None = None) -> None:
        """Tell systemd start-up (or a reload) is complete and the daemon is serving."""
        self._send("READY=1", status)

    def status(self, text: str) -> None:
        """Set the one-line status shown by ``systemctl status``."""
        self._send(None, text, wait=False)

    def reloading(self) -> None:
        """Announce a configuration reload; follow with :meth:`ready` when it is done.

        MONOTONIC_USEC lets systemd tell this reload apart from an earlier one.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}", None)

    def stopping(self, status: str | None = None) -> None:
        """Announce that shutdown (draining) has begun."""
        self._send("STOPPING=1", status)

    def extend_timeout(self, seconds: float) -> None:
        """Ask for ``seconds`` more before the start or stop timeout fires (long drains)."""
        self._send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}", None)

    def watchdog(self) -> None:
        """Ping the watchdog unconditionally. Prefer :meth:`maybe_watchdog` in the loop."""
        self._last_ping = time.monotonic()
        self._send("WATCHDOG=1", None, wait=False)

    def watchdog_due(self, now: float | None = None) -> bool:
        """True when a watchdog is configured and half its timeout has passed since the last ping.

        :param now: a time.monotonic() value; defaults to the current one.
        """
        if self._interval is None:
            return False
        if self._last_ping is None:
            return True
        return (time.monotonic() if now is None else now) - self._last_ping >= self._interval

    def maybe_watchdog(self, progressing: bool) -> bool:
        """Ping the watchdog if one is due and the caller's loop is making progress.

        Call this from each iteration of the loop that does the daemon's work, never from
        a helper thread: the ping must prove that loop is alive. Pass
        ``progressing=False`` when the loop knows it is wedged (e.g. the journal has not
        committed for too long) so that systemd restarts the service. Returns True if a
        ping was sent.
        """
        if not progressing or not self.watchdog_due():
            return False
        self.watchdog()
        return True

    def _send(self, fields: str | None, status: str | None, *, wait: bool = True) -> None:
        # After a failure keep trying: one lost datagram (a timeout) must not silence the
        # watchdog for good. Only the log line is once-only.
        if self._sd is None:
            return
        lines = [fields] if fields else []
        if status is not None:
            lines.append(f"STATUS={_one_line(status)}")
        # The protocol carries UTF-8; sdnotify encodes as Latin-1, so hand it a string
        # whose Latin-1 encoding is exactly our UTF-8 bytes.
        payload = "\n".join(lines).encode("utf-8").decode("latin-1")
        try:
            self._sd.socket.settimeout(_SEND_TIMEOUT if wait else 0.0)
            self._sd.notify(payload)
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self._failed:
            return
        self._failed = True
        log.warning(
            "cannot notify systemd at NOTIFY_SOCKET=%s: %s; continuing without readiness, "
            "status and watchdog notifications (further failures are not logged)",
            self._address,
            exc,
        )


class NotifyListener:
    """The receiving end of the protocol, as systemd is: a datagram socket whose path a
    child gets as ``NOTIFY_SOCKET``. ``clawd demo``, the tests and the bench use it to know
    when a ``clawd run`` they started is really serving."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        #: every datagram received so far
        self.messages: list[str] = []
        self._closed = False
        self._follower: threading.Thread | None = None

    def wait_for(self, field: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
        """The first datagram with ``field`` (e.g. ``READY=1``) as one of its lines.

        Raises RuntimeError when ``proc`` exits first or ``timeout`` seconds pass.
        """
        self.sock.settimeout(0.2)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                if proc.poll() is not None:
                    raise RuntimeError(f"clawd exited with status {proc.returncode}") from None
                continue
            self.messages.append(data)
            if field in data.split("\n"):
                return data
        raise RuntimeError(f"no {field} from clawd within {timeout:g} s")

    def follow(self) -> None:
        """Keep receiving on a thread from now on, as systemd does: a socket nobody reads
        fills after ``net.unix.max_dgram_qlen`` datagrams."""

        def drain() -> None:
            self.sock.settimeout(0.2)
            while not self._closed:
                try:
                    self.messages.append(self.sock.recv(4096).decode())
                except TimeoutError:
                    continue
                except OSError:
                    return

        self._follower = threading.Thread(target=drain, name="notify-listener", daemon=True)
        self._follower.start()

    def close(self) -> None:
        self._closed = True
        if self._follower is not None:
            self._follower.join(1)
        self.sock.close()
