"""The worker role: announces itself, runs what it is granted, reports outcomes."""

from clawd.worker.core import Worker

__all__ = ["Worker"]
