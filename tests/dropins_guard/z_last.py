"""Registered last (so called first without a marker), called last because of trylast."""

import os

from clawd import hookimpl


@hookimpl(trylast=True)
def clawd_task_finished(result):
    with open(os.environ["CLAWD_TEST_HOOK_LOG"], "a") as f:
        f.write(f"last {result['id']}\n")
