"""How the last reload ended, in the state directory, for ``clawd systemd reload`` to wait on.

Before systemd 253 (``Type=notify-reload``), ``systemctl reload`` returns as soon as its
``ExecReload=`` command does. With ``ExecReload=clawd systemd reload $MAINPID`` that command
sends SIGHUP and waits here until the daemon reports the reload done (after ``READY=1``),
so ``systemctl reload clawd`` returns once the new configuration runs, and fails, with
the reason, when clawd refused it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

FILE = "reload.json"


def read(state_dir: Path) -> dict[str, Any]:
    """The last report (``count`` 0 when there is none)."""
    try:
        return dict(json.loads((state_dir / FILE).read_text()))
    except (OSError, ValueError):
        return {"count": 0}


def record(state_dir: Path, ok: bool, message: str) -> None:
    """Publish the outcome of one reload (written whole, then renamed into place)."""
    doc = {"count": read(state_dir)["count"] + 1, "ok": ok, "message": message}
    tmp = state_dir / f".{FILE}.tmp"
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, state_dir / FILE)


def request(state_dir: Path, pid: int, timeout: float) -> dict[str, Any]:
    """SIGHUP ``pid`` and wait for its report.

    :raises TimeoutError: no report within ``timeout`` seconds.
    :raises ProcessLookupError: there is no such process.
    """
    before = read(state_dir)["count"]
    os.kill(pid, signal.SIGHUP)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        doc = read(state_dir)
        if doc["count"] != before:
            return doc
        time.sleep(0.05)
    raise TimeoutError(f"clawd (pid {pid}) did not report the reload within {timeout:g}s")
