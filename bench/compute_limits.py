"""How fast ``compute`` refuses what it must not compute: ``python -m bench.compute_limits``.

The expressions are the test suite's (tests/test_compute.py: ``HUGE``, ``HOSTILE``,
``HEAVY``); the suite checks what each one ends in, this reports how long it takes (best
of ``--runs``). A refusal should cost about as little as parsing: work that grows with
the input, or never ends, would show here as a slow row.
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

from clawd.errors import BadInput
from clawd.handlers.compute import evaluate
from tests.test_compute import HEAVY, HOSTILE, HUGE


def best(expr: str, runs: int) -> tuple[float, str]:
    """(best time in seconds, what it ended in)."""
    times, outcome = [], ""
    for _ in range(runs):
        start = time.perf_counter()
        try:
            outcome = type(evaluate(expr)).__name__
        except BadInput as exc:
            outcome = exc.message
        times.append(time.perf_counter() - start)
    return min(times), outcome


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    rows = [
        *((f"huge: {e}", e) for e in HUGE),
        *((f"hostile: {name}", expr) for name, (expr, _) in HOSTILE.items()),
        *((f"heavy {i}: {e[:30]}...", e) for i, e in enumerate(HEAVY)),
    ]
    table = Table(
        "expression", "ms (best)", "ends in", title=f"compute limits, best of {args.runs}"
    )
    for name, expr in rows:
        seconds, outcome = best(expr, args.runs)
        table.add_row(name, f"{seconds * 1000:.2f}", outcome[:70])
    Console().print(table)


if __name__ == "__main__":
    main()
