"""How fast routing conditions parse and evaluate, hostile ones included:
``python -m bench.route_limits``.

The conditions are the test suite's (tests/test_route_expr.py: ``ADVERSARIAL``); the
suite checks what each one ends in, this reports how long parsing and one evaluation
take (best of ``--runs``). A rule's condition runs for every task it is tried on at
dispatch, so even the worst allowed one must stay in the microseconds-to-a-millisecond
range; a refusal should cost no more than reading the text's length.
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

from clawd.routing.expr import ExprError, parse
from tests.test_route_expr import ADVERSARIAL, TASK


def best(text: str, runs: int) -> tuple[float, float | None, str]:
    """(best parse seconds, best evaluation seconds or None, what it ended in)."""
    parse_times, eval_times, outcome = [], [], ""
    for _ in range(runs):
        start = time.perf_counter()
        try:
            cond = parse(text)
        except ExprError as exc:
            parse_times.append(time.perf_counter() - start)
            outcome = str(exc)
            continue
        parse_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        outcome = str(cond(TASK))
        eval_times.append(time.perf_counter() - start)
    return min(parse_times), min(eval_times) if eval_times else None, outcome


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    table = Table(
        "condition", "parse ms", "eval ms", "ends in", title=f"route limits, best of {args.runs}"
    )
    for name, text in ADVERSARIAL.items():
        p, e, outcome = best(text, args.runs)
        table.add_row(name, f"{p * 1000:.3f}", "" if e is None else f"{e * 1000:.3f}", outcome[:60])
    Console().print(table)


if __name__ == "__main__":
    main()
