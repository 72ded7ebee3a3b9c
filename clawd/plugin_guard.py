"""Fences around plugin code: one plugin's exception never reaches the loop that called it.

Every hook implementation is registered with pluggy wrapped in a guard that has the same
name, signature and ``@hookimpl`` options (``tryfirst``, ``trylast``, ``wrapper``,
``hookwrapper``), so every call still goes through ``pm.hook`` and pluggy's ordering and
wrappers work as documented. What a guard does when the plugin raises depends on the hook:

- an **observer** is logged (its plugin's name, the hook, the exception) and skipped;
  the other implementations still run and the caller never sees the exception;
- a **registration** hook becomes a :class:`~clawd.errors.PluginError` naming the plugin,
  which refuses start-up (exit 78) or a reload (the running plugins stay in force).

:class:`GuardedStrategy` does the same for a strategy's ``choose``: a strategy that raises,
or answers with something that is not one of the candidates, is logged and a candidate is
chosen round robin instead.

A failure that repeats on every task is logged the 1st, 10th, 100th... time, with a count.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Generator, Sequence
from typing import Any

from clawd.errors import ConfigError, PluginError
from clawd.hookspecs import REGISTRATION
from clawd.strategy import Strategy, TaskView, WorkerView

log = logging.getLogger("clawd.plugins")

#: the attribute pluggy reads a ``@clawd.hookimpl``'s options from
IMPL_ATTR = "clawd_impl"


class Failures:
    """Counts failures per (plugin, where) and logs the 1st, 10th, 100th... of each."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def record(self, plugin: str, where: str, what: str) -> None:
        key = (plugin, where)
        n = self.counts.get(key, 0) + 1
        self.counts[key] = n
        if n not in _LOUD:
            return
        again = f" ({n} failures so far)" if n > 1 else ""
        log.error("plugin %s failed in %s: %s; skipped%s", plugin, where, what, again)


#: the failure counts that are logged
_LOUD = frozenset(10**k for k in range(12))


class PluginProxy:
    """What is registered with pluggy in a plugin's place: its guarded hook functions."""

    def __init__(self, name: str, source: str, target: object) -> None:
        self.clawd_plugin_name = name
        self.clawd_plugin_source = source
        self.clawd_plugin_target = target

    def __repr__(self) -> str:
        return f"<clawd plugin {self.clawd_plugin_name!r} from {self.clawd_plugin_source}>"


def guard_plugin(
    obj: object,
    name: str,
    source: str,
    opts_of: Callable[[object, str], Any],
    failures: Failures,
    registering: Callable[[str | None], str | None],
) -> PluginProxy:
    """A proxy for ``obj`` whose hook implementations are guarded.

    ``opts_of(obj, attr)`` is pluggy's ``parse_hookimpl_opts``; ``registering(name)`` tells
    the host which plugin a registration hook is running for (and returns the previous one).
    """
    proxy = PluginProxy(name, source, obj)
    for attr in dir(obj):
        if attr.startswith("_"):
            continue
        opts = opts_of(obj, attr)
        if opts is None:
            continue
        func = getattr(obj, attr)
        if attr in REGISTRATION:
            on_error = _refuse(name, source, attr)
        else:
            on_error = _skip(name, attr, failures)
        gen = inspect.isgeneratorfunction(func)
        guarded = _guard_gen(func, on_error) if gen else _guard(func, on_error)
        if attr in REGISTRATION:
            guarded = _as_registrant(guarded, name, registering, gen)
        setattr(guarded, IMPL_ATTR, opts)
        setattr(proxy, attr, guarded)
    return proxy


# -- what a failure means ----------------------------------------------------------------


def short(value: object, limit: int = 200) -> str:
    """``repr(value)`` cut to ``limit`` characters, for a one-line log message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _skip(plugin: str, hook: str, failures: Failures) -> Callable[[BaseException], None]:
    def on_error(exc: BaseException) -> None:
        failures.record(plugin, hook, short(exc))

    return on_error


def _refuse(plugin: str, source: str, hook: str) -> Callable[[BaseException], None]:
    def on_error(exc: BaseException) -> None:
        if isinstance(exc, PluginError | ConfigError):
            raise exc  # already names what was wrong
        raise PluginError(f"plugin {plugin!r} ({source}) failed in {hook}: {short(exc)}") from None

    return on_error


# -- the guards --------------------------------------------------------------------------


def _guard(func: Callable[..., Any], on_error: Callable[[BaseException], None]) -> Any:
    @functools.wraps(func)
    def guarded(*args: Any) -> Any:
        try:
            return func(*args)
        except Exception as exc:
            on_error(exc)
            return None

    return guarded


def _guard_gen(func: Callable[..., Any], on_error: Callable[[BaseException], None]) -> Any:
    """Guard a wrapper (``wrapper=True`` or ``hookwrapper=True``): pluggy sends it the
    result (or throws the exception) of the inner calls; a wrapper that fails before or
    after its ``yield`` is reported and the result passes through unchanged."""

    @functools.wraps(func)
    def guarded(*args: Any) -> Generator[Any, Any, Any]:
        try:
            gen = func(*args)
            first = next(gen)
        except StopIteration:
            on_error(RuntimeError("the wrapper returned without yielding"))
            return (yield)
        except Exception as exc:
            on_error(exc)
            return (yield)
        try:
            sent = yield first
        except BaseException as inner:
            # an inner implementation failed: the wrapper may handle it, as with pluggy
            try:
                gen.throw(inner)
            except StopIteration as stop:
                return stop.value
            except BaseException as exc:
                if exc is not inner and isinstance(exc, Exception):
                    on_error(exc)
                raise
            on_error(RuntimeError("the wrapper yielded twice"))
            gen.close()
            raise
        try:
            gen.send(sent)
        except StopIteration as stop:
            return stop.value
        except Exception as exc:
            on_error(exc)
            return sent
        on_error(RuntimeError("the wrapper yielded twice"))
        gen.close()
        return sent

    return guarded


def _as_registrant(
    guarded: Any, plugin: str, registering: Callable[[str | None], str | None], gen: bool
) -> Any:
    """Tell the host which plugin is registering while ``guarded`` runs."""
    if gen:

        @functools.wraps(guarded)
        def wrapper(*args: Any) -> Generator[Any, Any, Any]:
            prior = registering(plugin)
            try:
                return (yield from guarded(*args))
            finally:
                registering(prior)

        return wrapper

    @functools.wraps(guarded)
    def call(*args: Any) -> Any:
        prior = registering(plugin)
        try:
            return guarded(*args)
        finally:
            registering(prior)

    return call


# -- strategies --------------------------------------------------------------------------


class GuardedStrategy:
    """A strategy whose failures are named in the log and answered round robin."""

    def __init__(self, inner: Strategy, name: str, plugin: str, failures: Failures) -> None:
        self.inner = inner
        self.name = name
        self.plugin = plugin
        self._failures = failures
        self._where = f"strategy {name!r} choose"
        self._next = 0

    def choose(self, task: TaskView, candidates: Sequence[WorkerView]) -> WorkerView:
        try:
            chosen = self.inner.choose(task, candidates)
        except Exception as exc:
            return self._fallback(candidates, short(exc))
        for c in candidates:
            if c is chosen:
                return chosen
        return self._fallback(candidates, f"returned {short(chosen)}, not a candidate")

    def _fallback(self, candidates: Sequence[WorkerView], why: str) -> WorkerView:
        self._failures.record(self.plugin, self._where, f"{why} (chose round robin instead)")
        self._next += 1
        return candidates[self._next % len(candidates)]

    def __getattr__(self, attr: str) -> Any:
        # the strategy's own attributes (options, state) stay readable
        if attr == "inner":  # not set yet (a copy being made): no recursion
            raise AttributeError(attr)
        return getattr(self.inner, attr)
