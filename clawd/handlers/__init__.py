"""clawd's built-in task types, each an ordinary plugin found through an entry point.

``compute``, ``analyze`` and ``transform`` are pure functions of their input; ``exec``
registers one task type per ``[handlers.exec.<type>]`` command. See docs/handlers.md.
"""
