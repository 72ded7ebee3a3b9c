"""An observer that wedges the distributor loop when a task asks for it (watchdog tests)."""

import time

from clawd import hookimpl


@hookimpl
def clawd_task_finished(result):
    if (result.get("meta") or {}).get("wedge"):
        time.sleep(3600)
