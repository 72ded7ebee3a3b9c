"""An observer that fails every time, on the distributor and on the worker."""

from clawd import hookimpl


@hookimpl
def clawd_task_finished(result):
    raise RuntimeError("noisy observer")


@hookimpl
def clawd_after_task(task, outcome):
    raise RuntimeError("noisy worker observer")
