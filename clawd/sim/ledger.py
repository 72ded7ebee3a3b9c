"""What the simulation saw happen, as the invariants need it.

The broker's tap shows every publish it accepted (dispatches, results, dead letters,
retained statuses); the simulated pool reports every execution; the runner records every
acknowledged submission and, at every fault, which tasks it put at risk (``exposed``):
an extra execution of a task is allowed only for a fault it was in flight at.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from clawd.sim.broker import Packet
from clawd.topics import Topics


@dataclass
class Execution:
    attempt: int
    worker: str
    status: str = ""  # "" while running, else "ok" / "error"


@dataclass
class Ledger:
    topics: Topics
    #: ids whose submission the broker acknowledged
    acked: set[str] = field(default_factory=set)
    #: id -> distinct (attempt, worker) dispatches, in the order they were published
    dispatches: dict[str, list[tuple[int, str]]] = field(default_factory=lambda: defaultdict(list))
    #: (id, worker) of every dispatch the broker accepted, in order
    dispatch_log: list[tuple[str, str]] = field(default_factory=list)
    #: id -> distinct terminal outcomes: (status, attempts, worker, result, error)
    outcomes: dict[str, list[tuple[Any, ...]]] = field(default_factory=lambda: defaultdict(list))
    #: id -> the result documents (first of each distinct outcome)
    results: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    results_published: int = 0
    dead: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    #: id -> the fencing token (attempt) of the dispatch a dead letter's history ends with
    dead_token: dict[str, int] = field(default_factory=dict)
    executions: dict[str, list[Execution]] = field(default_factory=lambda: defaultdict(list))
    #: (id, attempt, worker) -> the distinct outcomes the worker reported for that run
    reported: dict[tuple[str, int, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    exposure: Counter[str] = field(default_factory=Counter)
    #: problems found while running (consistency checks between steps)
    violations: list[str] = field(default_factory=list)
    #: ids to print the story of, and the clock to date it with
    trace: set[str] = field(default_factory=set)
    now: Callable[[], float] = lambda: 0.0

    def tap(self, pkt: Packet, publisher: str) -> None:
        """Every publish the broker accepts."""
        levels = self.topics.split(pkt.topic)
        if levels[0] == "results" and len(levels) == 2:
            self._result(levels[1], pkt.payload)
        elif levels[0] == "dead":
            letter = msgspec.json.decode(pkt.payload)
            self.dead[letter["id"]].append(letter["reason"])
            tokens = [int(r.get("attempt") or 0) for r in letter.get("history") or ()]
            self.dead_token.setdefault(letter["id"], max(tokens, default=0))
        elif levels[0] == "_" and len(levels) == 3 and levels[1] == "done":
            for o in msgspec.json.decode(pkt.payload).get("outcomes") or ():
                said = f"{o.get('status')}/{o.get('code') or ''}"
                self.reported[(o["id"], o["attempt"], levels[2])].add(said)
        elif levels[0] == "_" and len(levels) == 4 and levels[1] == "w":
            for task in msgspec.json.decode(pkt.payload)["tasks"]:
                seen = self.dispatches[task["id"]]
                entry = (task["attempt"], levels[2])
                self.dispatch_log.append((task["id"], levels[2]))
                if entry not in seen:
                    seen.append(entry)

    def _result(self, task_id: str, payload: bytes) -> None:
        doc = msgspec.json.decode(payload)
        self.results_published += 1
        key = (
            doc.get("status"),
            doc.get("attempts"),
            doc.get("worker"),
            msgspec.json.encode(doc.get("result")),
            doc.get("error"),
        )
        if key not in self.outcomes[task_id]:
            self.outcomes[task_id].append(key)
            self.results[task_id].append(doc)

    def dispatch_ids(self, pkt: Packet) -> list[str]:
        """The task ids a dispatch message carries ([] for any other message)."""
        levels = self.topics.split(pkt.topic)
        if levels[0] == "_" and len(levels) == 4 and levels[1] == "w":
            return [t["id"] for t in msgspec.json.decode(pkt.payload)["tasks"]]
        return []

    # -- executions ----------------------------------------------------------------------

    def started(self, task_id: str, attempt: int, worker: str) -> None:
        self.executions[task_id].append(Execution(attempt, worker))
        if task_id in self.trace:
            print(f"{self.now():9.3f} {worker} starts attempt {attempt} of {task_id}")

    def ended(self, task_id: str, attempt: int, worker: str, status: str) -> None:
        if task_id in self.trace:
            print(f"{self.now():9.3f} {worker} ends attempt {attempt} of {task_id}: {status}")
        for ex in reversed(self.executions[task_id]):
            if ex.attempt == attempt and ex.worker == worker and not ex.status:
                ex.status = status
                return

    # -- faults --------------------------------------------------------------------------

    def in_flight(self, worker: str | None = None) -> list[str]:
        """Tasks dispatched (to ``worker``, or anywhere) and without a result yet."""
        out = []
        for task_id, seen in self.dispatches.items():
            if task_id in self.outcomes:
                continue
            if worker is None or seen[-1][1] == worker:
                out.append(task_id)
        return out

    def dispatched_since(self, mark: int, worker: str | None = None) -> list[str]:
        """Tasks dispatched (to ``worker``, or anywhere) since ``len(dispatch_log)`` was
        ``mark``."""
        return [t for t, w in self.dispatch_log[mark:] if worker is None or w == worker]

    def expose(self, task_ids: list[str]) -> None:
        for task_id in task_ids:
            self.exposure[task_id] += 1

    def violation(self, text: str) -> None:
        self.violations.append(text)
