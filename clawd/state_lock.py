"""One clawd per state directory and role: an exclusive lock taken before anything opens.

Two distributors on one journal, or two workers with one id, would each take the other's
MQTT session (same client id) and knock each other off the broker every second. The lock
is ``flock(2)`` on a file in the state directory, so it is released by the kernel when the
process dies, however it dies: no stale lock after a ``kill -9``.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from clawd.errors import ConfigError


class StateDirError(ConfigError):
    """The state directory cannot be used: unreadable, not writable, or already in use."""


def prepare(state_dir: Path) -> None:
    """Create the state directory (mode 0700) and check clawd can write there.

    :raises StateDirError: one line naming the directory, the reason and the fix.
    """
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = state_dir / ".clawd-write-test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise StateDirError(
            [
                f"state directory {state_dir}: {why}; set [daemon] state_dir or "
                "CLAWD_STATE_DIR to a directory this user can write"
            ]
        ) from None


class StateLock:
    """An exclusive, non-blocking lock on ``<state_dir>/<name>.lock``, held until release."""

    def __init__(self, state_dir: Path, name: str, what: str) -> None:
        self.path = state_dir / f"{name}.lock"
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise StateDirError naming the process that holds it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateDirError([f"{self.path}: {exc.strerror}"]) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateDirError(
                [
                    f"another clawd (pid {holder}) is already running {self.what} on state "
                    f"directory {self.path.parent}; stop it first, or give this one its own "
                    "state_dir"
                ]
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (also dropped by the kernel when the process exits)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
