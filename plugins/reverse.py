"""A drop-in handler: task type ``reverse`` returns its input string reversed.

    mosquitto_pub -t clawd/tasks/normal/reverse -m 'hello'   # result: "olleh"

To install a drop-in plugin, copy the file into a directory listed in ``[daemon]
plugin_dirs``::

    [daemon]
    plugin_dirs = ["/etc/clawd/plugins"]

    install -d -m 755 /etc/clawd/plugins
    install -m 644 reverse.py /etc/clawd/plugins/

clawd refuses a plugin directory that is group- or world-writable (or owned by another
user than clawd's or root): anyone who can write a ``.py`` file there could run code as
the daemon. The plugin is named after the file (``reverse``), which is the name to use in
``[daemon] disable_plugins`` and what ``clawd plugins`` shows.
"""

from __future__ import annotations

from typing import Any

from clawd import hookimpl
from clawd.errors import BadInput
from clawd.handler import TaskContext


def reverse(ctx: TaskContext) -> str:
    """Reverse ``ctx.input``, reporting progress halfway."""
    if not isinstance(ctx.input, str):
        # BadInput is not retried: the same input would fail again
        raise BadInput(f"reverse needs a string, got {type(ctx.input).__name__}")
    ctx.progress(0.5, "halfway")
    return ctx.input[::-1]


@hookimpl
def clawd_register_handlers(register: Any, config: Any) -> None:
    """Register the ``reverse`` task type."""
    register("reverse", reverse, timeout=5, description="reverse a string")
