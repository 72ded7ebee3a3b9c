"""clawd: a task-distribution daemon over MQTT."""

import pluggy

__version__ = "0.1.0"

#: Marker for plugin hook implementations: ``@clawd.hookimpl``.
hookimpl = pluggy.HookimplMarker("clawd")

__all__ = ["__version__", "hookimpl"]
