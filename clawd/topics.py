"""Topic names: the public contract (DESIGN.md section 2) and the internal ``_`` tree."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    """Every topic clawd uses, under one configurable prefix."""

    prefix: str = "clawd"

    # -- contract ------------------------------------------------------------------------
    def tasks(self, lane: str, type_: str | None = None) -> str:
        return f"{self.prefix}/tasks/{lane}" + (f"/{type_}" if type_ else "")

    @property
    def tasks_filter(self) -> str:
        return f"{self.prefix}/tasks/#"

    def result(self, task_id: str) -> str:
        return f"{self.prefix}/results/{task_id}"

    def progress(self, task_id: str) -> str:
        return f"{self.prefix}/progress/{task_id}"

    def dead(self, lane: str) -> str:
        return f"{self.prefix}/dead/{lane}"

    @property
    def errors(self) -> str:
        return f"{self.prefix}/errors"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}/workers/{worker_id}"

    @property
    def workers_filter(self) -> str:
        return f"{self.prefix}/workers/+"

    @property
    def metrics(self) -> str:
        return f"{self.prefix}/metrics"

    # -- internal: distributor <-> worker ------------------------------------------------
    def dispatch(self, worker_id: str) -> str:
        """Tasks granted to one worker (only that worker subscribes)."""
        return f"{self.prefix}/_/w/{worker_id}/tasks"

    def done(self, worker_id: str) -> str:
        """Outcomes and heartbeats a worker reports back."""
        return f"{self.prefix}/_/done/{worker_id}"

    @property
    def done_filter(self) -> str:
        return f"{self.prefix}/_/done/+"

    @property
    def control(self) -> str:
        """Operator commands to the distributor (dlq replay, ...)."""
        return f"{self.prefix}/_/control"

    def split(self, topic: str) -> list[str]:
        """The levels of ``topic`` after the prefix."""
        return topic[len(self.prefix) + 1 :].split("/")
