"""The ``claw.events`` command (and ``clawd pub|sub|subexec|whoami``): channels from a shell.

With no flags it talks to the running clawd: the embedded broker of the state dir, or
the broker of the config (``-c``, ``$CLAWD_CONFIG``, /etc/clawd/clawd.toml);
``--broker URL`` and ``--prefix`` override both. docs/shell.md has the whole interface.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import click

from clawd import __version__, channels
from clawd.cli_common import config_of
from clawd.cli_options import CONFIG_HELP, set_config_path
from clawd.envelope import Rejected, decode, encode, parse_submission
from clawd.errors import BrokerError
from clawd.subexec import BROKER_ENV, PREFIX_ENV

F = Callable[..., Any]


def _program() -> str:
    ctx = click.get_current_context(silent=True)
    return "clawd" if ctx is not None and ctx.find_root().command is not events else "claw.events"


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr, named for the command that was typed, then exit."""
    click.echo(f"{_program()}: {message}", err=True)
    sys.exit(code)


def connection_options(f: F) -> F:
    """``-c``, ``--broker`` and ``--prefix`` on every verb (before or after its arguments)."""
    f = click.option(
        "--prefix", envvar=PREFIX_ENV, metavar="PREFIX", help="Topic prefix (default: config)."
    )(f)
    f = click.option(
        "--broker",
        "broker_url",
        envvar=BROKER_ENV,
        metavar="URL",
        help="Broker URL, e.g. mqtt://127.0.0.1:1883 (default: the running clawd's).",
    )(f)
    return click.option(
        "-c",
        "--config",
        metavar="FILE",
        expose_value=False,
        callback=set_config_path,
        help=CONFIG_HELP,
    )(f)


def _config(ctx: click.Context, broker_url: str | None, prefix: str | None) -> Any:
    cfg = config_of(ctx)
    if broker_url:
        cfg.broker.url = broker_url
    if prefix:
        cfg.broker.prefix = prefix
    return cfg


def _channel(name: str) -> str:
    try:
        return channels.check_channel(name)
    except channels.ChannelError as exc:
        fail(str(exc), 2)


# -- pub -------------------------------------------------------------------------------


def _served(client: Any, channel: str) -> bool:
    """Whether some worker (online or not) announced ``channel`` as a task type."""
    for m in client.retained():
        try:
            doc = decode(m.payload)
        except Exception:
            continue
        if isinstance(doc, dict) and channel in (doc.get("handlers") or ()):
            return True
    return False


@click.command()
@click.argument("channel")
@click.argument("message", required=False)
@click.option("--lane", help="Lane of a task (default: [distributor] default_lane).")
@click.option("--strict", is_flag=True, help="Refuse a MESSAGE that is not valid JSON.")
@connection_options
@click.pass_context
def pub(
    ctx: click.Context,
    channel: str,
    message: str | None,
    lane: str | None,
    strict: bool,
    broker_url: str | None,
    prefix: str | None,
) -> None:
    """Publish MESSAGE (JSON; - or none reads stdin) on CHANNEL.

    On a tasks channel (a name ending in .tasks, or one a subexec serves) it is a task:
    journaled, run once by one worker, retried, dead-lettered; its "id" is kept.
    """
    from clawd.client import Client
    from clawd.topics import Topics

    channel = _channel(channel)
    cfg = _config(ctx, broker_url, prefix)
    text = sys.stdin.read() if message in (None, "-") else message
    assert text is not None
    payload, problem = channels.parse_payload(text)
    if problem is not None:
        if strict:
            fail(f"message for {channel} is {problem}", 2)
        click.echo(f"{_program()}: warning: message is {problem}; sent as a string", err=True)
    sender = channels.client_id()
    known = channels.is_tasks_name(channel)
    subs = [] if known else [(Topics(cfg.broker.prefix).workers_filter, 1)]
    with Client(cfg, subs, probe=not known) as c:
        if known or _served(c, channel):
            lane = lane or cfg.distributor.default_lane
            env = channels.task_envelope(channel, sender, payload)
            data = encode(env)
            try:
                parse_submission(
                    ["tasks", lane, channel],
                    data,
                    lanes=cfg.lanes,
                    max_payload=cfg.daemon.max_payload,
                )
            except Rejected as exc:
                fail(f"task refused on {channel}: {exc.error}", 2)
            c.publish_acked(Topics(cfg.broker.prefix).tasks(lane, channel), data)
        else:
            doc = channels.message(channel, sender, payload)
            c.publish_acked(channels.plain_topic(cfg.broker.prefix, channel), encode(doc))


# -- sub -------------------------------------------------------------------------------


@click.command()
@click.argument("channel")
@click.option("-n", "--count", type=int, help="Exit after this many messages.")
@click.option("--timeout", type=float, help="Exit (status 2) after this many seconds.")
@connection_options
@click.pass_context
def sub(
    ctx: click.Context,
    channel: str,
    count: int | None,
    timeout: float | None,
    broker_url: str | None,
    prefix: str | None,
) -> None:
    """Print every message on CHANNEL as one JSON line:
    {"channel", "sender", "payload", "timestamp"}."""
    import time

    from clawd.client import Client

    channel = _channel(channel)
    cfg = _config(ctx, broker_url, prefix)
    p = cfg.broker.prefix
    plain = channels.plain_topic(p, channel)
    subs = [(plain, 1), (channels.task_filter(p, channel), 1)]
    seen = 0
    end = None if timeout is None else time.monotonic() + timeout
    with Client(cfg, subs) as c, _interrupt_ends():
        while count is None or seen < count:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                sys.exit(2 if count else 0)
            m = c.next(left if left is not None else 1.0)
            if m is None:
                continue
            read = channels.read_plain if m.topic == plain else channels.read_task
            line = encode(read(channel, m.payload)).decode()
            try:
                click.echo(line)
                sys.stdout.flush()
            except BrokenPipeError:
                _quiet_exit()
            seen += 1


@contextlib.contextmanager
def _interrupt_ends() -> Iterator[None]:
    """Ctrl-C ends a stream quietly, with the shell's status for it."""
    try:
        yield
    except KeyboardInterrupt:
        sys.exit(130)


def _quiet_exit() -> NoReturn:
    # the reader went away (| head): exit quietly, as a shell tool does
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(0)


# -- subexec ---------------------------------------------------------------------------


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("channel")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--worker-id", help="This worker's id (default: <host>-<pid>).")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Commands run at once.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=300.0,
    show_default=True,
    help="Seconds a command may run (a task's own timeout wins).",
)
@connection_options
@click.pass_context
def subexec(
    ctx: click.Context,
    channel: str,
    command: tuple[str, ...],
    worker_id: str | None,
    concurrency: int,
    timeout: float,
    broker_url: str | None,
    prefix: str | None,
) -> None:
    """Serve CHANNEL's tasks: run COMMAND once per task, CLAW_MESSAGE holding the task.

    Use as: claw.events subexec agent.leader.tasks -- ./worker.sh
    """
    from clawd import logs
    from clawd.envelope import check_id
    from clawd.subexec import Subexec

    channel = _channel(channel)
    argv = list(command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise click.UsageError("give the command after --: subexec CHANNEL -- COMMAND...")
    if worker_id is not None:
        try:
            check_id(worker_id)
        except Rejected as exc:
            fail(f"--worker-id: {exc.error}", 2)
    cfg = _config(ctx, broker_url, prefix)
    logs.setup("debug" if ctx.find_root().obj.get("debug") else "warning")
    server = Subexec(
        cfg,
        channel,
        argv,
        worker_id=worker_id,
        concurrency=concurrency,
        timeout=timeout,
        config_path=ctx.find_root().obj.get("path"),
    )
    shown = " ".join(argv).strip().splitlines()[0]
    shown = shown if len(shown) <= 40 and len(" ".join(argv)) <= 40 else shown[:40] + " ..."
    click.echo(f"{_program()}: worker {cfg.worker.id} serves {channel}: {shown}", err=True)
    sys.exit(server.run())


# -- whoami ----------------------------------------------------------------------------


@click.command()
def whoami() -> None:
    """Print who publishes from here: "worker id <id>" inside a subexec command,
    else "client id <user>-<host>" (the third word is the id)."""
    kind = "worker" if os.environ.get(channels.WORKER_ENV) else "client"
    click.echo(f"{kind} id {channels.client_id()}")


VERBS = (pub, sub, subexec, whoami)


@click.group(name="claw.events")
@click.option("--debug", is_flag=True, help="Debug logging, and tracebacks for errors.")
@click.version_option(__version__, prog_name="claw.events")
@click.pass_context
def events(ctx: click.Context, debug: bool) -> None:
    """Channels over clawd: pub, sub, subexec, whoami."""
    ctx.obj = {"path": None, "debug": debug}


for _verb in VERBS:
    events.add_command(_verb)


def main() -> None:
    try:
        events(prog_name="claw.events")
    except BrokerError as exc:
        fail(str(exc), 69)
