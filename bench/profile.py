"""``python -m bench.profile``: py-spy the distributor and a worker during a throughput run.

Writes raw collapsed stacks (``*.txt``, for flamegraph.pl or speedscope) and prints the
functions with the most samples, own time and total time, for each process.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

from bench import clawd_bench
from bench.infra import Mosquitto, workdir


def top(path: Path, n: int) -> list[str]:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        k = int(count)
        samples += k
        frames = stack.split(";")
        own[frames[-1]] += k
        for f in set(frames):
            total[f] += k
    out = [f"{path.name}: {samples} samples; own time"]
    out += [f"  {v / samples:6.1%}  {f}" for f, v in own.most_common(n)]
    out.append("  total (inclusive) time")
    out += [f"  {v / samples:6.1%}  {f}" for f, v in total.most_common(n * 2)]
    return out


@click.command()
@click.option("--tasks", default=40_000, show_default=True)
@click.option("--seconds", default=8, show_default=True, help="py-spy sampling duration.")
@click.option("--concurrency", default=16, show_default=True)
@click.option("--out", default="bench/results", show_default=True, type=click.Path())
@click.option("--top", "n", default=15, show_default=True)
def main(tasks: int, seconds: int, concurrency: int, out: str, n: int) -> None:
    """Profile clawd's distributor and first worker under the throughput load."""
    spy = shutil.which("py-spy")
    if spy is None:
        sys.exit("py-spy not found: pip install py-spy")
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = workdir()
    broker = Mosquitto(tmp).start()
    cluster = clawd_bench.Cluster(tmp, broker.port, concurrency)
    try:
        d = cluster.start_distributor()
        cluster.start_workers()
        prod = clawd_bench.producer(broker.port)
        prod.throughput(500)
        targets = {"distributor": d.pid, "worker": cluster.workers[0].pid}
        spies = [
            subprocess.Popen(
                [
                    spy,
                    "record",
                    "-r",
                    "200",
                    "-d",
                    str(seconds),
                    "-f",
                    "raw",
                    "-o",
                    str(dest / f"profile-{name}.txt"),
                    "--pid",
                    str(pid),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            for name, pid in targets.items()
        ]
        time.sleep(0.5)
        print(f"{prod.throughput(tasks):,.0f} tasks/s while profiled")
        for s in spies:
            s.wait()
        prod.close()
    finally:
        cluster.stop()
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    for name in targets:
        print("\n".join(top(dest / f"profile-{name}.txt", n)))


if __name__ == "__main__":
    main()
