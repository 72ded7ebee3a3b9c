"""``clawd demo``: start clawd on a private embedded broker, run one task per type, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from clawd import config as cfgmod
from clawd.client import submit_many
from clawd.envelope import encode
from clawd.systemd import NotifyListener

TASKS: list[dict[str, Any]] = [
    {"type": "compute", "input": "2+2"},
    {"type": "compute", "input": "2^10"},
    {"type": "compute", "input": "(1+2)*3 / 4"},
    {"type": "analyze", "input": [3, 1, 4, 1, 5, 9, 2, 6]},
    {"type": "analyze", "input": "clawd is a great little queue. Great results, no lost tasks."},
    {"type": "transform", "input": {"data": ["b", "a", "c"], "ops": ["sort", {"map": "upper"}]}},
    {"type": "compute", "input": "1/0"},
]


def run_demo(console: Console) -> int:
    with tempfile.TemporaryDirectory(prefix="clawd-demo-") as tmp:
        state = Path(tmp) / "state"
        cfg_path = Path(tmp) / "clawd.toml"
        cfg_path.write_text(f'[broker]\nurl = "embedded"\n\n[daemon]\nstate_dir = "{state}"\n')
        notify = NotifyListener(Path(tmp) / "notify.sock")
        env = {**os.environ, "NOTIFY_SOCKET": str(notify.path)}
        log = open(Path(tmp) / "clawd.log", "wb")  # noqa: SIM115 - closed below
        console.print(f"[bold]starting[/] clawd run -c {cfg_path} (embedded mosquitto)")
        proc = subprocess.Popen(
            [sys.executable, "-m", "clawd", "-c", str(cfg_path), "run"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            notify.wait_for("READY=1", proc, 30)
            cfg = cfgmod.load(str(cfg_path))
            envelopes = [dict(t) for t in TASKS]
            start = time.monotonic()
            results = submit_many(cfg, envelopes, wait=True, timeout=30)
            took = time.monotonic() - start
            table = Table(
                "type",
                "input",
                "status",
                "result / error",
                "worker",
                "ms",
                title=f"{len(results)} results in {took * 1000:.0f} ms",
            )
            for env_ in envelopes:
                r = results.get(env_["id"], {})
                shown = r.get("result", r.get("error", "no result"))
                table.add_row(
                    env_["type"],
                    encode(env_["input"]).decode()[:40],
                    r.get("status", "-"),
                    encode(shown).decode()[:60] if not isinstance(shown, str) else shown[:60],
                    r.get("worker", ""),
                    f"{r.get('duration_ms', 0):.1f}",
                )
            console.print(table)
            console.print(
                "Keep one running with [bold]clawd run[/], then "
                "[bold]clawd submit compute '2+2' --wait[/] from another terminal."
            )
            return 0 if len(results) == len(envelopes) else 1
        except RuntimeError as exc:
            log.flush()
            console.print(f"[red]{exc}[/]\n" + (Path(tmp) / "clawd.log").read_text()[-2000:])
            return 1
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
            notify.close()
