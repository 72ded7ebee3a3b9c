"""Options every ``clawd`` subcommand shares, wherever on the command line they are typed."""

from __future__ import annotations

from typing import Any

import click

CONFIG_HELP = "Config file (default: $CLAWD_CONFIG, then /etc/clawd/clawd.toml)."


def set_config_path(ctx: click.Context, param: Any, value: str | None) -> None:
    # the root group's -c lands in the same place: the last one typed wins
    if value is not None:
        ctx.find_root().obj["path"] = value


def config_option() -> click.Option:
    """``-c/--config FILE`` on a subcommand, as on the group (``clawd run -c FILE``)."""
    return click.Option(
        ["-c", "--config"],
        metavar="FILE",
        expose_value=False,
        callback=set_config_path,
        help=CONFIG_HELP,
    )


def accept_config_anywhere(group: click.Group) -> None:
    """Give every command under ``group`` that lacks one a ``-c/--config`` option."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            accept_config_anywhere(command)
        elif not any("-c" in p.opts for p in command.params):
            command.params.append(config_option())
