"""A strategy whose choose always raises."""

from clawd import hookimpl


class Boom:
    def __init__(self, options):
        pass

    def choose(self, task, candidates):
        raise RuntimeError("boom strategy")


@hookimpl
def clawd_register_strategies(register, config):
    register("boom", Boom, description="raises")
