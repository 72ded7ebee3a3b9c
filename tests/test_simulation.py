"""Deterministic simulation: hundreds of seeds of faults against the real distributor and
real workers (clawd.sim), a replay that is exact, and planted bugs that must be caught."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter

import pytest

from clawd.sim import simulate
from clawd.sim.__main__ import main
from clawd.sim.broker import matches
from clawd.sim.internals import PLANTS

#: seeds the suite runs, in batches (one test each), and tasks per seed
SEEDS, BATCH, TASKS = 240, 40, 150
#: a planted bug must be caught within this many seeds
CATCH_WITHIN = 30


@pytest.mark.parametrize("first", range(1, SEEDS + 1, BATCH))
def test_every_seed_keeps_every_invariant(first: int) -> None:
    faults: Counter[str] = Counter()
    failing, sim_seconds, began = [], 0.0, time.perf_counter()
    for seed in range(first, first + BATCH):
        r = simulate(seed, TASKS)
        faults.update(r.faults)
        sim_seconds += r.sim_seconds
        assert r.acked > 0 and r.executions > 0  # the run did something
        if not r.ok:
            failing.append(f"{r.command()}\n    " + "\n    ".join(r.violations[:5]))
    print(
        f"seeds {first}..{first + BATCH - 1}: {BATCH * TASKS} tasks, "
        f"{sum(faults.values())} faults ({dict(sorted(faults.items()))}), "
        f"{sim_seconds:.0f} s simulated in {time.perf_counter() - began:.1f} s"
    )
    assert not failing, "replay with:\n" + "\n".join(failing)


def test_two_distributors_on_one_journal_keep_every_invariant() -> None:
    """The leader stalled past its lock timeout (a standby takes over, the stalled one
    wakes and tries to write), stalled briefly, crashed: no task lost, duplicates within
    the exposure, and no epoch accepts writes of two distributors."""
    faults: Counter[str] = Counter()
    failing = []
    for seed in range(1, 16):
        r = simulate(seed, 100, ha=True)
        faults.update(r.faults)
        if not r.ok:
            failing.append(f"{r.command()}\n    " + "\n    ".join(r.violations[:5]))
    assert not failing, "replay with:\n" + "\n".join(failing)
    # the runs did what they are for: takeovers, and stalled leaders refused and stopped
    assert faults["leader_stall"] >= 15 and faults["deposed"] >= 10, faults


def test_the_seeds_do_inject_every_kind_of_fault() -> None:
    seen: Counter[str] = Counter()
    for seed in range(1, 21):
        seen.update(simulate(seed, 60).faults)
    missing = {
        "worker_crash",
        "worker_takeover",
        "worker_stall",
        "worker_partition",
        "worker_drain",
        "worker_retire",
        "client_drop",
        "broker_restart",
        "distributor_crash",
        "msg_dup",
        "msg_late",
        "msg_lost_qos0",
        "resubmit",
        "member_lost",
        "stale_will",
    } - set(seen)
    assert not missing


def test_the_seeds_do_every_operator_action() -> None:
    # rules changed mid-run, cancels racing completion, a long outage across a schedule
    # slot (clawd.sim.operator); rate limits, delays and the schedule are in every seed
    seen: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for seed in range(1, 21):
        r = simulate(seed, 60)
        seen.update(r.faults)
        outcomes.update(r.outcomes)
    assert {"rule_change", "cancel", "distributor_outage"} <= set(seen)
    assert outcomes["cancelled"] > 0


def test_a_seed_replays_exactly() -> None:
    a, b = simulate(11, 80), simulate(11, 80)
    assert a.digest == b.digest
    assert (a.faults, a.outcomes, a.executions, a.sim_seconds) == (
        b.faults,
        b.outcomes,
        b.executions,
        b.sim_seconds,
    )
    assert simulate(12, 80).digest != a.digest


def test_the_replay_command_gives_the_same_run_in_a_new_process() -> None:
    lines = []
    for hashseed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        out = subprocess.run(
            [sys.executable, "-m", "clawd.sim", "--seed", "5", "--tasks", "60"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
        lines.append(out.split("in ")[0] + out.split("digest ")[1])  # all but the wall time
    assert lines[0] == lines[1]
    assert "seed 5: 60 tasks" in lines[0]


def test_a_calm_run_injects_nothing_and_every_task_ends() -> None:
    r = simulate(3, 100, calm=True)
    assert r.ok, r.violations
    assert not r.faults
    # some of the 100 tasks are members of groups, submitted with their group
    assert r.acked == r.submitted < 100
    # each of the 100 ran, as a task or as a member; groups and thens have results too
    assert sum(r.outcomes.values()) > 100


@pytest.mark.parametrize("bug", PLANTS)
def test_a_planted_bug_is_caught(bug: str) -> None:
    began = time.perf_counter()
    for seed in range(1, CATCH_WITHIN + 1):
        r = simulate(seed, TASKS, plant=bug)
        if not r.ok:
            break
    else:
        pytest.fail(f"planted bug {bug!r} survived {CATCH_WITHIN} seeds")
    print(
        f"planted {bug}: caught by seed {seed} ({seed} seed(s), "
        f"{time.perf_counter() - began:.2f} s): {r.violations[0]}"
    )
    assert r.command().endswith(f"--plant {bug}")


def test_a_failing_seed_prints_the_command_that_replays_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--seed", "1", "--seeds", "3", "--tasks", "80", "--plant", "requeue"]) == 1
    out = capsys.readouterr().out
    assert "VIOLATION" in out
    assert "replay: python -m clawd.sim --seed " in out
    assert "--tasks 80 --plant requeue" in out


def test_topic_filters_match_as_mqtt_does() -> None:
    assert matches("clawd/tasks/#", "clawd/tasks/normal/compute")
    assert matches("clawd/tasks/#", "clawd/tasks")
    assert matches("clawd/workers/+", "clawd/workers/w1")
    assert not matches("clawd/workers/+", "clawd/workers/w1/x")
    assert not matches("clawd/_/done/+", "clawd/_/w/w1/tasks")
    assert matches("a/+/c", "a/b/c") and not matches("a/+/c", "a/b/d")
