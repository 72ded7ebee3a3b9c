"""The plugin that registers the built-in strategies.

Found through the ``clawd.plugins`` entry point ``strategies``; it goes through the same
hook a third-party plugin uses, so ``[daemon] disable_plugins = ["strategies"]`` removes
all four and a drop-in file ``strategies.py`` replaces them.
"""

from __future__ import annotations

from typing import Any

from clawd import hookimpl
from clawd.strategies.fastest import Fastest
from clawd.strategies.least_loaded import LeastLoaded
from clawd.strategies.rendezvous import RendezvousHash
from clawd.strategies.round_robin import RoundRobin


@hookimpl
def clawd_register_strategies(register: Any, config: Any) -> None:
    """Register ``round_robin``, ``hash``, ``least_loaded`` and ``fastest``."""
    register("round_robin", RoundRobin, description="take turns in worker-id order")
    register(
        "hash",
        RendezvousHash,
        description="same key, same worker; stable under worker churn (rendezvous hashing)",
    )
    register("least_loaded", LeastLoaded, description="lowest in_flight/capacity")
    register(
        "fastest",
        Fastest,
        description="lowest observed time for the task type; unmeasured workers first",
    )
