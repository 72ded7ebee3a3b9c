"""Task types that run external commands, declared as ``[handlers.exec.<type>]``.

    [handlers.exec.resize]
    command = ["/usr/local/bin/resize-image", "--quality", "80"]
    timeout = 60                   # seconds (a task's own timeout wins)
    cwd = "/srv/images"            # also the command's HOME
    env = { IMAGE_ROOT = "/srv/images" }
    max_output = 1048576           # bytes of stdout (and of stderr)
    description = "resize an image"

What the command gets and what it must do (docs/handlers.md has examples):

- **argv** is exactly ``command``, run without a shell. Nothing from the task ever
  reaches the command line, so no input can inject a command or an option.
  ``command[0]`` is an absolute path, a name found on the minimal PATH below, or a
  path relative to ``cwd``.
- **stdin** is the task as JSON: ``{"channel", "sender", "timestamp", "payload"}`` (the
  shape claw.events scripts read, ``payload`` being the task as published; see
  :func:`clawd.channels.claw_message`) plus ``{"id", "type", "lane", "input", "attempt",
  "meta"}``. The same JSON is in ``CLAW_MESSAGE`` (the variable those scripts read),
  unless it is over 128 KiB, the most Linux allows in one variable: such a task fails at
  once with an error saying so. ``CLAW_TASK_ID``, ``CLAW_TASK_TYPE`` and
  ``CLAW_WORKER_ID`` are set too.
- **environment**: only ``PATH=/usr/local/bin:/usr/bin:/bin``, ``LANG`` and ``LC_ALL``
  (``C.UTF-8``), ``HOME`` (``cwd``, else ``/tmp``) and the configured ``env``. Nothing
  is inherited from the daemon, so its secrets stay with it.
- **stdout** is the result: parsed as JSON when it is JSON, else the text with one
  trailing newline removed.
- **exit code** 0 is success. 65 (``EX_DATAERR``) means "this input is bad": the task
  fails and is not retried. Any other code fails the task and it is retried; the error
  carries the exit code and the last lines of stderr.
- **progress**: a stderr line ``progress: <fraction> [message]`` (``progress: 0.5
  halfway``) is published as the task's progress instead of being kept as error output.
- **time limit**: the command runs in its own process group. At the limit the whole
  group gets SIGTERM, then SIGKILL half a second later, children that ignore SIGTERM and
  background grandchildren included; the task fails as timed out (and is retried).
  When the command exits, whatever it left running in its group is killed.
- **output cap**: more than ``max_output`` bytes on stdout or stderr stops the group and
  fails the task, not retried.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shlex
import shutil
import signal
from collections.abc import Callable
from typing import Any

import msgspec

from clawd import hookimpl
from clawd.channels import WORKER_ENV, claw_message
from clawd.config import ExecConfig
from clawd.errors import BadInput, PluginError, TaskError, TaskTimeout
from clawd.handler import TaskContext
from clawd.handlers import _process

log = logging.getLogger("clawd.handlers.exec")

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
LOCALE = "C.UTF-8"
EX_DATAERR = 65  #: sysexits.h: "the input data was incorrect"
STDERR_LINES = 10  #: lines of stderr quoted in an error
STDERR_CHARS = 2000  #: ... and at most this many characters of them

# Linux's MAX_ARG_STRLEN (32 pages) bounds one "NAME=value\0" string of the environment
_MAX_ARG_STRLEN = 128 * 1024
MAX_MESSAGE = _MAX_ARG_STRLEN - len("CLAW_MESSAGE=") - 1

_PROGRESS = re.compile(r"progress:\s*([0-9]*\.?[0-9]+)(?:\s+(.*?))?\s*")


def task_message(ctx: TaskContext) -> bytes:
    """The task as the JSON a command reads from stdin and CLAW_MESSAGE."""
    doc = claw_message(
        id=ctx.id,
        type=ctx.type,
        lane=ctx.lane,
        input=ctx.input,
        attempt=ctx.attempt,
        meta=ctx.meta,
        submitted_at=ctx.submitted_at,
    )
    try:
        return msgspec.json.encode(doc)
    except (TypeError, ValueError) as exc:
        raise BadInput(f"task cannot be written as JSON for the command: {exc}") from None


def progress_reader(ctx: TaskContext) -> Callable[[str], bool]:
    """A stderr-line callback that reports ``progress: <fraction> [message]`` lines."""

    def on_line(line: str) -> bool:
        m = _PROGRESS.fullmatch(line.strip())
        if m is None:
            return False
        try:
            ctx.progress(float(m.group(1)), m.group(2) or None)
        except Exception as exc:  # progress is best effort; the task goes on without it
            log.warning("task %s: progress report failed: %r", ctx.id, exc)
        return True

    return on_line


def _last_lines(stderr: bytes) -> str:
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    text = "\n".join(lines[-STDERR_LINES:])
    if len(text) > STDERR_CHARS:
        text = "..." + text[-STDERR_CHARS:]
    return text or "(nothing on stderr)"


def parse_output(stdout: bytes) -> Any:
    """JSON when stdout is JSON, else its text without one trailing newline."""
    try:
        return msgspec.json.decode(stdout)
    except msgspec.DecodeError:
        text = stdout.decode("utf-8", "replace")
        return text[:-1] if text.endswith("\n") else text


class ExecHandler:
    """The handler of one ``[handlers.exec.<type>]`` command."""

    def __init__(self, type_name: str, config: ExecConfig) -> None:
        if not config.command:
            raise PluginError(
                f"[handlers.exec.{type_name}] command is empty: give the program and its "
                'arguments, e.g. command = ["/usr/local/bin/worker"]'
            )
        self.type = type_name
        self.config = config
        self.program = config.command[0]

    def __repr__(self) -> str:
        return f"ExecHandler({self.type!r}, {shlex.join(self.config.command)!r})"

    def environment(self, ctx: TaskContext, message: bytes) -> dict[str, str]:
        """The command's whole environment: minimal, configured, and the task."""
        if len(message) > MAX_MESSAGE:
            raise BadInput(
                f"{self.type}: the task is {len(message)} bytes as JSON, too large for the "
                f"CLAW_MESSAGE environment variable (Linux allows {MAX_MESSAGE} bytes in "
                "one variable); send a smaller input, such as a path or URL to the data"
            )
        env = {
            "PATH": SAFE_PATH,
            "LANG": LOCALE,
            "LC_ALL": LOCALE,
            "HOME": self.config.cwd or "/tmp",
        }
        env.update(self.config.env)
        env["CLAW_TASK_ID"] = ctx.id
        env["CLAW_TASK_TYPE"] = ctx.type
        if ctx.worker:
            env[WORKER_ENV] = ctx.worker
        env["CLAW_MESSAGE"] = message.decode()
        return env

    def executable(self, path: str) -> str:
        """The absolute path of command[0], or a TaskError saying why there is none."""
        cwd = self.config.cwd
        where = f"[handlers.exec.{self.type}] command {self.program!r}"
        if "/" not in self.program:
            found = shutil.which(self.program, path=path)
            if found is None:
                raise TaskError(
                    f"{where} is not an executable found on PATH={path} "
                    "(give an absolute path, or set PATH in env)"
                )
            return found
        if os.path.isabs(self.program):
            full = self.program
        elif cwd is not None:
            full = os.path.join(cwd, self.program)
        else:
            raise TaskError(f"{where} is a relative path: give an absolute path or set cwd")
        if not os.path.isfile(full):
            raise TaskError(f"{where}: no such file {full}")
        if not os.access(full, os.X_OK):
            raise TaskError(f"{where}: {full} is not executable (chmod +x {full})")
        return full

    def __call__(self, ctx: TaskContext) -> Any:
        cfg = self.config
        message = task_message(ctx)
        env = self.environment(ctx, message)
        executable = self.executable(env["PATH"])
        if cfg.cwd is not None and not os.path.isdir(cfg.cwd):
            raise TaskError(f"[handlers.exec.{self.type}] cwd {cfg.cwd!r} is not a directory")
        limit = ctx.timeout if ctx.timeout is not None else cfg.timeout
        remaining = ctx.remaining if ctx.timeout is not None else cfg.timeout
        try:
            done = _process.run(
                cfg.command,
                executable=executable,
                stdin=message,
                env=env,
                cwd=cfg.cwd,
                timeout=max(remaining or 0.0, 0.0),
                max_output=cfg.max_output,
                on_stderr_line=progress_reader(ctx),
                cancelled=ctx.cancelled,
            )
        except ValueError as exc:  # a NUL byte in a configured env value, say
            raise TaskError(
                f"[handlers.exec.{self.type}]: cannot start the command: {exc}"
            ) from None
        except OSError as exc:
            # out of processes or memory may pass; a missing file or E2BIG will not
            again = exc.errno in (errno.EAGAIN, errno.ENOMEM)
            raise TaskError(
                f"{self.type}: cannot start {self.program!r}: {exc.strerror or exc}",
                retryable=again,
            ) from None
        if done.cancelled:
            # nobody reads this outcome: the worker dropped the dispatch when it was cancelled
            raise TaskError(f"{self.type}: cancelled; its process group was killed")
        if done.timed_out:
            raise TaskTimeout(
                f"{self.type}: {self.program!r} ran past its {limit:g} s limit; "
                "its process group was killed"
            )
        if done.overflow:
            raise TaskError(
                f"{self.type}: {self.program!r} wrote over {cfg.max_output} bytes on "
                f"{done.overflow} (max_output); its process group was killed"
            )
        code = done.returncode
        if code == 0:
            return parse_output(done.stdout)
        stderr = _last_lines(done.stderr)
        if code == EX_DATAERR:
            raise BadInput(f"{self.type}: the command rejected the input (exit 65): {stderr}")
        if code < 0:
            raise TaskError(
                f"{self.type}: {self.program!r} was killed by {_signal_name(-code)}: {stderr}",
                retryable=True,
            )
        raise TaskError(
            f"{self.type}: {self.program!r} exited with code {code}: {stderr}", retryable=True
        )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@hookimpl
def clawd_register_handlers(register: Any, config: Any) -> None:
    """Register one task type per ``[handlers.exec.<type>]`` command."""
    for type_name, cfg in config.exec_commands().items():
        handler = ExecHandler(type_name, cfg)
        register(
            type_name,
            handler,
            timeout=cfg.timeout,
            isolation="thread",  # it kills its own process group at the limit
            description=cfg.description or f"runs {shlex.join(cfg.command)}",
        )
