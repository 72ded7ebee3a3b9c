"""Every hook clawd calls, grouped by lifecycle.

Plugins implement these with ``@clawd.hookimpl``. Registration hooks hand the plugin a
``register`` callback: the host validates what is registered and names both plugins
when two register the same name. Observer hooks never take the daemon down: a plugin
that raises is logged with its name and skipped.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("clawd")


# -- registration (called once at start-up and again on reload) -------------------------


@hookspec
def clawd_register_handlers(register: Any, config: Any) -> None:
    """Register task-type handlers.

    Called at start-up by every process that runs the worker role, and by
    ``clawd plugins``.

    :param register: ``register(type_name, func, *, timeout=None, isolation="thread",
        description="")``; ``func(ctx: clawd.handler.TaskContext)`` returns the result.
    :param config: the effective :class:`clawd.config.Config`.
    """


@hookspec
def clawd_register_strategies(register: Any, config: Any) -> None:
    """Register distribution strategies.

    Called at start-up by the distributor, and by ``clawd plugins``.

    :param register: ``register(name, factory, *, description="")``;
        ``factory(options: dict)`` returns an object with
        ``choose(task: TaskView, candidates: Sequence[WorkerView]) -> WorkerView``.
    :param config: the effective :class:`clawd.config.Config`.
    """


# -- task lifecycle on the worker (observers) --------------------------------------------


@hookspec
def clawd_before_task(task: Any, worker_id: str) -> None:
    """Called on the worker just before a handler runs.

    :param task: the :class:`clawd.handler.TaskContext` about to run.
    :param worker_id: the id of the worker running it.
    """


@hookspec
def clawd_after_task(task: Any, outcome: dict[str, Any]) -> None:
    """Called on the worker after a handler returned or failed.

    :param task: the :class:`clawd.handler.TaskContext` that ran.
    :param outcome: ``{"status": "ok"|"error", "result"?, "error"?, "retryable"?,
        "duration_ms"}``.
    """


@hookspec
def clawd_task_error(task: Any, error: BaseException) -> None:
    """Called on the worker when a handler raised.

    :param task: the :class:`clawd.handler.TaskContext` that failed.
    :param error: the exception.
    """


# -- distributor events (observers) ------------------------------------------------------


@hookspec
def clawd_task_finished(result: dict[str, Any]) -> None:
    """Called on the distributor when a task reaches its terminal result.

    :param result: the result document published on ``clawd/results/<id>``.
    """


@hookspec
def clawd_dead_letter(letter: dict[str, Any]) -> None:
    """Called on the distributor when a task is dead-lettered.

    :param letter: the document published on ``clawd/dead/<lane>`` (task, ``reason``,
        ``attempts``, ``history``).
    """


@hookspec
def clawd_on_breaker_change(key: str, old: str, new: str) -> None:
    """Called on the distributor when a circuit breaker changes state.

    :param key: ``type/<type>``, ``worker/<worker>/<type>`` or ``eject/<worker>``.
    :param old: the previous state (``closed``, ``open``, ``half_open``; ``active`` or
        ``ejected`` for ejection).
    :param new: the new state.
    """


@hookspec
def clawd_scale(signals: dict[str, Any], config: Any) -> None:
    """Called on the distributor after every published metrics snapshot, with scaling signals.

    Implementations start or stop workers (see docs/scaling.md). They run on the
    distributor's loop: slow work belongs on a thread of their own.

    :param signals: :func:`clawd.scaling.signals` of the snapshot (``backlog``,
        ``recommended_workers``, ``recommended_capacity``, ``reason``, ...).
    :param config: the effective :class:`clawd.config.Config` (``[scaler]`` settings).
    """
