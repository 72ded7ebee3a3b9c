"""The benchmark harness still runs: `python -m bench --quick --only raw,clawd`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_quick_bench_reports_raw_and_clawd_rows(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--runs", "1", "--tasks", "1000",
         "--rtt", "100", "--only", "raw,clawd", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {}
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in line.strip("│ \n").split("│")]
        if len(cells) == 4 and cells[0] in ("raw paho 4-hop", "clawd (journal on)"):
            rows[cells[0]] = cells[1:]
    assert set(rows) == {"raw paho 4-hop", "clawd (journal on)"}, proc.stdout
    for name, cells in rows.items():
        numbers = [float(x.replace(",", "")) for c in cells for x in re.findall(r"[\d,.]+", c)]
        assert len(numbers) == 9 and all(n > 0 for n in numbers), (name, cells)
    doc = json.loads(out.read_text())
    assert set(doc["results"]) == {"raw", "clawd"}
    assert doc["results"]["clawd"]["throughput"][0] > 0
    for system in ("raw", "clawd"):  # the CPU per task table: every process, by role
        cpu = doc["results"][system]["cpu_us"]
        assert set(cpu) == {"producer", "broker", "distributor", "workers", "total"}
        assert cpu["total"][0] > 0
    assert "CPU µs per task, all processes" in proc.stdout
    assert "celery" not in proc.stdout.lower()


def test_quick_realistic_and_scaleout_rows_with_their_plot(tmp_path: Path) -> None:
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--runs", "1", "--tasks", "300",
         "--only", "realistic,scaleout", "--scale-n", "2", "--json", str(out),
         "--plot", str(png)],
        cwd=ROOT, capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "realistic path" in proc.stdout and "scale-out, uniform" in proc.stdout, proc.stdout
    doc = json.loads(out.read_text())["results"]
    for system in ("raw", "clawd"):
        row = doc["realistic"][system]
        assert len(row["throughput"]) == 1 and row["throughput"][0] > 0
        cpu = row["cpu_us"]
        assert set(cpu) == {"producer", "broker", "distributor", "workers", "total"}
        assert cpu["total"][0] == pytest.approx(
            sum(cpu[r][0] for r in ("producer", "broker", "distributor", "workers"))
        )
    scale = doc["scaleout"]["clawd"]["2"]
    assert set(scale) == {"uniform", "mixed"}
    for mix in scale.values():
        assert len(mix["efficiency"]) == 1 and 0 < mix["efficiency"][0] <= 1.05
        assert len(mix["distributor_cpu_us"]) == 1
        assert mix["total_cpu_us"][0] >= mix["distributor_cpu_us"][0]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_in_process_rig_runs_every_task_to_a_result(tmp_path: Path) -> None:
    from bench.inproc import PATHS, Rig

    for path in PATHS:
        rig = Rig(tmp_path / path, path, workers=2, concurrency=3)
        try:
            rig.run(120, window=25)
            assert rig.results == 120
            assert not rig.d.entries  # every task reached its end in the distributor
        finally:
            rig.close()


def test_plot_merges_saved_results(tmp_path: Path) -> None:
    from bench.plot import main

    real = {
        s: {"throughput": [1.0], "cpu_us": {r: [10.0] for r in ("producer", "broker",
            "distributor", "workers", "total")}}
        for s in ("raw", "clawd")
    }  # fmt: skip
    scale = {
        s: {"2": {"uniform": {"efficiency": [0.9]}}, "8": {"uniform": {"efficiency": [0.8]}}}
        for s in ("clawd", "celery")
    }
    peers = {"rq": {"throughput": [1.0], "cpu_us": {"total": [900.0]}}}
    (tmp_path / "a.json").write_text(json.dumps({"results": {"realistic": real, **peers}}))
    (tmp_path / "b.json").write_text(json.dumps({"scaleout": scale}))
    main([str(tmp_path / "out.png"), str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert (tmp_path / "out.png").read_bytes()[:4] == b"\x89PNG"


def test_peer_cpu_meter_counts_a_tree_and_its_reaped_children(monkeypatch) -> None:
    """bench/peers/cpu.py: a role's CPU is that of its whole process tree, reaped
    children included (RQ's work horses live one job each)."""
    sys.path.insert(0, str(ROOT / "bench" / "peers"))
    try:
        import cpu  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    code = (
        "import subprocess, sys; sys.stdin.readline(); "
        "subprocess.run([sys.executable, '-c', 'sum(range(2*10**7))']); "
        "print('done', flush=True); sys.stdin.read()"
    )
    root = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        monkeypatch.setenv("BENCH_CPU_PIDS", f"workers={root.pid};broker=")
        meter = cpu.Meter()
        assert meter.roots == {"workers": [root.pid], "broker": []}
        meter.start()
        assert root.pid in meter.trees["workers"]
        root.stdin.write("go\n")  # type: ignore[union-attr]
        root.stdin.flush()  # type: ignore[union-attr]
        assert root.stdout.readline().strip() == "done"  # type: ignore[union-attr]
        us = meter.stop(tasks=1)
        assert set(us) == {"workers", "broker", "producer", "total"}
        # the grandchild's sum, done and reaped inside the measured stretch
        assert us["workers"] > 50_000 and us["broker"] == 0
        assert us["total"] == pytest.approx(us["workers"] + us["broker"] + us["producer"])
    finally:
        root.stdin.close()  # type: ignore[union-attr]
        root.wait(30)


def test_micro_benchmarks_run() -> None:
    """bench/micro.py: the instruction-count micro-benchmarks still run (and leave
    clawd's paho speed-ups as the process had them)."""
    from click.testing import CliRunner

    from bench.micro import main
    from clawd.paho_compat import Compat
    from clawd.transport import PAHO

    runner = CliRunner()
    try:
        for args in (["journal", "60"], ["reasoncode", "10"], ["reasoncode", "10", "--plain"]):
            result = runner.invoke(main, args)
            assert result.exit_code == 0, (args, result.output, result.exception)
    finally:
        Compat(PAHO, True)
