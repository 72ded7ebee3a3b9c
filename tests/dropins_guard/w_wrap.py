"""A new-style wrapper around every other clawd_task_finished implementation."""

import os

from clawd import hookimpl


@hookimpl(wrapper=True)
def clawd_task_finished(result):
    path = os.environ["CLAWD_TEST_HOOK_LOG"]
    with open(path, "a") as f:
        f.write(f"before {result['id']}\n")
    out = yield
    with open(path, "a") as f:
        f.write(f"after {result['id']}\n")
    return out
