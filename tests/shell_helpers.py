"""Helpers for the tests of the claw.events shell interface: real processes, real pipes."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.conftest import Broker, run_cli

#: the venv's bin: the installed `claw.events` and `clawd` executables the scripts call
BIN = Path(sys.executable).parent
SEED = Path(__file__).resolve().parent / "seed"


def shell_env(clawd_env: dict[str, str], config: Path) -> dict[str, str]:
    """What a user's shell has: the venv's bin on PATH, and which clawd to talk to."""
    return {
        **clawd_env,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "CLAWD_CONFIG": str(config),
    }


class Lines:
    """A process whose stdout lines are read by a thread, so a test can wait for them."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def take(self, n: int, timeout: float = 30) -> list[str]:
        """The next ``n`` lines; fails naming what came when they do not."""
        out: list[str] = []
        end = time.monotonic() + timeout
        while len(out) < n:
            try:
                out.append(self.lines.get(timeout=max(0.0, end - time.monotonic())))
            except queue.Empty:
                raise AssertionError(
                    f"got {len(out)} of {n} lines: {out}; stderr: {''.join(self.stderr)}"
                ) from None
        return out

    def stop(self, sig: int = 15, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
        return self.proc.wait(timeout)


def wait_subscribed(broker: Broker, topic: str, timeout: float = 20) -> None:
    """Wait for the broker's log line of a subscription to ``topic`` (log_type subscribe)."""
    log = broker.dir / "mosquitto.log"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if log.exists() and f" {topic}" in log.read_text(errors="replace"):
            return
        time.sleep(0.02)
    raise AssertionError(f"nobody subscribed to {topic} within {timeout} s")


def wait_workers(broker: Broker, channel: str, n: int, timeout: float = 20) -> list[str]:
    """Wait until ``n`` workers announce ``channel`` online; their ids."""
    p = subprocess.Popen(
        ["mosquitto_sub", *broker.args, "-t", "clawd/workers/+", "-W", str(int(timeout))],
        stdout=subprocess.PIPE,
        text=True,
    )
    online: set[str] = set()
    try:
        assert p.stdout is not None
        for line in p.stdout:
            doc: dict[str, Any] = json.loads(line) if line.strip() else {}
            if doc.get("state") == "online" and channel in doc.get("handlers", ()):
                online.add(doc["id"])
            if len(online) >= n:
                return sorted(online)
    finally:
        p.kill()
        p.wait()
    raise AssertionError(f"{len(online)} of {n} workers announced {channel}: {online}")


def results(env: dict[str, str], *ids: str) -> dict[str, dict[str, Any]]:
    """The stored results of ``ids`` (``clawd results``), by id."""
    r = run_cli("results", *ids, env=env)  # exits 1 while some have no result yet
    assert "Traceback" not in r.stderr, r.stderr
    docs = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    return {d["id"]: d for d in docs}


def wait_results(env: dict[str, str], *ids: str, timeout: float = 30) -> Any:
    """Wait until every id has a stored result (reading the journal as `clawd results`)."""
    end = time.monotonic() + timeout
    got: dict[str, dict[str, Any]] = {}
    while time.monotonic() < end:
        got = results(env, *ids)
        if set(ids) <= got.keys():
            return got
        time.sleep(0.1)
    raise AssertionError(f"results of {sorted(set(ids) - got.keys())} missing: {got}")
