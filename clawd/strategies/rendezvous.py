"""``hash``: the same key goes to the same worker, and churn moves few keys."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from clawd.strategies._options import check_options, string_option
from clawd.strategy import TaskView, WorkerView

OPTIONS = {"meta_key": 'the task meta field that pins a key (default "key")'}


def weight(key: str, worker_id: str) -> int:
    """The rendezvous weight of ``worker_id`` for ``key``: stable across processes and hosts.

    blake2b rather than :func:`hash`, which is salted per process: two distributors (or
    one restarted) must agree on where a key goes. The worker id is length-prefixed so
    that no (key, id) pair can be spelled like another.
    """
    digest = hashlib.blake2b(f"{len(worker_id)}:{worker_id}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class RendezvousHash:
    """Rendezvous (highest-random-weight) hashing of the task's key over the candidates.

    The key is ``task.meta[meta_key]`` when present (so related tasks can be pinned
    together, e.g. everything for one customer), else the task id. Each candidate gets a
    pseudo-random weight for the key and the heaviest wins. When a worker joins, it takes
    only the keys for which it is now the heaviest (about 1/n of them) and no other key
    moves; when a worker leaves, only its keys move. Use it for cache locality.

    The choice is among *candidates*: a preferred worker that is busy, broken or gone is
    skipped for the next heaviest, so a key's home is a preference, not a guarantee.

    Options: ``meta_key`` (default ``"key"``).
    """

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        options = options or {}
        check_options("hash", options, OPTIONS)
        self.meta_key = string_option("hash", options, "meta_key", "key")

    def key(self, task: TaskView) -> str:
        """The string the task is hashed on."""
        pinned = task.meta.get(self.meta_key)
        return task.id if pinned is None else str(pinned)

    def choose(self, task: TaskView, candidates: Sequence[WorkerView]) -> WorkerView:
        key = self.key(task)
        # the id breaks a (astronomically unlikely) weight tie so the result is deterministic
        return max(candidates, key=lambda w: (weight(key, w.id), w.id))
