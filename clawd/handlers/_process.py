"""Run a command in its own process group, under a time limit and an output cap.

Shared by ``transform`` (for jq) and ``exec``. The command gets its stdin from memory
and its stdout and stderr are read at the same time, in one thread, with a selector:
reading one pipe to the end before the other deadlocks as soon as the command fills
the pipe buffer of the second.

The command is started in a new session, so it and everything it starts share a
process group that can be signalled at once. On timeout the group gets SIGTERM, then
SIGKILL after :data:`GRACE` seconds, so neither a child that ignores SIGTERM nor a
grandchild left in the background outlives the task. When the command exits normally,
anything it left running in its group is killed too: a task's processes end with it.

The group is always signalled *before* the command is reaped: until then its pid, which
is also the group id, cannot be reused, so the signal cannot reach a stranger.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

#: seconds between SIGTERM and SIGKILL when a command is stopped
GRACE = 0.5
#: bytes of stderr kept for error messages (the end, where the reason usually is)
STDERR_TAIL = 64 * 1024

_CHUNK = 64 * 1024
_TICK = 0.05  # how often to look whether the command itself has exited


@dataclass
class Finished:
    """What became of a command."""

    returncode: int  # negative: killed by that signal
    stdout: bytes
    stderr: bytes  # the last STDERR_TAIL bytes, without lines on_stderr_line consumed
    timed_out: bool = False
    overflow: str | None = None  # "stdout" or "stderr" when it went over max_output
    cancelled: bool = False  # stopped because its task was cancelled


class _StderrLines:
    """Splits stderr into lines for a callback and keeps the tail of the rest."""

    def __init__(self, on_line: Callable[[str], bool] | None) -> None:
        self.on_line = on_line
        self.partial = b""
        self.tail = bytearray()

    def feed(self, data: bytes) -> None:
        if self.on_line is None:
            self._keep(data)
            return
        *lines, self.partial = (self.partial + data).split(b"\n")
        for line in lines:
            self._line(line, b"\n")
        if len(self.partial) > STDERR_TAIL:  # a "line" this long is not a progress line
            self._keep(self.partial)
            self.partial = b""

    def finish(self) -> bytes:
        if self.partial:
            self._line(self.partial, b"")
            self.partial = b""
        return bytes(self.tail)

    def _line(self, line: bytes, newline: bytes) -> None:
        assert self.on_line is not None
        if not self.on_line(line.decode("utf-8", "replace")):
            self._keep(line + newline)

    def _keep(self, data: bytes) -> None:
        self.tail += data
        if len(self.tail) > 2 * STDERR_TAIL:
            del self.tail[:-STDERR_TAIL]


def _exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it (WNOWAIT)."""
    try:
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        return os.waitid(os.P_PID, pid, flags) is not None
    except ChildProcessError:
        return True


def _wait_exited(pid: int, until: float) -> bool:
    while not _exited(pid):
        left = until - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(0.01, left))
    return True


#: the commands running now: their process groups (the leaders' pids), by the thread
#: that runs each
_running: dict[int, int] = {}
_running_lock = threading.Lock()


def stop_running(threads: Collection[int], grace: float = GRACE) -> int:
    """Stop the commands the ``threads`` run: SIGTERM their groups, SIGKILL after
    ``grace`` seconds. A worker that stops calls it, so that no command outlives it (a
    handed-back task's command would run on beside its next attempt). How many it stopped."""
    with _running_lock:
        groups = [pgid for pgid, owner in _running.items() if owner in threads]
    for pgid in groups:
        _signal_group(pgid, signal.SIGTERM)
    end = time.monotonic() + grace
    for pgid in groups:
        _wait_exited(pgid, end)
        _signal_group(pgid, signal.SIGKILL)
    return len(groups)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    # ProcessLookupError: the group is gone already; PermissionError: what is left of it
    # is not ours to signal (a setuid program) -- nothing more can be done either way
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_group(proc: subprocess.Popen[bytes], grace: float = GRACE) -> None:
    """SIGTERM the command's group, SIGKILL it after ``grace`` seconds at the latest."""
    _signal_group(proc.pid, signal.SIGTERM)
    _wait_exited(proc.pid, time.monotonic() + grace)
    # whether or not the command went, its group may hold children ignoring SIGTERM
    _signal_group(proc.pid, signal.SIGKILL)


def _limit_memory(pid: int, limit: int) -> None:
    # after the fork rather than in preexec_fn, which is unsafe in a threaded daemon
    try:
        import resource

        resource.prlimit(pid, resource.RLIMIT_AS, (limit, limit))
    except (ImportError, AttributeError, OSError, ValueError):
        pass  # not Linux, or already gone: the time limit still holds


def run(
    argv: Sequence[str],
    *,
    stdin: bytes,
    env: Mapping[str, str],
    timeout: float,
    max_output: int,
    cwd: str | None = None,
    executable: str | None = None,
    on_stderr_line: Callable[[str], bool] | None = None,
    memory_limit: int | None = None,
    cancelled: threading.Event | None = None,
) -> Finished:
    """Run ``argv`` (never through a shell) and collect what it writes.

    ``on_stderr_line(line)`` sees each stderr line as it arrives and returns True to
    consume it. When ``cancelled`` is set, the command's group is stopped at once
    (``Finished.cancelled``). Raises OSError when the command cannot be started.
    """
    proc = subprocess.Popen(
        list(argv),
        executable=executable,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=dict(env),
        start_new_session=True,
        close_fds=True,
    )
    with _running_lock:
        _running[proc.pid] = threading.get_ident()
    if memory_limit is not None:
        _limit_memory(proc.pid, memory_limit)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + timeout
    stdout = bytearray()
    stderr = _StderrLines(on_stderr_line)
    stderr_bytes = 0
    timed_out = was_cancelled = False
    overflow: str | None = None
    sel = selectors.DefaultSelector()
    try:
        pending = memoryview(stdin)
        if pending:
            os.set_blocking(proc.stdin.fileno(), False)
            sel.register(proc.stdin, selectors.EVENT_WRITE, "stdin")
        else:
            proc.stdin.close()
        sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
        sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
        readers = 2
        until = deadline
        exited = False
        while readers and overflow is None:
            if cancelled is not None and cancelled.is_set():
                was_cancelled = True
                break
            now = time.monotonic()
            if now >= until:
                timed_out = not exited  # after exit: something escaped the group holds a pipe
                break
            for key, _ in sel.select(min(until - now, _TICK)):
                if key.data == "stdin":
                    try:
                        pending = pending[os.write(key.fd, pending[:_CHUNK]) :]
                    except BlockingIOError:
                        continue
                    except OSError:  # the command closed its stdin: it wants no more
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(key.fileobj)
                        with contextlib.suppress(OSError):
                            proc.stdin.close()  # EOF: the command has it all
                    continue
                data = os.read(key.fd, _CHUNK)
                if not data:
                    sel.unregister(key.fileobj)
                    readers -= 1
                elif key.data == "stdout":
                    stdout += data
                    if len(stdout) > max_output:
                        overflow = "stdout"
                        break
                else:
                    stderr_bytes += len(data)
                    stderr.feed(data)
                    if stderr_bytes > max_output:
                        overflow = "stderr"
                        break
            if not exited and _exited(proc.pid):
                exited = True
                # the task is over; what it left behind in its group goes with it, and
                # the pipes those leftovers held reach EOF
                _signal_group(proc.pid, signal.SIGKILL)
                until = min(deadline, time.monotonic() + GRACE)
        if timed_out or was_cancelled:
            stop_group(proc)
        elif overflow is not None:
            _signal_group(proc.pid, signal.SIGKILL)
        elif not _wait_exited(proc.pid, deadline):
            # closed its stdout and stderr but kept running
            timed_out = True
            stop_group(proc)
    finally:
        _signal_group(proc.pid, signal.SIGKILL)
        with _running_lock:
            _running.pop(proc.pid, None)
        sel.close()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                pipe.close()
        proc.wait()
    return Finished(
        returncode=proc.returncode,
        stdout=bytes(stdout),
        stderr=stderr.finish(),
        timed_out=timed_out,
        overflow=overflow,
        cancelled=was_cancelled,
    )
