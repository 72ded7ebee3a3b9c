"""Every hook clawd calls, grouped by lifecycle, with the thread each one runs on.

Plugins implement these with ``@clawd.hookimpl``; clawd calls them through pluggy's
``pm.hook``, so ``tryfirst``, ``trylast``, ``wrapper=True`` and ``hookwrapper=True``
implementations behave as pluggy documents. Registration hooks hand the plugin a
``register`` callback: the host validates what is registered and names both plugins
when two register the same name; a registration hook that raises refuses start-up (exit
78) or the reload. Observer hooks never take the daemon down: a plugin that raises is
logged with its name and skipped, and the other implementations still run
(:mod:`clawd.plugin_guard`).

Threads, as named in ``clawd run``: the *main thread* (start-up, reload on SIGHUP,
one-shot commands such as ``clawd plugins``), the *distributor loop* (``clawd-distributor``),
the *worker loop* (``clawd-worker``) and the *handler threads* (``clawd-task-N``, the
worker's pool). A hook on a loop thread holds up that loop while it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol, Required, TypedDict

import pluggy

from clawd.handler import Isolation, TaskContext
from clawd.strategy import Strategy

if TYPE_CHECKING:
    from clawd.config import Config

hookspec = pluggy.HookspecMarker("clawd")

#: builds a strategy from ``[distributor] strategy_options``
StrategyFactory = Callable[[dict[str, Any]], Strategy]


class TaskOutcome(TypedDict, total=False):
    """What :func:`clawd_after_task` is told about a run: ``result`` (JSON) when ok;
    ``error``, ``retryable`` and maybe ``code`` (``"timeout"``) when not."""

    status: Required[Literal["ok", "error"]]
    duration_ms: Required[float]
    result: Any
    error: str
    retryable: bool
    code: str


class RegisterHandler(Protocol):
    """The ``register`` callback of :func:`clawd_register_handlers`."""

    def __call__(
        self,
        name: str,
        func: Callable[[TaskContext], Any],
        *,
        timeout: float | None = None,
        isolation: Isolation = "thread",
        description: str = "",
    ) -> None: ...


class RegisterStrategy(Protocol):
    """The ``register`` callback of :func:`clawd_register_strategies`."""

    def __call__(self, name: str, factory: StrategyFactory, *, description: str = "") -> None: ...


# -- registration (called once at start-up and again on reload) -------------------------


@hookspec
def clawd_register_handlers(register: RegisterHandler, config: Config) -> None:
    """Register task-type handlers.

    Runs on the main thread: at start-up of every process that runs the worker role, on
    reload (SIGHUP), and in ``clawd plugins``. Raising refuses start-up with exit status
    78, or refuses the reload (the running plugins stay in force).

    :param register: ``register(type_name, func, *, timeout=None, isolation="thread",
        description="")``; ``func(ctx: clawd.handler.TaskContext)`` returns the result.
    :param config: the effective :class:`clawd.config.Config`.
    """


@hookspec
def clawd_register_strategies(register: RegisterStrategy, config: Config) -> None:
    """Register distribution strategies.

    Runs on the main thread: at start-up of the distributor, on reload (SIGHUP), and in
    ``clawd plugins``. Raising refuses start-up (exit 78) or the reload. The strategy's
    ``choose`` runs on the distributor loop; if it raises or returns something that is
    not one of the candidates, the failure is logged with the plugin's name and a
    candidate is chosen round robin.

    :param register: ``register(name, factory, *, description="")``;
        ``factory(options: dict)`` returns an object with
        ``choose(task: TaskView, candidates: Sequence[WorkerView]) -> WorkerView``.
    :param config: the effective :class:`clawd.config.Config`.
    """


#: hooks whose failure refuses start-up or reload; every other hook is an observer
REGISTRATION = frozenset({"clawd_register_handlers", "clawd_register_strategies"})


# -- task lifecycle on the worker (observers) --------------------------------------------


@hookspec
def clawd_before_task(task: TaskContext, worker_id: str) -> None:
    """Called on the worker just before a handler runs.

    Runs on the handler thread that is about to run the task (for ``isolation =
    "process"`` handlers too: in clawd's process, before the child starts).

    :param task: the :class:`clawd.handler.TaskContext` about to run.
    :param worker_id: the id of the worker running it.
    """


@hookspec
def clawd_after_task(task: TaskContext, outcome: TaskOutcome) -> None:
    """Called on the worker after a handler returned or failed.

    Runs on the worker loop, once the outcome is in hand (and before it is reported).

    :param task: the :class:`clawd.handler.TaskContext` that ran.
    :param outcome: ``{"status": "ok"|"error", "result"?, "error"?, "retryable"?,
        "duration_ms"}``.
    """


@hookspec
def clawd_task_error(task: TaskContext, error: BaseException) -> None:
    """Called on the worker when a handler raised, timed out or its process died.

    Runs on the worker loop, just before :func:`clawd_after_task`.

    :param task: the :class:`clawd.handler.TaskContext` that failed.
    :param error: the exception.
    """


# -- distributor events (observers) ------------------------------------------------------


@hookspec
def clawd_task_finished(result: dict[str, Any]) -> None:
    """Called on the distributor when a task reaches its terminal result.

    Runs on the distributor loop.

    :param result: the result document published on ``clawd/results/<id>``.
    """


@hookspec
def clawd_dead_letter(letter: dict[str, Any]) -> None:
    """Called on the distributor when a task is dead-lettered.

    Runs on the distributor loop.

    :param letter: the document published on ``clawd/dead/<lane>`` (task, ``reason``,
        ``attempts``, ``history``).
    """


@hookspec
def clawd_on_breaker_change(key: str, old: str, new: str) -> None:
    """Called on the distributor when a circuit breaker changes state.

    Runs on the distributor loop.

    :param key: ``type/<type>``, ``worker/<worker>/<type>`` or ``eject/<worker>``.
    :param old: the previous state (``closed``, ``open``, ``half_open``; ``active`` or
        ``ejected`` for ejection).
    :param new: the new state.
    """


@hookspec
def clawd_scale(signals: dict[str, Any], config: Config) -> None:
    """Called on the distributor after every published metrics snapshot, with scaling signals.

    Runs on the distributor loop: implementations that start or stop workers (see
    docs/scaling.md) do slow work on a thread of their own.

    :param signals: :func:`clawd.scaling.signals` of the snapshot (``backlog``,
        ``recommended_workers``, ``recommended_capacity``, ``reason``, ...).
    :param config: the effective :class:`clawd.config.Config` (``[scaler]`` settings).
    """
