"""The daemon under a real notify socket: READY, STATUS, WATCHDOG, RELOADING, STOPPING."""

from __future__ import annotations

import json
import shutil
import signal
import time
import urllib.request
from pathlib import Path

from tests.conftest import ROOT, free_port, lines, pub, run_cli, sub


def fields(notes: list[str]) -> list[str]:
    return [line.split("=", 1)[0] for note in notes for line in note.split("\n") if line]


def collect(d, seconds: float) -> list[str]:
    end = time.monotonic() + seconds
    d.sock.settimeout(0.1)
    got = []
    while time.monotonic() < end:
        try:
            got.append(d.sock.recv(4096).decode())
        except TimeoutError:
            continue
    d.notes.extend(got)
    return got


def write(path: Path, broker_url: str, state: Path, extra: str = "") -> Path:
    path.write_text(f'[broker]\nurl = "{broker_url}"\n\n[daemon]\nstate_dir = "{state}"\n{extra}')
    return path


def test_ready_status_and_watchdog_cadence(broker, tmp_path, start_clawd):
    cfg = write(tmp_path / "c.toml", broker.url, tmp_path / "state")
    d = start_clawd("-c", str(cfg), "run", env={"WATCHDOG_USEC": "1000000"})
    ready = d.notes[-1]
    assert ready.startswith("READY=1") and "STATUS=" in ready
    got = collect(d, 2.2)
    pings = [n for n in got if n == "WATCHDOG=1"]
    # WATCHDOG_USEC 1 s: a ping every 0.5 s from the working loop
    assert 3 <= len(pings) <= 6, got
    d.proc.send_signal(signal.SIGTERM)
    assert "STOPPING" in fields(collect(d, 1.0))
    assert d.proc.wait(30) == 0


def test_wedged_loop_stops_the_watchdog(broker, tmp_path, start_clawd):
    plugins = tmp_path / "wedge"
    plugins.mkdir(mode=0o755)
    shutil.copy(ROOT / "tests" / "dropins_wedge" / "wedge.py", plugins / "wedge.py")
    extra = f'plugin_dirs = ["{plugins}"]\n'
    cfg = write(tmp_path / "c.toml", broker.url, tmp_path / "state", extra)
    d = start_clawd(
        "-c", str(cfg), "run", "--role", "distributor", env={"WATCHDOG_USEC": "1000000"}
    )
    start_clawd("-c", str(cfg), "run", "--role", "worker")
    assert "WATCHDOG=1" in collect(d, 1.5)
    pub(
        broker,
        "clawd/tasks/normal",
        json.dumps({"type": "compute", "input": "1", "meta": {"wedge": True}}),
    )
    time.sleep(0.5)
    # the loop is stuck in the plugin: pings stop (after the stall allowance) for good
    collect(d, 5.5)
    assert "WATCHDOG=1" not in collect(d, 3.0)


def test_sighup_reload_good_and_bad_config(broker, tmp_path, start_clawd):
    cfg = write(tmp_path / "c.toml", broker.url, tmp_path / "state")
    d = start_clawd("-c", str(cfg), "run")
    d.proc.send_signal(signal.SIGHUP)
    got = collect(d, 1.5)
    seq = fields(got)
    assert "RELOADING" in seq and "READY" in seq[seq.index("RELOADING") :]
    reloading = next(n for n in got if n.startswith("RELOADING=1"))
    assert "MONOTONIC_USEC=" in reloading
    cfg.write_text(cfg.read_text() + "\n[worker]\nconcurency = 2\n")
    d.proc.send_signal(signal.SIGHUP)
    got = collect(d, 1.5)
    seq = fields(got)
    assert "RELOADING" in seq and "READY" in seq[seq.index("RELOADING") :]
    assert d.proc.poll() is None
    assert "reload refused" in d.output() and "concurency" in d.output()
    assert d.stop() == 0


def test_a_broker_outage_does_not_stop_the_watchdog(broker, tmp_path, start_clawd):
    port = free_port()
    metrics = f"\n[metrics]\nprometheus_port = {port}\n"
    cfg = write(tmp_path / "c.toml", broker.url, tmp_path / "state", metrics)
    d = start_clawd("-c", str(cfg), "run", env={"WATCHDOG_USEC": "1000000"})

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    assert "clawd_broker_connected 1.0" in scrape()
    broker.stop()
    # the loops keep turning (and reconnecting): pings go on, STATUS says why work stopped
    got = collect(d, 3.0)
    assert got.count("WATCHDOG=1") >= 4, got
    assert any("STATUS=broker mqtt://127.0.0.1" in n and "unreachable" in n for n in got), got
    text = scrape()
    assert "clawd_broker_connected 0.0" in text and "clawd_broker_outages_total 1.0" in text
    broker.start()
    out = sub(broker, "clawd/results/after-outage", 1, 60)
    pub(
        broker,
        "clawd/tasks/normal",
        json.dumps({"id": "after-outage", "type": "compute", "input": "2+3"}),
    )
    assert json.loads(out.communicate(timeout=70)[0])["result"] == 5
    assert d.proc.poll() is None
    assert "broker mqtt://" in d.output() and "reachable again" in d.output()


def test_start_waits_for_a_broker_that_is_not_up_yet(broker, tmp_path, start_clawd):
    broker.stop()
    cfg = write(tmp_path / "c.toml", broker.url, tmp_path / "state")
    d = start_clawd("-c", str(cfg), "run", env={"WATCHDOG_USEC": "1000000"}, ready=False)
    got = collect(d, 2.5)
    assert any(
        n.startswith(f"STATUS=waiting for broker at {broker.url}: Connection refused") for n in got
    ), got
    assert "WATCHDOG=1" in got and any(n.startswith("EXTEND_TIMEOUT_USEC=") for n in got)
    assert not any(n.startswith("READY=1") for n in got)
    broker.start()
    d.wait_for("READY=1", timeout=60)
    assert "is not reachable (Connection refused); waiting for it" in d.output()


def test_reload_is_ready_only_once_the_loops_run_the_new_config(broker, tmp_path, start_clawd):
    cfg = write(tmp_path / "c.toml", broker.url, tmp_path / "state", '\n[worker]\nid = "rl"\n')
    d = start_clawd("-c", str(cfg), "run")
    cfg.write_text(cfg.read_text() + "concurrency = 2\n")
    status = sub(broker, "clawd/workers/rl", 2, 20)
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for("READY=1")
    # by READY the worker has re-announced itself with the new capacity
    docs = lines(status)
    assert [doc["capacity"] for doc in docs] == [4, 2], docs


def test_systemd_reload_waits_for_the_outcome(broker, tmp_path, start_clawd, clawd_env):
    state = tmp_path / "state"
    cfg = write(tmp_path / "c.toml", broker.url, state)
    d = start_clawd("-c", str(cfg), "run")
    ok = run_cli("systemd", "reload", str(d.proc.pid), "--state-dir", str(state), env=clawd_env)
    assert (ok.returncode, ok.stdout) == (0, "configuration reloaded\n"), ok.stderr
    # by the time it returned, READY=1 had been sent (it is waiting on the socket)
    seq = fields(collect(d, 0.3))
    assert "RELOADING" in seq and "READY" in seq[seq.index("RELOADING") :]
    cfg.write_text(cfg.read_text() + "\n[worker]\nconcurency = 2\n")
    bad = run_cli(
        "systemd", "reload", str(d.proc.pid), env={**clawd_env, "CLAWD_STATE_DIR": str(state)}
    )
    assert bad.returncode == 1
    assert bad.stderr.startswith("clawd: reload refused, the running configuration stays: ")
    assert 'unknown key "concurency"' in bad.stderr and len(bad.stderr.splitlines()) == 1
    assert d.proc.poll() is None
    gone = run_cli("systemd", "reload", "999999999", "--state-dir", str(state), env=clawd_env)
    assert (gone.returncode, gone.stderr) == (1, "clawd: no process 999999999 to reload\n")
