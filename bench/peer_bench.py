"""The peers: Celery on Redis and on RabbitMQ, Dramatiq on Redis, RQ on Redis, run from a
virtualenv of the bench's own.

The peers are not clawd dependencies: ``bench/.venv`` is created on first use and
``celery[redis]``, ``dramatiq[redis]`` and ``rq`` are installed there. If that fails, the
rows are skipped with a note saying why. Every broker is private: a redis-server or a
RabbitMQ node of the bench's own on free ports (bench/infra.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.infra import RabbitMQ, Redis, stop

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv"
PEERS = HERE / "peers"
REQUIREMENTS = ["celery[redis]>=5.3", "dramatiq[redis]>=1.15", "rq>=1.15"]
#: the peer systems, in table order: (client side in peers/client.py, broker)
KINDS = {
    "celery": ("celery", "redis"),
    "celery-rabbitmq": ("celery", "rabbitmq"),
    "dramatiq": ("dramatiq", "redis"),
    "rq": ("rq", "redis"),
}
LABELS = {
    "celery": "Celery + Redis",
    "celery-rabbitmq": "Celery + RabbitMQ",
    "dramatiq": "Dramatiq + Redis",
    "rq": "RQ + Redis",
}
#: tasks per throughput run at most, for a peer that would take most of the bench's
#: time otherwise (RQ forks a process per job: tens of tasks/s here); 200 round trips
MAX_TASKS = {"rq": 2_000}
#: 2 worker processes each, as for clawd
WORKER_ARGS: dict[str, Callable[[dict[str, str]], list[str]]] = {
    "celery": lambda env: [
        "-m", "celery", "-A", "celery_app", "worker", "--pool=prefork", "-c", "2",
        "--loglevel=WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat",
    ],
    "dramatiq": lambda env: ["-m", "dramatiq", "dramatiq_app", "-p", "2", "-t", "4"],
    # RQ's own pool; each worker forks a work horse per job (RQ's default Worker)
    "rq": lambda env: [
        "-m", "rq.cli", "worker-pool", "-n", "2", "-u", env["BENCH_REDIS_URL"], "-l", "WARNING",
    ],
}  # fmt: skip


def python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv(log: Callable[[str], None]) -> str | None:
    """Create the peers' virtualenv if needed; None when ready, else why not."""
    py = python()
    probe = [str(py), "-c", "import celery, dramatiq, redis, rq"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return None
    log(f"installing {', '.join(REQUIREMENTS)} into {VENV} (once)")
    try:
        if not py.exists():
            venv.create(VENV, with_pip=True)
        r = subprocess.run(
            [str(py), "-m", "pip", "install", "-q", *REQUIREMENTS],
            capture_output=True,
            text=True,
            timeout=900,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not create {VENV}: {exc}"
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["?"]
        return f"pip install {' '.join(REQUIREMENTS)} failed: {tail[0]}"
    return None


class PeerBroker:
    """The private broker of one peer run: redis-server, or a RabbitMQ node with
    Celery's results on its reply queues (``rpc://``)."""

    def __init__(self, which: str, workdir: Path) -> None:
        self.kind = KINDS[which][1]
        self.server: Redis | RabbitMQ
        if self.kind == "rabbitmq":
            rabbit = RabbitMQ(workdir).start()
            self.server = rabbit
            self.env = {"BENCH_BROKER_URL": rabbit.url, "BENCH_BACKEND_URL": "rpc://"}
        else:
            redis = Redis(workdir).start()
            self.server = redis
            self.env = {"BENCH_REDIS_URL": redis.url}

    @property
    def pid(self) -> int:
        return self.server.proc.pid  # type: ignore[union-attr]

    def stop(self) -> None:
        self.server.stop()


def peer_env(broker: PeerBroker, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **broker.env, "PYTHONPATH": str(PEERS), **(extra or {})}
    env.pop("PYTHONHOME", None)
    return env


def cpu_roles(broker: PeerBroker, worker: subprocess.Popen[Any]) -> str:
    """BENCH_CPU_PIDS for the client (peers/cpu.py): the broker's and workers' trees."""
    return f"broker={broker.pid};workers={worker.pid}"


def run_peer(
    which: str, workdir: Path, tasks: int, rtt: int, runs: int, log: Callable[[str], None]
) -> list[dict[str, object]]:
    """Start the broker and the peer's workers, run the client; one dict per run."""
    side = KINDS[which][0]
    broker = PeerBroker(which, workdir / which)
    env = peer_env(broker)
    wlog = open(workdir / f"{which}-worker.log", "wb")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [str(python()), *WORKER_ARGS[side](env)],
        cwd=PEERS,
        env=env,
        stdout=wlog,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        client = subprocess.run(
            [str(python()), "client.py", side, str(tasks), str(rtt), str(runs)],
            cwd=PEERS,
            env={**env, "BENCH_CPU_PIDS": cpu_roles(broker, worker)},
            capture_output=True,
            text=True,
            timeout=3600,
        )
        if client.returncode != 0:
            raise RuntimeError(f"{which} client failed:\n{client.stderr[-3000:]}")
        return [json.loads(line) for line in client.stdout.splitlines() if line.startswith("{")]
    finally:
        stop(worker, timeout=20)  # type: ignore[arg-type]
        wlog.close()
        broker.stop()


if __name__ == "__main__":
    print(ensure_venv(print) or "ready", file=sys.stderr)
