"""A drop-in observer: one JSON line per finished task, appended to ``$CLAWD_AUDIT_FILE``.

    # in the unit file, or `systemctl edit clawd`
    [Service]
    Environment=CLAWD_AUDIT_FILE=/var/log/clawd/audit.jsonl

Without ``CLAWD_AUDIT_FILE`` it does nothing. The line carries the task's id, type,
lane, attempt, the worker-side outcome and its duration, but not the input or result:
they may be large or sensitive. An exception here (a full disk, say) is logged by clawd
with this plugin's name and skipped; it never fails the task.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from clawd import hookimpl

# handlers run in a pool, so several after_task calls may write at once
_lock = threading.Lock()


@hookimpl
def clawd_after_task(task: Any, outcome: dict[str, Any]) -> None:
    """Append a line describing ``task`` and its ``outcome`` to the audit file."""
    path = os.environ.get("CLAWD_AUDIT_FILE")
    if not path:
        return
    record = {
        "time": time.time(),
        "id": task.id,
        "type": task.type,
        "lane": task.lane,
        "attempt": task.attempt,
        "status": outcome.get("status"),
        "error": outcome.get("error"),
        "duration_ms": outcome.get("duration_ms"),
    }
    line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
    with _lock, open(path, "a", encoding="utf-8") as f:
        # one write() of a whole line in append mode, so lines from processes sharing
        # the file do not interleave
        f.write(line)
