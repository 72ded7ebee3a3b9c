"""The distributor role: owns task state, routes tasks to workers, records outcomes."""

from clawd.distributor.core import Distributor

__all__ = ["Distributor"]
