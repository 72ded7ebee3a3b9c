"""The plugin manager: entry points, drop-in directories, registries.

Built-in handlers and strategies are ordinary plugins found through the ``clawd.plugins``
entry-point group, so a config can disable or override them like any third-party one.
The rest of clawd talks to plugins through :class:`Plugins`, never ``pm.hook`` directly;
:class:`Plugins` calls every hook through ``pm.hook``, each implementation fenced by
:mod:`clawd.plugin_guard`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import stat
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from clawd import hookspecs
from clawd.errors import ConfigError, PluginError
from clawd.handler import HandlerSpec, Isolation, TaskContext
from clawd.plugin_guard import Failures, GuardedStrategy, guard_plugin
from clawd.strategy import StrategySpec

if TYPE_CHECKING:
    from clawd.config import Config

log = logging.getLogger("clawd.plugins")

ENTRY_POINT_GROUP = "clawd.plugins"
#: the hooks :meth:`Plugins.notify` calls
OBSERVERS = tuple(
    sorted(n for n in vars(hookspecs) if n.startswith("clawd_") and n not in hookspecs.REGISTRATION)
)


@dataclass
class PluginInfo:
    """One registered plugin: its name, where it came from, what it registered."""

    name: str
    source: str
    handlers: list[str] = field(default_factory=list)
    strategies: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)


def check_plugin_dir(path: Path) -> None:
    """Refuse a drop-in directory others could write to: loading from it runs their code."""
    try:
        st = path.stat()
    except OSError as exc:
        raise PluginError(f"plugin directory {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise PluginError(f"plugin directory {path}: not a directory")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PluginError(
            f"plugin directory {path} is group- or world-writable "
            f"(mode {stat.S_IMODE(st.st_mode):o}); refusing to load code from it "
            f"(fix: chmod go-w {path})"
        )
    if st.st_uid not in (os.geteuid(), 0):
        raise PluginError(
            f"plugin directory {path} is owned by uid {st.st_uid}, not by this user or root; "
            "refusing to load code from it"
        )


class Plugins:
    """A facade over the pluggy manager and the handler/strategy registries."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.pm = pluggy.PluginManager("clawd")
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self.handlers: dict[str, HandlerSpec] = {}
        self.strategies: dict[str, StrategySpec] = {}
        #: failures of plugin code, per (plugin, hook), for the rate-limited log
        self.failures = Failures()
        #: observer hooks that have implementations: notify() skips the others at once
        self._live: dict[str, pluggy.HookCaller] = {}
        #: the plugin whose registration hook is running (set by its guard)
        self._registering: str | None = None
        #: strategies made, by name and options: a reload validates and applies one object
        self._made: dict[tuple[str, str], GuardedStrategy] = {}

    # -- loading -------------------------------------------------------------------------

    def load(self, *, dirs: Iterable[str] = (), disabled: Iterable[str] = ()) -> None:
        """Load entry-point plugins and drop-in files, then collect registrations."""
        disabled = set(disabled)
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in disabled:
                log.info("plugin %s disabled by config", ep.name)
                continue
            try:
                module = ep.load()
            except Exception as exc:  # one broken plugin must not take the daemon down
                raise PluginError(f"plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
            self._register(module, ep.name, f"entry point {ep.value}")
        for d in dirs:
            self.load_dir(Path(d), disabled)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"{exc} (misspelled hook name?)") from None
        self.collect()

    def load_dir(self, path: Path, disabled: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        check_plugin_dir(path)
        for file in sorted(path.glob("*.py")):
            name = file.stem
            if name.startswith("_") or name in disabled:
                continue
            spec = importlib.util.spec_from_file_location(f"clawd_dropin_{name}", file)
            if spec is None or spec.loader is None:
                raise PluginError(f"plugin file {file}: cannot be imported")
            module = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                raise PluginError(f"plugin file {file} failed to load: {exc!r}") from exc
            sys.modules[spec.name] = module
            if name in self.info:
                # a drop-in with a built-in's name replaces it, as documented
                self.pm.unregister(name=name)
                self._refresh_live()
                log.info("drop-in %s replaces plugin %s", file, name)
            self._register(module, name, str(file))

    def register_object(self, obj: object, name: str, source: str = "code") -> None:
        """Register a plugin object directly (tests, embedding)."""
        self._register(obj, name, source)

    def _register(self, obj: object, name: str, source: str) -> None:
        proxy = guard_plugin(
            obj, name, source, self.pm.parse_hookimpl_opts, self.failures, self._set_registering
        )
        try:
            self.pm.register(proxy, name=name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            raise PluginError(f"plugin {name!r} from {source}: {exc}") from None
        hooks = [h.name for h in self.pm.get_hookcallers(proxy) or []]
        self.info[name] = PluginInfo(name=name, source=source, hooks=sorted(hooks))
        self._refresh_live()

    def _refresh_live(self) -> None:
        callers = ((h, getattr(self.pm.hook, h)) for h in OBSERVERS)
        self._live = {h: c for h, c in callers if c.get_hookimpls()}

    def _set_registering(self, plugin: str | None) -> str | None:
        prior, self._registering = self._registering, plugin
        return prior

    # -- registries ----------------------------------------------------------------------

    def collect(self) -> None:
        """(Re)build the handler and strategy registries from the registered plugins.

        A registration hook that raises, or registers something invalid, is a
        :class:`PluginError` naming the plugin.
        """
        self.handlers.clear()
        self.strategies.clear()
        self._made.clear()
        for info in self.info.values():
            info.handlers.clear()
            info.strategies.clear()
        hook = self.pm.hook
        hook.clawd_register_handlers(register=self._register_handler, config=self.config)
        hook.clawd_register_strategies(register=self._register_strategy, config=self.config)

    def _current(self, what: str) -> str:
        plugin = self._registering
        if plugin is None:
            raise PluginError(f"{what} registered outside a registration hook")
        return plugin

    def _register_handler(
        self,
        name: str,
        func: Callable[[TaskContext], Any],
        *,
        timeout: float | None = None,
        isolation: Isolation = "thread",
        description: str = "",
    ) -> None:
        plugin = self._current(f"handler {name!r}")
        if not isinstance(name, str) or not name or "/" in name or "+" in name or "#" in name:
            raise PluginError(f"plugin {plugin!r} registered an invalid task type {name!r}")
        if not callable(func):
            raise PluginError(f"plugin {plugin!r}: handler for {name!r} is not callable")
        if isolation not in ("thread", "process"):
            raise PluginError(
                f"plugin {plugin!r}: handler {name!r} isolation must be "
                f"'thread' or 'process', not {isolation!r}"
            )
        hc = self.config.handler_config(name)
        if not hc.enabled:
            return
        prior = self.handlers.get(name)
        if prior is not None and prior.plugin != plugin:
            raise PluginError(
                f"task type {name!r} is registered by both {prior.plugin!r} and "
                f"{plugin!r}; disable one in [daemon] disable_plugins"
            )
        if hc.timeout is not None:
            timeout = hc.timeout
        self.handlers[name] = HandlerSpec(name, func, timeout, isolation, description, plugin)
        self.info[plugin].handlers.append(name)

    def _register_strategy(
        self, name: str, factory: hookspecs.StrategyFactory, *, description: str = ""
    ) -> None:
        plugin = self._current(f"strategy {name!r}")
        prior = self.strategies.get(name)
        if prior is not None and prior.plugin != plugin:
            raise PluginError(
                f"strategy {name!r} is registered by both {prior.plugin!r} and {plugin!r}"
            )
        self.strategies[name] = StrategySpec(name, factory, description, plugin)
        self.info[plugin].strategies.append(name)

    # -- observer hooks ------------------------------------------------------------------

    def notify(self, hook: str, **kwargs: Any) -> None:
        """Call an observer hook through ``pm.hook``; a failing plugin is logged by name
        and skipped, and the other implementations still run."""
        caller = self._live.get(hook)
        if caller is None:
            return
        try:
            caller(**kwargs)
        except Exception as exc:  # every implementation is guarded; this is a last fence
            log.error("observers of %s failed: %r (skipped)", hook, exc)

    # -- strategies ----------------------------------------------------------------------

    def make_strategy(self, name: str, options: dict[str, Any]) -> GuardedStrategy:
        """The strategy ``name`` built with ``options``, its ``choose`` guarded.

        Asked again with the same name and options (a reload validates, then the
        distributor applies), it returns the same object.
        """
        spec = self.strategies.get(name)
        if spec is None:
            known = ", ".join(sorted(self.strategies)) or "none"
            raise PluginError(f"[distributor] strategy {name!r} is not registered (known: {known})")
        key = (name, repr(sorted(options.items())))
        made = self._made.get(key)
        if made is not None:
            return made
        try:
            inner = spec.factory(options)
        except (ConfigError, PluginError):
            raise
        except Exception as exc:
            raise PluginError(
                f"strategy {name!r} of plugin {spec.plugin!r} failed to start: {exc!r}"
            ) from None
        made = self._made[key] = GuardedStrategy(inner, name, spec.plugin, self.failures)
        return made


def load_plugins(config: Any) -> Plugins:
    """Build the plugin manager for a config: entry points plus its drop-in dirs."""
    plugins = Plugins(config)
    plugins.load(dirs=config.daemon.plugin_dirs, disabled=config.daemon.disable_plugins)
    return plugins
