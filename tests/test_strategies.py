"""Behaviour of the built-in strategies, the example plugins and their loading."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import clawd.strategies.builtin
from clawd.config import Config, DistributorConfig
from clawd.errors import BadInput, ConfigError, PluginError
from clawd.handler import TaskContext
from clawd.plugins import ENTRY_POINT_GROUP, Plugins
from clawd.strategies import Fastest, LeastLoaded, RendezvousHash, RoundRobin
from clawd.strategy import TaskView, WorkerView

PLUGINS_DIR = Path(__file__).resolve().parent.parent / "plugins"
BUILTIN = {"round_robin", "hash", "least_loaded", "fastest"}
OTHER_ENTRY_POINTS = ["compute", "analyze", "transform", "exec"]


def worker(
    id: str, capacity: int = 4, in_flight: int = 0, ewma: dict[str, float] | None = None
) -> WorkerView:
    return WorkerView(id=id, capacity=capacity, in_flight=in_flight, ewma=dict(ewma or {}))


def task(id: str = "t1", type: str = "compute", **kw: Any) -> TaskView:
    return TaskView(id=id, type=type, lane="normal", **kw)


def workers(*ids: str) -> list[WorkerView]:
    return [worker(i) for i in ids]


def route(strategy: Any, keys: Sequence[str], pool: Sequence[WorkerView]) -> dict[str, str]:
    return {k: strategy.choose(task(k), pool).id for k in keys}


# -- round_robin ---------------------------------------------------------------------------


def test_round_robin_alternates_between_two_workers() -> None:
    rr = RoundRobin({})
    pool = workers("w1", "w2")
    assert [rr.choose(task(f"t{i}"), pool).id for i in range(6)] == ["w1", "w2"] * 3


def test_round_robin_cycles_over_three_whatever_the_candidate_order() -> None:
    rr = RoundRobin({})
    pool = workers("c", "a", "b")
    chosen = []
    for i in range(9):
        # the distributor may hand candidates in any order; the rotation is by id
        pool = pool[1:] + pool[:1]
        chosen.append(rr.choose(task(f"t{i}"), pool).id)
    assert chosen == ["a", "b", "c"] * 3


def test_round_robin_resumes_after_last_id_when_candidates_change() -> None:
    rr = RoundRobin({})
    assert rr.choose(task(), workers("a", "b", "c")).id == "a"
    # b has no free slot, so it is not a candidate: the turn passes to c, not back to a
    assert rr.choose(task(), workers("a", "c")).id == "c"
    assert rr.choose(task(), workers("a", "b", "c")).id == "a"
    # a worker joining mid-rotation gets its turn in id order
    assert rr.choose(task(), workers("a", "ab", "b", "c")).id == "ab"
    assert rr.choose(task(), workers("a", "ab", "b", "c")).id == "b"
    # the last chosen worker left: continue after where it was
    assert rr.choose(task(), workers("a", "ab", "c")).id == "c"


def test_round_robin_spreads_evenly() -> None:
    rr = RoundRobin({})
    pool = workers("w1", "w2", "w3", "w4")
    counts = Counter(rr.choose(task(f"t{i}"), pool).id for i in range(400))
    assert counts == {"w1": 100, "w2": 100, "w3": 100, "w4": 100}


# -- hash ----------------------------------------------------------------------------------

KEYS = [f"task-{i}" for i in range(10_000)]
FOUR = workers("w1", "w2", "w3", "w4")
FIVE = [*FOUR, worker("w5")]


def test_hash_same_key_same_worker() -> None:
    h = RendezvousHash({})
    pool = workers("w1", "w2", "w3", "w4")
    first = h.choose(task("job-42"), pool).id
    assert {h.choose(task("job-42"), pool).id for _ in range(1000)} == {first}
    # a fresh instance (another distributor, or after a restart) agrees
    assert RendezvousHash({}).choose(task("job-42"), list(reversed(pool))).id == first


def test_hash_is_stable_across_processes() -> None:
    # Python's hash() is salted per process; two distributors must still agree
    code = (
        "from clawd.strategies import RendezvousHash\n"
        "from clawd.strategy import TaskView, WorkerView\n"
        "pool = [WorkerView(id=f'w{i}', capacity=1) for i in range(1, 5)]\n"
        "h = RendezvousHash({})\n"
        "print(','.join(h.choose(TaskView(f'k{i}', 't', 'normal'), pool).id "
        "for i in range(50)))\n"
    )
    here = route(RendezvousHash({}), [f"k{i}" for i in range(50)], FOUR)
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out.split(",") == [here[f"k{i}"] for i in range(50)]


def test_hash_spreads_keys_evenly() -> None:
    counts = Counter(route(RendezvousHash({}), KEYS, FOUR).values())
    assert set(counts) == {"w1", "w2", "w3", "w4"}
    assert all(2200 <= n <= 2800 for n in counts.values()), counts


def test_hash_worker_joining_moves_about_one_fifth_of_keys_all_to_it() -> None:
    h = RendezvousHash({})
    before = route(h, KEYS, FOUR)
    after = route(h, KEYS, FIVE)
    moved = [k for k in KEYS if before[k] != after[k]]
    assert 0.15 <= len(moved) / len(KEYS) <= 0.25
    assert {after[k] for k in moved} == {"w5"}


def test_hash_worker_leaving_moves_only_its_keys() -> None:
    h = RendezvousHash({})
    before = route(h, KEYS, FIVE)
    after = route(h, KEYS, [w for w in FIVE if w.id != "w3"])
    moved = {k for k in KEYS if before[k] != after[k]}
    assert moved == {k for k in KEYS if before[k] == "w3"}
    assert moved  # w3 owned some keys, so the assertion above compared something
    # its keys are shared out among the rest, not dumped on one worker
    assert len(Counter(after[k] for k in moved)) == 4


def test_hash_meta_key_pins_tasks_together() -> None:
    h = RendezvousHash({})
    pool = workers("w1", "w2", "w3", "w4", "w5")
    homes = {h.choose(task(f"t{i}", meta={"key": "customer-7"}), pool).id for i in range(200)}
    assert len(homes) == 1
    # the pin is the key: ids alone would have spread these tasks out
    assert len({h.choose(task(f"t{i}"), pool).id for i in range(200)}) == 5
    # a pinned key routes like a task whose id is that key
    assert homes == {h.choose(task("customer-7"), pool).id}


def test_hash_meta_key_option_names_the_field() -> None:
    h = RendezvousHash({"meta_key": "tenant"})
    pool = workers("w1", "w2", "w3", "w4", "w5")
    homes = {h.choose(task(f"t{i}", meta={"tenant": "acme"}), pool).id for i in range(100)}
    assert len(homes) == 1
    assert h.key(task("t1", meta={"key": "ignored"})) == "t1"


def test_hash_falls_back_to_next_heaviest_when_home_is_not_a_candidate() -> None:
    h = RendezvousHash({})
    home = h.choose(task("k"), FOUR).id
    others = [w for w in FOUR if w.id != home]
    second = h.choose(task("k"), others).id
    assert second != home
    # and the fallback is itself stable
    assert h.choose(task("k"), list(reversed(others))).id == second


# -- least_loaded --------------------------------------------------------------------------


def test_least_loaded_prefers_the_idle_worker() -> None:
    pool = [worker("a", 4, 3), worker("b", 4, 0), worker("c", 4, 1)]
    assert LeastLoaded({}).choose(task(), pool).id == "b"


def test_least_loaded_is_relative_to_capacity() -> None:
    # 2 of 8 busy (25%) has more headroom than 1 of 2 (50%)
    pool = [worker("small", 2, 1), worker("big", 8, 2)]
    assert LeastLoaded({}).choose(task(), pool).id == "big"


def test_least_loaded_ties_go_to_most_free_slots_then_id() -> None:
    ll = LeastLoaded({})
    assert ll.choose(task(), [worker("a", 2, 1), worker("b", 8, 4)]).id == "b"
    assert ll.choose(task(), [worker("b", 4, 0), worker("a", 4, 0)]).id == "a"


def test_least_loaded_with_cost_hint_still_picks_least_loaded() -> None:
    pool = [worker("a", 4, 2), worker("b", 4, 1)]
    assert LeastLoaded({}).choose(task(cost=100.0), pool).id == "b"


# -- fastest -------------------------------------------------------------------------------


def test_fastest_explores_unmeasured_workers_first() -> None:
    f = Fastest({})
    pool = [
        worker("fast", ewma={"compute": 0.1}),
        worker("new", in_flight=2),
        worker("other-type", ewma={"analyze": 0.01}),
    ]
    # "other-type" has no time for compute, so it is unmeasured too, and less loaded
    assert f.choose(task(type="compute"), pool).id == "other-type"
    assert f.choose(task(type="compute"), pool[:2]).id == "new"


def test_fastest_measures_every_worker_then_prefers_the_lower_ewma() -> None:
    f = Fastest({})
    pool = workers("a", "b", "c")
    times = {"a": 0.5, "b": 0.1, "c": 0.3}
    tried = []
    for i in range(3):
        w = f.choose(task(f"t{i}"), pool)
        tried.append(w.id)
        w.ewma["compute"] = times[w.id]  # the distributor records the observed time
    assert sorted(tried) == ["a", "b", "c"]
    assert f.choose(task("t3"), pool).id == "b"


def test_fastest_weighs_load_for_light_tasks() -> None:
    f = Fastest({})
    # 1.0 * (1 + 3/4) = 1.75 > 1.5 * (1 + 0) = 1.5
    pool = [worker("fast", 4, 3, {"compute": 1.0}), worker("slow", 4, 0, {"compute": 1.5})]
    assert f.choose(task(), pool).id == "slow"
    assert f.choose(task(cost=1.0), pool).id == "slow"


def test_fastest_heavy_task_goes_to_the_fastest_strictly() -> None:
    pool = [worker("fast", 4, 3, {"compute": 1.0}), worker("slow", 4, 0, {"compute": 1.5})]
    assert Fastest({}).choose(task(cost=10.0), pool).id == "fast"
    assert Fastest({"heavy_cost": 50}).choose(task(cost=10.0), pool).id == "slow"
    assert Fastest({"heavy_cost": 0.5}).choose(task(cost=1.0), pool).id == "fast"


def test_fastest_ties_go_to_the_least_loaded() -> None:
    pool = [worker("a", 4, 2, {"compute": 1.0}), worker("b", 4, 1, {"compute": 1.0})]
    assert Fastest({}).choose(task(cost=99.0), pool).id == "b"
    pool = [worker("a", 4, 0, {"compute": 2.0}), worker("b", 4, 0, {"compute": 2.0})]
    assert Fastest({}).choose(task(), pool).id == "a"


# -- every strategy ------------------------------------------------------------------------

FACTORIES: list[Callable[[dict[str, Any]], Any]] = [
    RoundRobin,
    RendezvousHash,
    LeastLoaded,
    Fastest,
]

candidate_lists = st.lists(
    st.builds(
        worker,
        id=st.text("abcdef123", min_size=1, max_size=4),
        capacity=st.integers(1, 8),
        in_flight=st.integers(0, 8),
        ewma=st.dictionaries(st.sampled_from(["compute", "analyze"]), st.floats(0, 100)),
    ),
    min_size=1,
    max_size=8,
    unique_by=lambda w: w.id,
)


@given(
    pools=st.lists(candidate_lists, min_size=1, max_size=5),
    cost=st.none() | st.floats(0, 100),
    key=st.none() | st.text(max_size=8),
)
def test_every_strategy_chooses_one_of_the_candidates(
    pools: list[list[WorkerView]], cost: float | None, key: str | None
) -> None:
    meta = {} if key is None else {"key": key}
    for factory in FACTORIES:
        strategy = factory({})
        for i, pool in enumerate(pools):
            chosen = strategy.choose(task(f"t{i}", cost=cost, meta=meta), pool)
            assert any(chosen is w for w in pool)


@pytest.mark.parametrize(
    ("factory", "options", "message"),
    [
        (Fastest, {"heavy_cots": 3}, 'did you mean "heavy_cost"?'),
        (RendezvousHash, {"metakey": "x"}, 'did you mean "meta_key"?'),
        (RoundRobin, {"weight": 2}, "takes no options"),
        (LeastLoaded, {"x": 1}, "takes no options"),
        (Fastest, {"heavy_cost": "ten"}, "needs a number >= 0"),
        (Fastest, {"heavy_cost": True}, "needs a number >= 0"),
        (RendezvousHash, {"meta_key": ""}, "needs a non-empty string"),
    ],
)
def test_bad_options_are_rejected_with_a_fix(
    factory: Callable[[dict[str, Any]], Any], options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        factory(options)
    assert "[distributor] strategy_options" in str(err.value)
    assert message in str(err.value)


# -- loading through the plugin manager ----------------------------------------------------


@pytest.fixture
def dropin_dir(tmp_path: Path) -> Path:
    """The example plugins in a private directory, as an operator would install them."""
    d = tmp_path / "plugins"
    shutil.copytree(PLUGINS_DIR, d)
    d.chmod(0o755)
    return d


def test_builtin_strategies_entry_point_names_the_builtin_module() -> None:
    (ep,) = [e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == "strategies"]
    assert ep.load() is clawd.strategies.builtin


def test_builtin_strategies_register_through_the_hook() -> None:
    p = Plugins(Config())
    p.register_object(clawd.strategies.builtin, "strategies")
    p.collect()
    assert set(p.strategies) == BUILTIN
    assert {s.plugin for s in p.strategies.values()} == {"strategies"}
    assert all(s.description for s in p.strategies.values())
    assert isinstance(p.make_strategy("hash", {}).inner, RendezvousHash)


def test_strategy_options_from_config_reach_the_strategy() -> None:
    config = Config(distributor=DistributorConfig(strategy_options={"heavy_cost": 3}))
    p = Plugins(config)
    p.register_object(clawd.strategies.builtin, "strategies")
    p.collect()
    strategy = p.make_strategy("fastest", config.distributor.strategy_options)
    assert strategy.heavy_cost == 3.0


def test_dropin_examples_load_and_register(dropin_dir: Path) -> None:
    p = Plugins(Config())
    p.register_object(clawd.strategies.builtin, "strategies")
    p.load_dir(dropin_dir)
    p.collect()
    assert set(p.strategies) == BUILTIN | {"pinned"}
    assert set(p.handlers) == {"reverse"}
    assert p.info["reverse"].source == str(dropin_dir / "reverse.py")
    assert p.info["audit"].hooks == ["clawd_after_task"]


def test_load_with_entry_points_and_dropin_dir(dropin_dir: Path) -> None:
    # the full start-up path, including check_pending(), with only this package's
    # entry point enabled so the test does not depend on the handler plugins
    p = Plugins(Config())
    p.load(dirs=[str(dropin_dir)], disabled=OTHER_ENTRY_POINTS)
    assert set(p.strategies) == BUILTIN | {"pinned"}
    assert set(p.handlers) == {"reverse"}
    assert p.info["strategies"].source == "entry point clawd.strategies.builtin"


def test_builtin_strategies_can_be_disabled(dropin_dir: Path) -> None:
    p = Plugins(Config())
    p.load(dirs=[str(dropin_dir)], disabled=[*OTHER_ENTRY_POINTS, "strategies"])
    assert set(p.strategies) == {"pinned"}


def test_dropin_with_the_builtin_name_replaces_it(tmp_path: Path) -> None:
    d = tmp_path / "override"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    (d / "strategies.py").write_text(
        "from clawd import hookimpl\n"
        "class First:\n"
        "    def __init__(self, options): pass\n"
        "    def choose(self, task, candidates): return candidates[0]\n"
        "@hookimpl\n"
        "def clawd_register_strategies(register, config):\n"
        "    register('round_robin', First, description='mine')\n"
    )
    p = Plugins(Config())
    p.load(dirs=[str(d)], disabled=OTHER_ENTRY_POINTS)
    assert set(p.strategies) == {"round_robin"}
    assert p.strategies["round_robin"].description == "mine"


def test_world_writable_dropin_dir_is_refused(dropin_dir: Path) -> None:
    dropin_dir.chmod(0o777)
    p = Plugins(Config())
    with pytest.raises(PluginError, match="writable"):
        p.load_dir(dropin_dir)
    assert "reverse" not in p.info


# -- the example plugins at work -----------------------------------------------------------


@pytest.fixture
def examples(dropin_dir: Path) -> Plugins:
    p = Plugins(Config())
    p.load_dir(dropin_dir)
    p.collect()
    return p


def test_reverse_handler_reverses_and_reports_progress(examples: Plugins) -> None:
    reports: list[tuple[float, str | None]] = []
    ctx = TaskContext(
        id="t1", type="reverse", input="hello", report=lambda f, m: reports.append((f, m))
    )
    assert examples.handlers["reverse"].func(ctx) == "olleh"
    assert reports == [(0.5, "halfway")]


def test_reverse_handler_rejects_non_strings(examples: Plugins) -> None:
    with pytest.raises(BadInput, match="string"):
        examples.handlers["reverse"].func(TaskContext(id="t1", type="reverse", input=[1, 2]))


def test_pinned_strategy_honours_meta_worker_else_first_id(examples: Plugins) -> None:
    pinned = examples.make_strategy("pinned", {})
    pool = workers("w3", "w1", "w2")
    assert pinned.choose(task(meta={"worker": "w2"}), pool).id == "w2"
    assert pinned.choose(task(meta={"worker": "gone"}), pool).id == "w1"
    assert pinned.choose(task(), pool).id == "w1"
    with pytest.raises(ConfigError, match="takes no options"):
        examples.make_strategy("pinned", {"worker": "w1"})


def test_audit_appends_one_json_line_per_task(
    examples: Plugins, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("CLAWD_AUDIT_FILE", str(log))
    for i, status in enumerate(["ok", "error"]):
        ctx = TaskContext(id=f"t{i}", type="reverse", input="x", attempt=i + 1)
        examples.notify("clawd_after_task", task=ctx, outcome={"status": status, "duration_ms": 3})
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["id"], r["status"], r["attempt"]) for r in lines] == [
        ("t0", "ok", 1),
        ("t1", "error", 2),
    ]
    assert lines[0]["type"] == "reverse" and lines[0]["duration_ms"] == 3


def test_audit_is_a_noop_without_the_env_var(
    examples: Plugins, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLAWD_AUDIT_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    ctx = TaskContext(id="t1", type="reverse", input="x")
    examples.notify("clawd_after_task", task=ctx, outcome={"status": "ok"})
    assert list(tmp_path.iterdir()) == [tmp_path / "plugins"]
