"""What a task-type handler is and what it receives.

A handler is a plain callable ``func(ctx: TaskContext) -> result`` registered under a
task type through :func:`clawd.hookspecs.clawd_register_handlers`. The result must be
JSON-serialisable. To fail a task with a clear message raise :class:`clawd.errors.TaskError`
(``retryable=False`` by default); any other exception is retried.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Isolation = Literal["thread", "process"]
ProgressFn = Callable[[float, "str | None"], None]


def _no_progress(fraction: float, message: str | None) -> None:
    return None


@dataclass(frozen=True)
class HandlerSpec:
    """A registered task-type handler.

    ``timeout`` is the default time limit in seconds (a task's own ``timeout`` wins).
    ``isolation="process"`` runs each call in a child process that is killed on timeout:
    use it for code that may never return. ``"thread"`` is cheaper and right for code
    that bounds its own work (or, like ``exec``, kills its own subprocess).
    """

    name: str
    func: Callable[[TaskContext], Any]
    timeout: float | None = None
    isolation: Isolation = "thread"
    description: str = ""
    plugin: str = ""


@dataclass
class TaskContext:
    """Everything a handler gets about the task it runs."""

    id: str
    type: str
    input: Any
    lane: str = "normal"
    attempt: int = 1
    meta: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    started: float = field(default_factory=time.monotonic)
    report: ProgressFn = field(default=_no_progress, repr=False, compare=False)
    #: when the task was accepted (epoch seconds), and the worker running it
    submitted_at: float = 0.0
    worker: str = ""
    #: set when the task is cancelled: a long handler may look and stop early (its
    #: outcome no longer counts); exec commands are killed with their process group
    cancelled: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress (0.0-1.0); published on ``clawd/progress/<id>``."""
        self.report(max(0.0, min(1.0, float(fraction))), message)

    @property
    def remaining(self) -> float | None:
        """Seconds left before the time limit, or None when there is none."""
        if self.timeout is None:
            return None
        return self.timeout - (time.monotonic() - self.started)
