"""``python -m bench.cluster``: a 3-node RabbitMQ cluster (MQTT plugin) on this machine
(``--broker ejabberd``: three ejabberd nodes with mod_mqtt),
clawd given all three nodes' URLs, node 0 killed with kill -9 under load; prints the
Jepsen-style accounting (submitted, results, lost, duplicated, unexpected) and the time
to recover. See docs/broker-matrix.md.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.brokers.base import Unavailable  # noqa: E402
from tests.brokers.cluster import EjabberdCluster, NodeKill, RabbitCluster  # noqa: E402
from tests.brokers.ejabberd import Ejabberd  # noqa: E402
from tests.brokers.rabbitmq import RabbitMQ  # noqa: E402

KINDS = {"rabbitmq": (RabbitMQ, RabbitCluster), "ejabberd": (Ejabberd, EjabberdCluster)}

console = Console(width=120)


@click.command()
@click.option("--broker", type=click.Choice(list(KINDS)), default="rabbitmq", show_default=True)
@click.option("--tasks", default=2000, show_default=True, help="Tasks published in all.")
@click.option("--kill-after", default=600, show_default=True, help="Acked tasks before the kill.")
@click.option("--runs", default=1, show_default=True, help="Repeat on a fresh cluster.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write results here.")
@click.option("--keep", is_flag=True, help="Keep the nodes' and clawd's logs and data.")
def main(
    broker: str, tasks: int, kill_after: int, runs: int, json_out: str | None, keep: bool
) -> None:
    """kill -9 one broker node of three under load; lost must be 0."""
    server, cluster_class = KINDS[broker]
    try:
        server.check_installed()
    except Unavailable as exc:
        raise SystemExit(f"cannot run: {exc}") from None
    out = []
    for i in range(runs):
        workdir = Path(tempfile.mkdtemp(prefix="clawd-cluster-"))
        cluster = cluster_class(workdir)
        t0 = time.monotonic()
        try:
            cluster.start()
            boot = time.monotonic() - t0
            console.print(f"[dim]run {i + 1}: cluster up in {boot:.0f}s[/dim]")
            nk = NodeKill(cluster, workdir / "clawd")
            try:
                nk.start()
                r = nk.run(tasks=tasks, kill_after=kill_after)
            finally:
                nk.close()
            r["cluster_boot_s"] = round(boot, 1)
            out.append(r)
        finally:
            cluster.close()
            if keep or os.environ.get("CLAWD_BENCH_KEEP"):
                console.print(f"logs and data kept in {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    t = Table(title=f"kill -9 of one {broker} node of three, under load")
    cols = ["submitted", "results", "lost", "duplicated", "unexpected", "recover_s", "drain_s"]
    for c in ["run", *cols, "republished_batches"]:
        t.add_column(c)
    for i, r in enumerate(out):
        t.add_row(str(i + 1), *(str(r[c]) for c in cols), str(r["republished_batches"]))
    console.print(t)
    if json_out:
        Path(json_out).write_text(json.dumps(out, indent=2))
    if any(r["lost"] for r in out):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
