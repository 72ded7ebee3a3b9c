"""Built-in distribution strategies.

Each strategy lives in its own module and is registered by :mod:`clawd.strategies.builtin`,
an ordinary plugin found through the ``clawd.plugins`` entry point ``strategies``. Disable
them all with ``[daemon] disable_plugins = ["strategies"]`` or replace them with a drop-in
file named ``strategies.py``.
"""

from clawd.strategies.fastest import Fastest
from clawd.strategies.least_loaded import LeastLoaded, load_key
from clawd.strategies.rendezvous import RendezvousHash
from clawd.strategies.round_robin import RoundRobin

__all__ = ["Fastest", "LeastLoaded", "RendezvousHash", "RoundRobin", "load_key"]
