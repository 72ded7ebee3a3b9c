"""The plugin manager: entry points, drop-in directories, registries.

Built-in handlers and strategies are ordinary plugins found through the ``clawd.plugins``
entry-point group, so a config can disable or override them like any third-party one.
The rest of clawd talks to plugins through :class:`Plugins`, never ``pm.hook`` directly.
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
from typing import Any

import pluggy

from clawd import hookspecs
from clawd.errors import PluginError
from clawd.handler import HandlerSpec, Isolation
from clawd.strategy import StrategySpec

log = logging.getLogger("clawd.plugins")

ENTRY_POINT_GROUP = "clawd.plugins"


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

    def __init__(self, config: Any) -> None:
        self.config = config
        self.pm = pluggy.PluginManager("clawd")
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self.handlers: dict[str, HandlerSpec] = {}
        self.strategies: dict[str, StrategySpec] = {}

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
                log.info("drop-in %s replaces plugin %s", file, name)
            self._register(module, name, str(file))

    def register_object(self, obj: Any, name: str, source: str = "code") -> None:
        """Register a plugin object directly (tests, embedding)."""
        self._register(obj, name, source)

    def _register(self, obj: Any, name: str, source: str) -> None:
        try:
            self.pm.register(obj, name=name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            raise PluginError(f"plugin {name!r} from {source}: {exc}") from None
        hooks = [h.name for h in self.pm.get_hookcallers(obj) or []]
        self.info[name] = PluginInfo(name=name, source=source, hooks=sorted(hooks))

    # -- registries ----------------------------------------------------------------------

    def collect(self) -> None:
        """(Re)build the handler and strategy registries from the registered plugins."""
        self.handlers.clear()
        self.strategies.clear()
        for info in self.info.values():
            info.handlers.clear()
            info.strategies.clear()
        for impl in self.pm.hook.clawd_register_handlers.get_hookimpls():
            self._call(impl, register=self._handler_registrar(impl.plugin_name), config=self.config)
        for impl in self.pm.hook.clawd_register_strategies.get_hookimpls():
            self._call(
                impl, register=self._strategy_registrar(impl.plugin_name), config=self.config
            )

    @staticmethod
    def _call(impl: Any, **kwargs: Any) -> Any:
        # pluggy lets an implementation name only the arguments it uses
        return impl.function(**{k: kwargs[k] for k in impl.argnames})

    def _handler_registrar(self, plugin: str) -> Callable[..., None]:
        def register(
            name: str,
            func: Callable[..., Any],
            *,
            timeout: float | None = None,
            isolation: Isolation = "thread",
            description: str = "",
        ) -> None:
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

        return register

    def _strategy_registrar(self, plugin: str) -> Callable[..., None]:
        def register(name: str, factory: Callable[..., Any], *, description: str = "") -> None:
            prior = self.strategies.get(name)
            if prior is not None and prior.plugin != plugin:
                raise PluginError(
                    f"strategy {name!r} is registered by both {prior.plugin!r} and {plugin!r}"
                )
            self.strategies[name] = StrategySpec(name, factory, description, plugin)
            self.info[plugin].strategies.append(name)

        return register

    # -- observer hooks ------------------------------------------------------------------

    def notify(self, hook: str, **kwargs: Any) -> None:
        """Call an observer hook; a failing plugin is logged by name and skipped."""
        caller = getattr(self.pm.hook, hook)
        for impl in caller.get_hookimpls():
            try:
                self._call(impl, **kwargs)
            except Exception as exc:
                log.error("plugin %s failed in %s: %r (skipped)", impl.plugin_name, hook, exc)

    def make_strategy(self, name: str, options: dict[str, Any]) -> Any:
        spec = self.strategies.get(name)
        if spec is None:
            known = ", ".join(sorted(self.strategies)) or "none"
            raise PluginError(f"[distributor] strategy {name!r} is not registered (known: {known})")
        return spec.factory(options)


def load_plugins(config: Any) -> Plugins:
    """Build the plugin manager for a config: entry points plus its drop-in dirs."""
    plugins = Plugins(config)
    plugins.load(dirs=config.daemon.plugin_dirs, disabled=config.daemon.disable_plugins)
    return plugins
