"""Autoscaling: the signals formula, worker concurrency, and the local scaler for real."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clawd.config import Config, ScalerConfig, WorkerConfig, load
from clawd.plugins import Plugins
from clawd.scalers import local
from clawd.scalers.local import LocalScaler
from clawd.scaling import ConcurrencyScaler, signals
from tests.conftest import Broker, pub, sub, wait_until, write_config

# -- signals ---------------------------------------------------------------------------


def snapshot(
    depth: dict[str, int] | None = None,
    workers: list[tuple[int, int]] | None = None,
    ok_rate: float = 0.0,
    **extra: Any,
) -> dict[str, Any]:
    """A clawd/metrics snapshot: lane depths and (capacity, in_flight) of online workers."""
    return {
        "lanes": {
            name: {"weight": 1, "depth": n, "oldest_age": 3.0 * n, "spilled": 0, "served": 0}
            for name, n in (depth or {}).items()
        },
        "workers": {
            f"w{i}": {"online": True, "capacity": c, "in_flight": f, "utilisation": f / c}
            for i, (c, f) in enumerate(workers or [])
        },
        "rates": {"ok": ok_rate},
        "in_flight": sum(f for _, f in workers or []),
        "delayed": 0,
        **extra,
    }


def sig(snap: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return signals(snap, **{"target_utilisation": 0.8, "max_wait": 30.0, **kw})


def test_a_backlog_asks_for_more_workers_from_the_observed_task_time() -> None:
    # one saturated worker finishing 2 tasks/s: S = 4 / 2 = 2 s; 20 queued over 30 s
    # need 20 * 2 / 30 busy slots more: ceil((4 + 1.33) / 0.8) = 7 slots = 2 workers
    s = sig(snapshot({"high": 5, "normal": 15}, [(4, 4)], ok_rate=2.0))
    assert s["backlog"] == 20
    assert s["lanes"]["normal"] == {"depth": 15, "oldest_age": 45.0}
    assert s["oldest_age"] == 45.0
    assert (s["in_flight"], s["capacity"], s["utilisation"]) == (4, 4, 1.0)
    assert s["service_time"] == 2.0
    assert s["recommended_capacity"] == 7
    assert s["recommended_workers"] == 2
    assert "20 queued" in s["reason"]


def test_the_backlog_needs_more_when_max_wait_is_shorter() -> None:
    snap = snapshot({"normal": 20}, [(4, 4)], ok_rate=2.0)
    assert sig(snap, max_wait=5.0)["recommended_workers"] > sig(snap)["recommended_workers"]


def test_unknown_or_long_task_time_gives_each_queued_task_a_slot() -> None:
    # nothing finished yet: S unknown; no worker online: a new one has worker_capacity slots
    s = sig(snapshot({"normal": 10}), worker_capacity=4)
    assert s["service_time"] is None
    assert (s["recommended_capacity"], s["recommended_workers"]) == (13, 4)
    assert "no worker online" in s["reason"]
    # tasks slower than max_wait: clearing within it is impossible, so one slot each
    slow = sig(snapshot({"normal": 4}, [(4, 4)], ok_rate=0.01))
    assert slow["recommended_capacity"] == 10  # ceil((4 + 4) / 0.8)


def test_steady_load_without_backlog_keeps_utilisation_near_target() -> None:
    s = sig(snapshot({"normal": 0}, [(4, 4), (4, 0)], ok_rate=4.0))
    assert s["utilisation"] == 0.5
    assert (s["recommended_capacity"], s["recommended_workers"]) == (5, 2)
    fewer = sig(snapshot({"normal": 0}, [(4, 2), (4, 0)], ok_rate=4.0))
    assert (fewer["recommended_capacity"], fewer["recommended_workers"]) == (3, 1)


def test_idle_asks_for_no_workers() -> None:
    s = sig(snapshot({"high": 0, "normal": 0}, [(4, 0), (4, 0), (8, 0)]))
    assert (s["recommended_capacity"], s["recommended_workers"]) == (0, 0)
    assert s["workers_online"] == 3
    assert s["reason"].startswith("idle")


def test_never_negative_and_garbage_tolerant() -> None:
    snap = snapshot({"normal": -5}, [(4, -3)], ok_rate=-2.0)
    snap["lanes"]["odd"] = "not a lane"
    snap["workers"]["gone"] = {"online": False, "capacity": 100, "in_flight": 100}
    snap["rates"]["failed"] = float("nan")
    s = sig(snap)
    assert s["backlog"] == 0 and s["in_flight"] == 0
    assert s["recommended_workers"] == 0 and s["recommended_capacity"] == 0
    assert s["online_workers"] == ["w0"]  # the offline one counts for nothing
    empty = sig({})
    assert empty["recommended_workers"] == 0 and empty["capacity"] == 0


@pytest.mark.parametrize("kw", [{"target_utilisation": 0}, {"target_utilisation": 1.5}])
def test_bad_parameters_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="target_utilisation"):
        sig(snapshot(), **kw)
    with pytest.raises(ValueError, match="max_wait"):
        sig(snapshot(), max_wait=0)


# -- ConcurrencyScaler -----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_concurrency_doubles_under_sustained_pressure_up_to_max() -> None:
    clock = Clock()
    cs = ConcurrencyScaler(2, 10, up_after=5.0, clock=clock)
    steps = []
    for t in range(0, 21):
        clock.now = float(t)
        # every slot busy and more queued than free slots
        steps.append(cs.update(in_flight=cs.concurrency, backlog=50))
    assert steps[4] == 2 and steps[5] == 4  # held for up_after seconds, then x2
    # a change restarts the timer: the pressure must hold again at the new concurrency
    assert steps[10] == 4 and steps[11] == 8
    assert steps[16] == 8 and steps[17] == 10 and steps[20] == 10  # capped at max


def test_pressure_that_lapses_restarts_the_timer() -> None:
    clock = Clock()
    cs = ConcurrencyScaler(1, 8, initial=4, up_after=5.0, clock=clock)
    for t, in_flight, backlog in [(0, 4, 9), (3, 4, 0), (6, 4, 9), (10, 4, 9)]:
        clock.now = t
        assert cs.update(in_flight=in_flight, backlog=backlog) == 4
    clock.now = 11
    assert cs.update(in_flight=4, backlog=9) == 8
    # a backlog the free slots can take is no pressure; nor is low utilisation
    cs2 = ConcurrencyScaler(1, 8, initial=4, up_after=0.0, clock=clock)
    assert cs2.update(in_flight=2, backlog=2) == 4
    assert cs2.update(in_flight=1, backlog=50) == 4


def test_concurrency_steps_down_by_one_when_idle_down_to_min() -> None:
    clock = Clock()
    cs = ConcurrencyScaler(2, 8, initial=4, down_after=30.0, clock=clock)
    seen = []
    for t in range(0, 121, 5):
        clock.now = float(t)
        seen.append(cs.update(in_flight=0, backlog=0))
    assert seen[5] == 4 and seen[6] == 3  # 30 s idle: -1
    # 30 s more observed at the new concurrency: -1 again, and never below min
    assert seen[12] == 3 and seen[13] == 2 and seen[-1] == 2


def test_a_backlog_or_busy_slots_keep_concurrency_up() -> None:
    clock = Clock()
    cs = ConcurrencyScaler(1, 8, initial=4, down_after=1.0, clock=clock)
    for t in range(10):
        clock.now = float(t)
        assert cs.update(in_flight=0, backlog=1) == 4  # queued work is not idle
        assert cs.update(in_flight=2, backlog=0) == 4  # 50 % busy is not idle


def test_concurrency_limits() -> None:
    assert ConcurrencyScaler(2, 6, initial=9).concurrency == 6
    assert ConcurrencyScaler(2, 6).concurrency == 2
    assert not ConcurrencyScaler(4, 4).enabled
    with pytest.raises(ValueError, match="minimum <= maximum"):
        ConcurrencyScaler(5, 4)
    with pytest.raises(ValueError):
        ConcurrencyScaler(0, 4)


# -- the local scaler with stand-in workers ---------------------------------------------

#: a stand-in worker: sleeps until SIGTERM; ignores the --worker-id it is given
SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def scaler_config(**kw: Any) -> Config:
    opts: dict[str, Any] = {"enabled": True, "min_workers": 0, "max_workers": 3, "cooldown": 10.0}
    opts.update(kw)
    return Config(scaler=ScalerConfig(**opts), worker=WorkerConfig(drain_timeout=5.0))


@pytest.fixture
def standin() -> Iterator[tuple[LocalScaler, Clock]]:
    clock = Clock()
    s = LocalScaler(clock=clock, host="test")
    yield s, clock
    s.shutdown(timeout=5)


def want(n: int, online: list[str] | None = None) -> dict[str, Any]:
    return {"recommended_workers": n, "online_workers": online or [], "reason": "test"}


def test_local_scaler_limits_cooldown_and_ids(standin: tuple[LocalScaler, Clock]) -> None:
    s, clock = standin
    cfg = scaler_config(command=SLEEPER, min_workers=1)
    s.scale(want(0), cfg)
    assert len(s) == 1  # min_workers even when nothing is needed
    clock.now = 5.0
    s.scale(want(9), cfg)
    assert len(s) == 1  # within the cooldown: no change
    clock.now = 11.0
    s.scale(want(9), cfg)
    assert len(s) == 3  # capped at max_workers
    assert s.own_ids == {"test-scaled-1", "test-scaled-2", "test-scaled-3"}
    argv = s.running[2].args
    assert argv[-2:] == ["--worker-id", "test-scaled-2"]
    clock.now = 22.0
    s.scale(want(0), cfg)
    assert len(s) == 1 and list(s.running) == [1]  # the newest go first, down to min
    stopped = [p for p, _ in s.stopping.values()]
    for p in stopped:
        assert p.wait(10) == -signal.SIGTERM
    clock.now = 33.0
    s.scale(want(2), cfg)
    assert sorted(s.running) == [1, 2]  # freed numbers are reused
    assert not s.stopping  # exited workers were reaped


def test_local_scaler_counts_only_its_own_workers(standin: tuple[LocalScaler, Clock]) -> None:
    s, clock = standin
    cfg = scaler_config(command=SLEEPER, cooldown=0.0)
    # two workers it did not start already cover two of the three needed
    s.scale(want(3, ["static-1", "static-2"]), cfg)
    assert len(s) == 1
    # its own online worker is not "another" worker
    s.scale(want(3, ["static-1", "static-2", "test-scaled-1"]), cfg)
    assert len(s) == 1
    # others can never be stopped by it: it can only go down to zero of its own
    s.scale(want(0, ["static-1", "static-2", "test-scaled-1"]), cfg)
    assert len(s) == 0


def test_a_worker_that_dies_is_replaced_and_disabling_stops_all(
    standin: tuple[LocalScaler, Clock],
) -> None:
    s, clock = standin
    cfg = scaler_config(command=SLEEPER, cooldown=0.0)
    s.scale(want(2), cfg)
    s.running[1].kill()
    s.running[1].wait(5)
    s.scale(want(2), cfg)
    assert len(s) == 2 and s.running[1].poll() is None
    procs = list(s.running.values())
    s.scale(want(2), scaler_config(command=SLEEPER, enabled=False))
    assert len(s) == 0
    assert all(p.wait(10) == -signal.SIGTERM for p in procs)


def test_shutdown_kills_the_group_of_a_worker_that_ignores_sigterm(
    standin: tuple[LocalScaler, Clock], tmp_path: Path
) -> None:
    s, _ = standin
    ready = tmp_path / "ready"
    stubborn = [
        sys.executable,
        "-c",
        "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "pathlib.Path(sys.argv[1]).touch(); time.sleep(120)",
        str(ready),
    ]
    s.scale(want(1), scaler_config(command=stubborn, cooldown=0.0))
    proc = s.running[1]
    wait_until(ready.exists, what="the stand-in to ignore SIGTERM")
    s.shutdown(timeout=1.0)
    assert proc.poll() == -signal.SIGKILL


def test_the_default_command_is_this_clawd_with_its_config(tmp_path: Path) -> None:
    s = LocalScaler(host="h")
    cfg = Config(sources=[str(tmp_path / "clawd.toml")])
    assert s.command(cfg, "h-scaled-1") == [
        sys.executable,
        *("-m", "clawd", "-c", str(tmp_path / "clawd.toml")),
        *("run", "--role", "worker", "--worker-id", "h-scaled-1"),
    ]
    assert "-c" not in s.command(Config(), "h-scaled-1")


def test_bad_signals_are_an_error_the_host_can_log() -> None:
    with pytest.raises(ValueError, match="recommended_workers"):
        LocalScaler(host="h").scale({"reason": "x"}, scaler_config(command=SLEEPER))


def test_the_systemd_example_plugin_in_the_docs_is_a_valid_plugin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "scaling.md").read_text()
    code = doc.split("## systemd template units", 1)[1].split("```python\n", 1)[1]
    code = code.split("```", 1)[0]
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        states = "active\n" + "inactive\n" * 7  # clawd-worker@2 runs
        return subprocess.CompletedProcess(argv, 0, stdout=states)

    module: dict[str, Any] = {}
    exec(compile(code, "docs/scaling.md", "exec"), module)
    monkeypatch.setattr(module["subprocess"], "run", fake_run)
    plugins = Plugins(Config())
    plugins.register_object(type("Doc", (), module), "systemd_scaler", "docs")
    plugins.notify("clawd_scale", signals=want(4), config=Config())
    started = [c[-1] for c in calls if c[1] == "start"]
    assert started == ["clawd-worker@3", "clawd-worker@4"]  # @2 runs; 4 = clawd.service + 3


# -- the local scaler end to end: real clawd workers, a real distributor, mosquitto -----


def retained(broker: Broker, topic: str) -> dict[str, dict[str, Any]]:
    """The retained messages under ``topic`` (a filter), by topic."""
    out = subprocess.run(
        ["mosquitto_sub", *broker.args, "-t", topic, "-v", "-W", "1", "--retained-only"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    docs = {}
    for line in out.splitlines():
        t, _, payload = line.partition(" ")
        if payload:
            docs[t] = json.loads(payload)
    return docs


def states(broker: Broker, ids: list[str]) -> dict[str, str]:
    docs = retained(broker, "clawd/workers/+")
    return {i: docs.get(f"clawd/workers/{i}", {}).get("state", "") for i in ids}


@pytest.fixture
def e2e_scaler(clawd_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalScaler]:
    s = LocalScaler(env=clawd_env, host="e2e", clock=Clock())
    s.clock.now = 1000.0  # type: ignore[attr-defined]
    monkeypatch.setattr(local, "scaler", s)
    yield s
    s.shutdown(timeout=10)


def test_local_scaler_starts_and_stops_real_workers(
    tmp_path: Path,
    broker: Broker,
    start_clawd: Any,
    clawd_env: dict[str, str],
    e2e_scaler: LocalScaler,
) -> None:
    path = write_config(
        tmp_path / "clawd.toml",
        broker.url,
        tmp_path / "state",
        "[scaler]\nenabled = true\nmin_workers = 0\nmax_workers = 2\ncooldown = 0.5\n\n"
        "[worker]\ndrain_timeout = 5.0\n",
    )
    start_clawd("-c", str(path), "run", "--role", "distributor")
    cfg = load(str(path), env=clawd_env)
    # through the plugin host, as the distributor calls it
    plugins = Plugins(cfg)
    plugins.register_object(local, "local_scaler", "test")
    ids = ["e2e-scaled-1", "e2e-scaled-2"]

    plugins.notify("clawd_scale", signals=want(5), config=cfg)  # capped at max_workers
    procs = list(e2e_scaler.running.values())
    assert len(procs) == 2
    wait_until(
        lambda: set(states(broker, ids).values()) == {"online"}, 30, "two scaled workers online"
    )

    # they are real workers: the distributor dispatches to them
    results = sub(broker, "clawd/results/+", 1)
    pub(broker, "clawd/tasks/normal/compute", "2+2")
    out, _ = results.communicate(timeout=30)
    result = json.loads(out)
    assert result["status"] == "ok" and result["result"] == 4
    assert result["worker"] in ids

    # the retained metrics of the real distributor see them, and signals() reads it
    def both_in_metrics() -> dict[str, Any] | None:
        snap = retained(broker, "clawd/metrics").get("clawd/metrics")
        if snap is None:
            return None
        s = signals(snap, target_utilisation=0.8, max_wait=30.0)
        return s if set(ids) <= set(s["online_workers"]) else None

    s = wait_until(both_in_metrics, 30, "metrics show both workers")
    assert s["capacity"] == 8 and s["backlog"] == 0

    e2e_scaler.clock.now += 1.0  # type: ignore[attr-defined]  # past the cooldown
    plugins.notify("clawd_scale", signals=want(0, ids), config=cfg)
    assert len(e2e_scaler) == 0
    for p in procs:
        assert p.wait(30) == 0  # SIGTERM drains and exits cleanly
    final = states(broker, ids)
    assert set(final.values()) == {"offline"}, final
