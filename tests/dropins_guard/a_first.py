"""Registered first, called first among plain observers only because of tryfirst."""

import os

from clawd import hookimpl


@hookimpl(tryfirst=True)
def clawd_task_finished(result):
    with open(os.environ["CLAWD_TEST_HOOK_LOG"], "a") as f:
        f.write(f"first {result['id']}\n")
