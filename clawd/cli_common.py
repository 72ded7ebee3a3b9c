"""What every ``clawd`` command shares: loading the config once, failing clearly."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

from clawd import config as cfgmod
from clawd.errors import ConfigError

#: sysexits: EX_CONFIG (systemd's RestartPreventExitStatus) and EX_UNAVAILABLE
EX_CONFIG = 78
EX_UNAVAILABLE = 69


def fail(message: str, code: int = 1) -> NoReturn:
    """One clear line on stderr, then exit."""
    click.echo(f"clawd: {message}", err=True)
    sys.exit(code)


def config_of(ctx: click.Context) -> Any:
    """The command's configuration, loaded once; every problem listed, then exit 78."""
    obj = ctx.find_root().obj
    if "config" not in obj:
        try:
            obj["config"] = cfgmod.load(obj["path"])
        except ConfigError as exc:
            if len(exc.problems) == 1:
                click.echo(f"clawd: invalid configuration: {exc.problems[0]}", err=True)
            else:
                click.echo("clawd: invalid configuration:", err=True)
                for p in exc.problems:
                    click.echo(f"  {p}", err=True)
            sys.exit(EX_CONFIG)
    return obj["config"]
