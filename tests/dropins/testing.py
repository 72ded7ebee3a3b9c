"""Handlers the integration tests use: slow, failing, flaky, hanging, counting."""

import json
import os
import signal
import time

from clawd import hookimpl
from clawd.errors import TaskError


def _log(ctx):
    # every execution appends a line: the tests count executions per id from it
    path = os.environ.get("CLAWD_TEST_EXEC_LOG")
    if path:
        with open(path, "a") as f:
            rec = {"id": ctx.id, "attempt": ctx.attempt, "pid": os.getpid(), "t": time.time()}
            f.write(json.dumps(rec) + "\n")


def sleep(ctx):
    _log(ctx)
    total = float(ctx.input or 0)
    steps = max(1, int(total / 0.2))
    for i in range(steps):
        time.sleep(total / steps)
        ctx.progress((i + 1) / steps)
    return total


def fail(ctx):
    _log(ctx)
    raise RuntimeError("always fails")


def flaky(ctx):
    _log(ctx)
    if ctx.attempt < int(ctx.input):
        raise TaskError(f"failing attempt {ctx.attempt}", retryable=True)
    return ctx.attempt


def hang(ctx):
    _log(ctx)
    while True:
        pass


def crash(ctx):
    # a poison task: takes its whole worker process down with it
    _log(ctx)
    os.kill(os.getpid(), signal.SIGKILL)


def echo(ctx):
    _log(ctx)
    return ctx.input


def picky(ctx):
    # fails only on a worker started with CLAWD_TEST_FAIL set: a flapping worker
    _log(ctx)
    if os.environ.get("CLAWD_TEST_FAIL"):
        raise RuntimeError("this worker is broken")
    return ctx.input


@hookimpl
def clawd_register_handlers(register, config):
    register("sleep", sleep)
    register("fail", fail)
    register("flaky", flaky)
    register("hang", hang, isolation="process", timeout=1.0)
    register("echo", echo)
    register("picky", picky)
    register("crash", crash)
