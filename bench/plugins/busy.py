"""A ``busy`` task type for the lane benchmark: sleeps ``input`` seconds."""

import time

from clawd import hookimpl


def busy(ctx):
    time.sleep(float(ctx.input or 0))


@hookimpl
def clawd_register_handlers(register):
    register("busy", busy, description="sleep input seconds (benchmark)")
