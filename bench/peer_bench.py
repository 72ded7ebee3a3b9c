"""Celery + Redis and Dramatiq + Redis, run from a virtualenv of the bench's own.

The peers are not clawd dependencies: ``bench/.venv`` is created on first use and
``celery[redis]`` and ``dramatiq[redis]`` are installed there. If that fails, the rows
are skipped with a note saying why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from collections.abc import Callable
from pathlib import Path

from bench.infra import Redis, stop

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv"
PEERS = HERE / "peers"
REQUIREMENTS = ["celery[redis]>=5.3", "dramatiq[redis]>=1.15"]
#: 2 worker processes each, as for clawd
WORKER_ARGS = {
    "celery": ["-m", "celery", "-A", "celery_app", "worker", "--pool=prefork", "-c", "2",
               "--loglevel=WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"],
    "dramatiq": ["-m", "dramatiq", "dramatiq_app", "-p", "2", "-t", "4"],
}  # fmt: skip


def python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv(log: Callable[[str], None]) -> str | None:
    """Create the peers' virtualenv if needed; None when ready, else why not."""
    py = python()
    probe = [str(py), "-c", "import celery, dramatiq, redis"]
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


def run_peer(
    which: str, workdir: Path, tasks: int, rtt: int, runs: int, log: Callable[[str], None]
) -> list[dict[str, object]]:
    """Start redis and the peer's workers, run the client; one dict per run."""
    redis = Redis(workdir / which).start()
    env = {**os.environ, "BENCH_REDIS_URL": redis.url, "PYTHONPATH": str(PEERS)}
    env.pop("PYTHONHOME", None)
    wlog = open(workdir / f"{which}-worker.log", "wb")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [str(python()), *WORKER_ARGS[which]],
        cwd=PEERS,
        env=env,
        stdout=wlog,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        client = subprocess.run(
            [str(python()), "client.py", which, str(tasks), str(rtt), str(runs)],
            cwd=PEERS,
            env=env,
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
        redis.stop()


if __name__ == "__main__":
    print(ensure_venv(print) or "ready", file=sys.stderr)
