"""The benchmark harness still runs: `python -m bench --quick --only raw,clawd`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

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
    assert "celery" not in proc.stdout.lower()
