"""Drop-in plugin for the bench: task type ``noop`` does nothing and returns None."""

from clawd import hookimpl


def noop(ctx):
    return None


@hookimpl
def clawd_register_handlers(register, config):
    register("noop", noop, description="does nothing (bench)")
