"""``python -m clawd.sim --seed N [--tasks T]``: replay one simulated run, or explore a few."""

from __future__ import annotations

import argparse
import sys

from clawd.sim.internals import PLANTS
from clawd.sim.run import Report, simulate


def describe(r: Report) -> str:
    faults = ", ".join(f"{k} {v}" for k, v in sorted(r.faults.items())) or "none"
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(r.outcomes.items()))
    return (
        f"seed {r.seed}: {r.tasks} tasks, {r.acked} acknowledged, results {outcomes}; "
        f"{r.executions} executions; faults: {faults}; {r.sim_seconds} s simulated "
        f"in {r.wall_seconds} s; digest {r.digest}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m clawd.sim", description=__doc__)
    p.add_argument("--seed", type=int, required=True, help="the seed to run (the first one)")
    p.add_argument("--seeds", type=int, default=1, help="how many seeds from --seed on")
    p.add_argument("--tasks", type=int, default=200)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--calm", action="store_true", help="no faults")
    p.add_argument(
        "--ha", action="store_true", help="two distributors on one journal, the leader stalled"
    )
    p.add_argument("--plant", choices=PLANTS, help="plant a known bug, to see it caught")
    p.add_argument(
        "--trace", action="append", default=[], metavar="ID", help="print the story of a task"
    )
    args = p.parse_args(argv)
    failed = 0
    for seed in range(args.seed, args.seed + args.seeds):
        r = simulate(
            seed,
            args.tasks,
            workers=args.workers,
            calm=args.calm,
            plant=args.plant,
            trace=tuple(args.trace),
            ha=args.ha,
        )
        print(describe(r))
        if r.letters_unpublished:
            print(f"  dead letter never published for: {', '.join(r.letters_unpublished)}")
        if not r.ok:
            failed += 1
            for v in r.violations:
                print(f"  VIOLATION {v}")
            print(f"  replay: {r.command()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
