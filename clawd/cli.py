"""The ``clawd`` command."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from clawd import __version__
from clawd import broker as embedded
from clawd import config as cfgmod
from clawd.cli_cancel import cancel_command
from clawd.cli_common import EX_CONFIG, EX_UNAVAILABLE, config_of, fail
from clawd.cli_dlq import dlq_group
from clawd.cli_events import VERBS as EVENT_VERBS
from clawd.cli_options import accept_config_anywhere
from clawd.cli_route import route_group
from clawd.cli_task import task_command
from clawd.envelope import Rejected, decode, encode
from clawd.errors import BrokerError, BrokerRefused, ConfigError, JournalError, PluginError

log = logging.getLogger("clawd")


@click.group()
@click.option(
    "-c",
    "--config",
    "path",
    metavar="FILE",
    help="Config file (default: $CLAWD_CONFIG, then /etc/clawd/clawd.toml).",
)
@click.option("--debug", is_flag=True, help="Debug logging, and tracebacks for errors.")
@click.version_option(__version__, prog_name="clawd")
@click.pass_context
def cli(ctx: click.Context, path: str | None, debug: bool) -> None:
    """clawd: distribute tasks over MQTT."""
    ctx.obj = {"path": path, "debug": debug}


def main() -> None:
    try:
        cli(standalone_mode=True)
    except BrokerRefused as exc:
        fail(str(exc), EX_CONFIG)  # retrying cannot help: systemd must not restart-loop
    except BrokerError as exc:
        fail(str(exc), EX_UNAVAILABLE)
    except PluginError as exc:
        fail(str(exc), EX_CONFIG)


# -- run -------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--role",
    "roles",
    multiple=True,
    type=click.Choice(["distributor", "worker"]),
    help="Run only this role (repeatable; default: [daemon] roles).",
)
@click.option(
    "--worker-id", help="This worker's id (default: [worker] id, $CLAWD_WORKER_ID, or <host>-1)."
)
@click.pass_context
def run(ctx: click.Context, roles: tuple[str, ...], worker_id: str | None) -> None:
    """Run the daemon (embedded broker, distributor and worker by default)."""
    from clawd import logs
    from clawd.daemon import Daemon

    cfg = config_of(ctx)
    debug = ctx.find_root().obj["debug"]
    logs.setup("debug" if debug else cfg.daemon.log_level, debug=debug)
    if worker_id:
        cfg.worker.id = worker_id
    daemon = Daemon(cfg, list(roles) or list(cfg.daemon.roles), ctx.find_root().obj["path"])
    try:
        code = daemon.run()
    except (BrokerError, PluginError, ConfigError, JournalError) as exc:
        if debug:
            log.exception("fatal")
        refused = isinstance(exc, BrokerRefused)
        code = EX_UNAVAILABLE if isinstance(exc, BrokerError) and not refused else EX_CONFIG
        fail(str(exc), 1 if isinstance(exc, JournalError) else code)
    sys.exit(code)


@cli.command()
def demo() -> None:
    """Start clawd on a private embedded broker, run one task of each type, stop."""
    from rich.console import Console

    from clawd.demo import run_demo

    sys.exit(run_demo(Console()))


# -- submit ----------------------------------------------------------------------------


def _parse_input(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


@cli.command()
@click.argument("type_", metavar="TYPE", required=False)
@click.argument("input_", metavar="[INPUT]", required=False)
@click.option(
    "-f",
    "--file",
    "file",
    type=click.File("r"),
    help="Submit every envelope of a JSONL file (one per line; - for stdin).",
)
@click.option("--lane", help="Lane (default: [distributor] default_lane).")
@click.option("--id", "task_id", help="Task id (default: generated).")
@click.option("--requires", multiple=True, help="Capability the worker must have (repeatable).")
@click.option("--task-timeout", "timeout", type=float, help="Handler time limit in seconds.")
@click.option("--delay", type=float, help="Start no earlier than this many seconds from now.")
@click.option(
    "--not-before", help="Start no earlier than this: epoch seconds or RFC 3339 (with a zone)."
)
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.option(
    "--group",
    "group_id",
    help="With -f: submit the file's envelopes as the members of one group with this id.",
)
@click.option(
    "--then",
    "then_type",
    metavar="TYPE",
    help="A task of this type runs after success, with the result (a group's: the list).",
)
@click.option(
    "--allow-failures",
    is_flag=True,
    help="With --group: run --then even when members failed (their results are null).",
)
@click.option(
    "--timeout",
    "--wait-timeout",
    "wait_timeout",
    type=float,
    default=None,
    help="Give up waiting for results after this many seconds (exit 2).",
)
@click.option("--json", "as_json", is_flag=True, help="Print whole result documents.")
@click.pass_context
def submit(
    ctx: click.Context,
    type_: str | None,
    input_: str | None,
    file: Any,
    lane: str | None,
    task_id: str | None,
    requires: tuple[str, ...],
    timeout: float | None,
    delay: float | None,
    not_before: str | None,
    wait: bool,
    group_id: str | None,
    then_type: str | None,
    allow_failures: bool,
    wait_timeout: float | None,
    as_json: bool,
) -> None:
    """Submit a task: `clawd submit compute '2+2' --wait`.

    INPUT is JSON if it parses, else text; - reads stdin. With -f FILE --group G, the
    file's envelopes run in parallel as group G, and --then TYPE gets their results.
    """
    from clawd.client import submit_many, validate

    cfg = config_of(ctx)
    if group_id is not None or allow_failures:
        if file is None or group_id is None:
            raise click.UsageError("--group and --allow-failures go with -f FILE --group ID")
        _submit_group(cfg, file, group_id, then_type, allow_failures, lane, wait_timeout, as_json)
        return
    if file is not None:
        if then_type is not None:
            raise click.UsageError("--then with -f needs --group (one then for all of them)")
        _submit_file(cfg, file, wait_timeout, as_json)
        return
    if not type_:
        raise click.UsageError("give a TYPE (or -f FILE)")
    if input_ == "-":
        input_ = sys.stdin.read()
    env: dict[str, Any] = {
        "type": type_,
        "input": _parse_input(input_) if input_ is not None else None,
    }
    for key, value in (("id", task_id), ("lane", lane), ("timeout", timeout), ("delay", delay)):
        if value is not None:
            env[key] = value
    if not_before is not None:
        try:
            env["not_before"] = float(not_before)
        except ValueError:
            env["not_before"] = not_before  # RFC 3339: the distributor checks it
    if requires:
        env["requires"] = list(requires)
    if then_type is not None:
        env["then"] = {"type": then_type}
    try:
        validate(cfg, env)  # the daemon's own parser: its message, before anything is sent
    except Rejected as exc:
        fail(f"rejected: {exc.error}")
    results = submit_many(cfg, [env], wait=wait, timeout=wait_timeout)
    if not wait:
        click.echo(env["id"])
        return
    doc = results.get(env["id"])
    if doc is None:
        fail(f"no result for task {env['id']} within {wait_timeout} s", 2)
    _print_result(doc, as_json)
    if doc["status"] != "ok":
        sys.exit(1)


def _print_result(doc: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(encode(doc).decode())
    elif doc["status"] == "ok":
        r = doc.get("result")
        click.echo(r if isinstance(r, str) else encode(r).decode())
    else:
        click.echo(f"{doc['status']}: {doc.get('error')}", err=True)


def _submit_group(
    cfg: Any,
    file: Any,
    group_id: str,
    then_type: str | None,
    allow_failures: bool,
    lane: str | None,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Every envelope of the file a member of one group; wait for the group's result."""
    from clawd.client import submit_many, validate

    env: dict[str, Any] = {
        "type": "group",
        "id": group_id,
        "tasks": [env for _, env in _read_envelopes(file)],
    }
    if then_type is not None:
        env["then"] = {"type": then_type}
    if allow_failures:
        env["allow_failures"] = True
    if lane is not None:
        env["lane"] = lane
    try:
        validate(cfg, env)
    except Rejected as exc:
        fail(f"{file.name}: rejected: {exc.error}")
    start = time.monotonic()
    doc = submit_many(cfg, [env], wait=True, timeout=timeout).get(group_id)
    if doc is None:
        fail(f"no result for group {group_id} within {timeout} s", 2)
    _print_result(doc, as_json)
    members = doc.get("members") or []
    counts: dict[str, int] = {}
    for m in members:
        counts[m["status"]] = counts.get(m["status"], 0) + 1
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    then = doc.get("then")
    click.echo(
        f"group {group_id}: {doc['status']}, {len(members)} member(s) ({summary or 'none'})"
        + (f", then {then['id']} {then['status']}" if then else "")
        + f" in {time.monotonic() - start:.2f} s",
        err=True,
    )
    if doc["status"] != "ok":
        sys.exit(1)


def _read_envelopes(file: Any) -> list[tuple[int, dict[str, Any]]]:
    """(line number, JSON object) of every non-blank line of a JSONL file, or a clear
    failure."""
    envelopes = []
    for n, line in enumerate(file, 1):
        if not line.strip():
            continue
        try:
            env = json.loads(line)
        except ValueError as exc:
            fail(f"{file.name}:{n}: not JSON: {exc}")
        if not isinstance(env, dict):
            fail(f"{file.name}:{n}: expected a JSON object (a task envelope)")
        envelopes.append((n, env))
    if not envelopes:
        fail(f"{file.name}: no envelopes in it")
    return envelopes


def _submit_file(cfg: Any, file: Any, timeout: float | None, as_json: bool) -> None:
    from rich.progress import Progress

    from clawd.client import submit_many, validate

    envelopes = []
    for n, env in _read_envelopes(file):
        try:
            validate(cfg, env)
        except Rejected as exc:
            fail(f"{file.name}:{n}: rejected: {exc.error}")
        envelopes.append(env)
    counts: dict[str, int] = {}
    start = time.monotonic()
    with Progress(transient=True, console=None) as bar:
        job = bar.add_task("tasks", total=len(envelopes))

        def seen(doc: dict[str, Any]) -> None:
            counts[doc["status"]] = counts.get(doc["status"], 0) + 1
            bar.advance(job)
            if as_json:
                bar.console.print_json(encode(doc).decode())

        results = submit_many(cfg, envelopes, wait=True, timeout=timeout, on_result=seen)
    missing = len(envelopes) - len(results)
    took = time.monotonic() - start
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    click.echo(
        f"{len(envelopes)} submitted: {summary or 'no results'}"
        + (f", {missing} without result" if missing else "")
        + f" in {took:.2f} s"
    )
    if missing or counts.keys() - {"ok"}:
        sys.exit(1)


# -- results ---------------------------------------------------------------------------


@cli.command()
@click.argument("ids", nargs=-1)
@click.option("--follow", "-f", is_flag=True, help="Keep printing results as they arrive.")
@click.option("--limit", default=20, show_default=True, help="How many recent results.")
@click.option("--timeout", type=float, help="Stop following after this many seconds.")
@click.pass_context
def results(
    ctx: click.Context, ids: tuple[str, ...], follow: bool, limit: int, timeout: float | None
) -> None:
    """Print stored results (JSON lines), newest last; --follow streams new ones."""
    from clawd.client import Client
    from clawd.journal import exists, location, open_readonly

    cfg = config_of(ctx)
    db = location(cfg)
    if exists(db):
        j = open_readonly(db)
        docs = j.results(list(ids) or None, limit)
        for doc in docs:
            click.echo(encode(doc).decode())
        missing = set(ids) - {d.get("id") for d in docs}
        known = j.lookup_many(sorted(missing))
        j.db.close()
        for task_id in sorted(missing):
            if task_id in known:
                click.echo(f"clawd: {task_id}: not finished yet ({known[task_id][0]})", err=True)
            else:
                kept = cfg.journal.retention
                click.echo(
                    f"clawd: {task_id}: unknown: never submitted here, or finished more than "
                    f"{_duration(kept)} ago and pruned ([journal] retention)"
                    if kept
                    else f"clawd: {task_id}: unknown: never submitted here",
                    err=True,
                )
        if missing - known.keys() and not follow:
            sys.exit(1)
    elif not follow:
        fail(f"no journal at {db} (is the distributor running with this state dir?)")
    if follow:
        end = None if timeout is None else time.monotonic() + timeout
        with Client(cfg, [(cfg.broker.prefix + "/results/+", 1)]) as c:
            while end is None or time.monotonic() < end:
                m = c.next(1.0 if end is None else max(0.0, min(1.0, end - time.monotonic())))
                if m is None:
                    continue
                doc = decode(m.payload)
                if not ids or doc.get("id") in ids:
                    click.echo(m.payload.decode(), nl=True)
                    sys.stdout.flush()


def _duration(seconds: float) -> str:
    """``604800`` -> ``7d``: the retention as an operator would write it."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


# -- status ----------------------------------------------------------------------------


def _snapshot(cfg: Any) -> dict[str, Any]:
    from clawd.client import Client
    from clawd.topics import Topics

    t = Topics(cfg.broker.prefix)
    with Client(cfg, [(t.metrics, 1), (t.workers_filter, 1)]) as c:
        msgs = c.collect()
    snap: dict[str, Any] = {"metrics": None, "workers": {}}
    for m in msgs:
        if not m.payload:
            continue
        if m.topic == t.metrics:
            snap["metrics"] = decode(m.payload)
        else:
            doc = decode(m.payload)
            snap["workers"][doc.get("id", m.topic.rsplit("/", 1)[-1])] = doc
    return snap


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--watch", is_flag=True, help="Refresh every 2 s until interrupted.")
@click.pass_context
def status(ctx: click.Context, as_json: bool, watch: bool) -> None:
    """Workers, lanes and rates at a glance."""
    from clawd.status_view import render, render_fitted

    cfg = config_of(ctx)
    if as_json:
        click.echo(json.dumps(_snapshot(cfg), indent=2))
        return
    from rich.console import Console
    from rich.live import Live

    console = Console()
    if not watch:
        console.print(render(_snapshot(cfg)))
        return

    def fitted() -> Any:
        return render_fitted(_snapshot(cfg), console.width, console.height)

    with Live(fitted(), console=console, refresh_per_second=1, screen=True) as live:
        while True:
            time.sleep(2)
            live.update(fitted())


# -- plugins ---------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List every plugin, where it came from and what it registered."""
    from rich.console import Console

    from clawd.plugins import load_plugins
    from clawd.status_view import plugin_table

    cfg = config_of(ctx)
    pm = load_plugins(cfg)
    rows: list[dict[str, Any]] = [
        {
            "name": i.name,
            "source": i.source,
            "handlers": i.handlers,
            "strategies": i.strategies,
            "hooks": i.hooks,
        }
        for i in pm.info.values()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    Console().print(plugin_table(rows))


# -- config ----------------------------------------------------------------------------


@cli.group("config")
def config_group() -> None:
    """Check, show or create the configuration."""


@config_group.command("check")
@click.pass_context
def config_check(ctx: click.Context) -> None:
    """Validate the configuration (exit 78 on problems)."""
    cfg = config_of(ctx)
    click.echo(f"configuration ok ({', '.join(cfg.sources) or 'built-in defaults'})")


@config_group.command("show")
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """Print the effective configuration as TOML."""
    click.echo(cfgmod.dump(config_of(ctx)), nl=False)


@config_group.command("init")
@click.argument("path", type=click.Path(dir_okay=False), default="clawd.toml")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def config_init(path: str, force: bool) -> None:
    """Write a commented sample configuration to PATH (default ./clawd.toml)."""
    p = Path(path)
    if p.exists() and not force:
        fail(f"{p} exists; use --force to overwrite")
    p.write_text(cfgmod.SAMPLE)
    click.echo(f"wrote {p}")


# -- broker ----------------------------------------------------------------------------


@cli.group("broker")
def broker_group() -> None:
    """Where the broker is (for mosquitto_pub / mosquitto_sub)."""


@broker_group.command("url")
@click.pass_context
def broker_url(ctx: click.Context) -> None:
    """Print the broker URL clawd uses."""
    click.echo(embedded.resolve_url(config_of(ctx)))


@broker_group.command("args")
@click.pass_context
def broker_args(ctx: click.Context) -> None:
    """Print mosquitto_pub/sub/rr connection arguments.

    Use as: mosquitto_sub $(clawd broker args) -t '#'
    """
    from clawd.connection import Endpoint

    ep = Endpoint.parse(embedded.resolve_url(config_of(ctx)))
    if ep.unix:
        click.echo(f"--unix {ep.host}")
    else:
        click.echo(f"-h {ep.host} -p {ep.port}")


# -- systemd ---------------------------------------------------------------------------


@cli.group("systemd")
def systemd_group() -> None:
    """systemd integration."""


@systemd_group.command("unit")
@click.option("--worker", is_flag=True, help="The clawd-worker@.service template instead.")
@click.option(
    "--force", is_flag=True, help="Print it even if the unit's sandbox hides this installation."
)
def systemd_unit(worker: bool, force: bool) -> None:
    """Print the unit file with this installation's paths."""
    from clawd.units import hidden_paths, render

    problems = hidden_paths()
    if problems and not force:
        fail(
            f"refusing to write a unit that cannot start: {'; '.join(problems)}. Install "
            "clawd where the service can run it (pip install . into a virtualenv under /opt, "
            "not -e from a home directory), or pass --force"
        )
    for problem in problems:
        click.echo(f"clawd: warning: {problem}", err=True)
    click.echo(render(worker=worker), nl=False)


@systemd_group.command("reload")
@click.argument("pid", type=int)
@click.option(
    "--state-dir",
    envvar="CLAWD_STATE_DIR",
    required=True,
    help="The running clawd's state directory (default: $CLAWD_STATE_DIR).",
)
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait.")
def systemd_reload(pid: int, state_dir: str, timeout: float) -> None:
    """SIGHUP clawd PID and wait until it runs the new configuration (the units'
    ExecReload=): exit 0 when it does, 1 with the reason when it refused it."""
    from clawd import reload_report

    try:
        doc = reload_report.request(Path(state_dir), pid, timeout)
    except ProcessLookupError:
        fail(f"no process {pid} to reload")
    except PermissionError:
        fail(f"not allowed to signal process {pid}")
    except TimeoutError as exc:
        fail(str(exc))
    if not doc.get("ok"):
        fail(f"reload refused, the running configuration stays: {doc.get('message')}")
    click.echo(doc.get("message", "configuration reloaded"))


cli.add_command(dlq_group)
cli.add_command(route_group)
cli.add_command(task_command)
for _verb in EVENT_VERBS:
    cli.add_command(_verb)
accept_config_anywhere(cli)
cli.add_command(cancel_command)

if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
