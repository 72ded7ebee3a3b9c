"""Plugins by pluggy's rules: hook order and wrappers work, and plugin failures are fenced."""

from __future__ import annotations

import logging
from collections.abc import Generator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import clawd.strategies.builtin
from clawd import hookimpl
from clawd.config import Config
from clawd.errors import ConfigError, PluginError
from clawd.plugins import Plugins
from clawd.strategy import TaskView, WorkerView


def plugin(**hooks: Any) -> SimpleNamespace:
    return SimpleNamespace(**hooks)


def make(*named: tuple[str, Any]) -> Plugins:
    p = Plugins(Config())
    for name, obj in named:
        p.register_object(obj, name)
    p.collect()
    return p


# -- observers: order, wrappers, isolation ----------------------------------------------


def test_tryfirst_and_trylast_order_observers() -> None:
    calls: list[str] = []

    @hookimpl(trylast=True)
    def last(result: dict[str, Any]) -> None:
        calls.append("last")

    @hookimpl
    def plain(result: dict[str, Any]) -> None:
        calls.append("plain")

    @hookimpl(tryfirst=True)
    def first(result: dict[str, Any]) -> None:
        calls.append("first")

    # registered in the opposite order to the one the markers ask for
    p = make(
        ("a", plugin(clawd_task_finished=last)),
        ("b", plugin(clawd_task_finished=plain)),
        ("c", plugin(clawd_task_finished=first)),
    )
    p.notify("clawd_task_finished", result={"id": "t"})
    assert calls == ["first", "plain", "last"]


def test_new_style_wrapper_surrounds_the_other_observers() -> None:
    calls: list[str] = []

    @hookimpl(wrapper=True)
    def around(result: dict[str, Any]) -> Generator[None, list[Any], list[Any]]:
        calls.append(f"before {result['id']}")
        out = yield
        calls.append(f"after {len(out)}")
        return out

    @hookimpl
    def plain(result: dict[str, Any]) -> str:
        calls.append("plain")
        return "x"

    p = make(("w", plugin(clawd_task_finished=around)), ("p", plugin(clawd_task_finished=plain)))
    p.notify("clawd_task_finished", result={"id": "t"})
    assert calls == ["before t", "plain", "after 1"]


def test_old_style_hookwrapper_still_works() -> None:
    seen: list[Any] = []

    @hookimpl(hookwrapper=True)
    def around(key: str, old: str, new: str) -> Generator[None, Any, None]:
        outcome = yield
        seen.append((key, outcome.get_result()))

    @hookimpl
    def plain(key: str, old: str, new: str) -> str:
        return new

    p = make(
        ("w", plugin(clawd_on_breaker_change=around)),
        ("p", plugin(clawd_on_breaker_change=plain)),
    )
    p.notify("clawd_on_breaker_change", key="type/x", old="closed", new="open")
    assert seen == [("type/x", ["open"])]


def test_a_failing_observer_is_named_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    @hookimpl(tryfirst=True)
    def broken(result: dict[str, Any]) -> None:
        raise ValueError("disk full")

    @hookimpl
    def fine(result: dict[str, Any]) -> None:
        calls.append(result["id"])

    p = make(
        ("broken", plugin(clawd_task_finished=broken)), ("fine", plugin(clawd_task_finished=fine))
    )
    with caplog.at_level(logging.ERROR, "clawd.plugins"):
        for i in range(12):
            p.notify("clawd_task_finished", result={"id": f"t{i}"})
    assert calls == [f"t{i}" for i in range(12)]
    errors = [r.getMessage() for r in caplog.records]
    # the 1st and the 10th failure, not one line per task
    assert errors == [
        "plugin broken failed in clawd_task_finished: ValueError('disk full'); skipped",
        "plugin broken failed in clawd_task_finished: ValueError('disk full'); skipped "
        "(10 failures so far)",
    ]
    assert p.failures.counts[("broken", "clawd_task_finished")] == 12


@pytest.mark.parametrize("where", ["before", "after", "no-yield", "twice"])
def test_a_failing_wrapper_is_skipped_and_the_result_passes_through(
    where: str, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    @hookimpl(wrapper=True)
    def around(letter: dict[str, Any]) -> Generator[None, list[Any], list[Any]]:
        if where == "before":
            raise RuntimeError("early")
        if where == "no-yield":
            return []
        yield
        if where == "twice":
            yield
        raise RuntimeError("late")

    @hookimpl
    def plain(letter: dict[str, Any]) -> None:
        calls.append(letter["id"])

    p = make(("wrap", plugin(clawd_dead_letter=around)), ("p", plugin(clawd_dead_letter=plain)))
    with caplog.at_level(logging.ERROR, "clawd.plugins"):
        p.notify("clawd_dead_letter", letter={"id": "t1"})
    assert calls == ["t1"]
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("plugin wrap failed in clawd_dead_letter: ")


def test_a_worker_side_observer_failing_does_not_reach_the_caller() -> None:
    @hookimpl
    def before(task: Any, worker_id: str) -> None:
        raise KeyError(worker_id)

    p = make(("b", plugin(clawd_before_task=before)))
    p.notify("clawd_before_task", task=None, worker_id="w1")  # does not raise
    assert p.failures.counts == {("b", "clawd_before_task"): 1}


def test_an_observer_may_name_only_the_arguments_it_uses() -> None:
    got: list[str] = []

    @hookimpl
    def after(outcome: dict[str, Any]) -> None:
        got.append(outcome["status"])

    p = make(("a", plugin(clawd_after_task=after)))
    p.notify("clawd_after_task", task=None, outcome={"status": "ok"})
    assert got == ["ok"]


def test_methods_of_a_plugin_object_are_hooks_too() -> None:
    class Counter:
        def __init__(self) -> None:
            self.n = 0

        @hookimpl
        def clawd_task_finished(self, result: dict[str, Any]) -> None:
            self.n += 1

    c = Counter()
    p = make(("counter", c))
    p.notify("clawd_task_finished", result={})
    assert c.n == 1
    assert p.info["counter"].hooks == ["clawd_task_finished"]


def test_a_misspelled_hook_is_still_refused_with_the_plugin_named(tmp_path: Path) -> None:
    d = tmp_path / "p"
    d.mkdir(mode=0o755)
    (d / "typo.py").write_text(
        "from clawd import hookimpl\n@hookimpl\ndef clawd_task_finshed(result):\n    pass\n"
    )
    p = Plugins(Config())
    with pytest.raises(PluginError, match=r"clawd_task_finshed.*'typo'.*misspelled"):
        p.load(dirs=[str(d)], disabled=["compute", "analyze", "transform", "exec"])


# -- registration hooks -----------------------------------------------------------------


def test_a_raising_registration_hook_is_a_plugin_error_naming_it() -> None:
    @hookimpl
    def clawd_register_handlers(register: Any, config: Any) -> None:
        raise ZeroDivisionError("oops")

    p = Plugins(Config())
    p.register_object(plugin(clawd_register_handlers=clawd_register_handlers), "shaky", "x.py")
    with pytest.raises(PluginError) as info:
        p.collect()
    assert str(info.value) == (
        "plugin 'shaky' (x.py) failed in clawd_register_handlers: ZeroDivisionError('oops')"
    )


def test_a_raising_strategy_registration_is_refused_too() -> None:
    @hookimpl
    def clawd_register_strategies(register: Any, config: Any) -> None:
        register("ok", lambda options: None)
        raise RuntimeError("half done")

    p = Plugins(Config())
    p.register_object(plugin(clawd_register_strategies=clawd_register_strategies), "half")
    with pytest.raises(PluginError, match="plugin 'half' .*RuntimeError"):
        p.collect()


def test_registrations_name_the_plugin_that_made_them_in_hook_order() -> None:
    @hookimpl(tryfirst=True)
    def one(register: Any, config: Any) -> None:
        register("mine", lambda ctx: 1)

    @hookimpl
    def two(register: Any, config: Any) -> None:
        register("mine", lambda ctx: 2)

    p = Plugins(Config())
    p.register_object(plugin(clawd_register_handlers=two), "second")
    p.register_object(plugin(clawd_register_handlers=one), "first")
    with pytest.raises(PluginError, match="registered by both 'first' and 'second'"):
        p.collect()


def test_a_registration_wrapper_sees_the_registrations() -> None:
    names: list[list[str]] = []

    @hookimpl(wrapper=True)
    def around(register: Any, config: Any) -> Generator[None, Any, Any]:
        out = yield
        names.append(sorted(p.strategies))
        return out

    p = Plugins(Config())
    p.register_object(clawd.strategies.builtin, "strategies")
    p.register_object(plugin(clawd_register_strategies=around), "watch")
    p.collect()
    assert names == [sorted(p.strategies)] and "hash" in names[0]
    assert {s.plugin for s in p.strategies.values()} == {"strategies"}


def test_a_config_error_from_a_registration_keeps_its_own_words() -> None:
    @hookimpl
    def clawd_register_handlers(register: Any, config: Any) -> None:
        raise ConfigError(["clawd.toml: [handlers.x] command: bad"])

    p = Plugins(Config())
    p.register_object(plugin(clawd_register_handlers=clawd_register_handlers), "x")
    with pytest.raises(ConfigError, match=r"\[handlers.x\] command: bad"):
        p.collect()


# -- strategies -------------------------------------------------------------------------

TASK = TaskView("t1", "compute", "normal")


def strategies(factory: Any) -> Plugins:
    @hookimpl
    def clawd_register_strategies(register: Any, config: Any) -> None:
        register("s", factory)

    return make(("strat", plugin(clawd_register_strategies=clawd_register_strategies)))


def workers() -> list[WorkerView]:
    return [WorkerView("wa", 4), WorkerView("wb", 4), WorkerView("wc", 4)]


def test_a_raising_strategy_is_named_and_round_robin_chooses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Boom:
        def choose(self, task: TaskView, candidates: list[WorkerView]) -> WorkerView:
            raise RuntimeError("no idea")

    s = strategies(lambda options: Boom()).make_strategy("s", {})
    cands = workers()
    with caplog.at_level(logging.ERROR, "clawd.plugins"):
        chosen = [s.choose(TASK, cands).id for _ in range(4)]
    assert sorted(set(chosen)) == ["wa", "wb", "wc"]  # spread, not one worker for all
    assert all(c is not None for c in chosen)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == (
        "plugin strat failed in strategy 's' choose: RuntimeError('no idea') "
        "(chose round robin instead); skipped"
    )


@pytest.mark.parametrize("answer", [None, "wa", WorkerView("wa", 4)])
def test_a_strategy_answering_a_non_candidate_is_overruled(answer: Any) -> None:
    class Wrong:
        def choose(self, task: TaskView, candidates: list[WorkerView]) -> Any:
            return answer

    p = strategies(lambda options: Wrong())
    cands = workers()
    s = p.make_strategy("s", {})
    chosen = [s.choose(TASK, cands) for _ in range(2)]
    # one of the candidates themselves (an equal copy would not carry the live state)
    assert all(any(w is c for c in cands) for w in chosen)
    assert p.failures.counts[("strat", "strategy 's' choose")] == 2


def test_a_good_strategy_is_obeyed_and_its_attributes_stay_readable() -> None:
    class Last:
        heavy = 3

        def choose(self, task: TaskView, candidates: list[WorkerView]) -> WorkerView:
            return candidates[-1]

    p = strategies(lambda options: Last())
    s = p.make_strategy("s", {})
    cands = workers()
    assert s.choose(TASK, cands) is cands[-1]
    assert s.heavy == 3
    assert p.failures.counts == {}


def test_a_factory_that_raises_is_a_plugin_error_naming_it() -> None:
    def factory(options: dict[str, Any]) -> Any:
        raise TypeError("bad")

    p = strategies(factory)
    with pytest.raises(PluginError) as info:
        p.make_strategy("s", {})
    assert str(info.value) == "strategy 's' of plugin 'strat' failed to start: TypeError('bad')"


def test_the_same_strategy_is_made_once_per_plugin_set() -> None:
    made: list[int] = []

    class Any1:
        def __init__(self, options: dict[str, Any]) -> None:
            made.append(1)

        def choose(self, task: TaskView, candidates: list[WorkerView]) -> WorkerView:
            return candidates[0]

    p = strategies(Any1)
    first = p.make_strategy("s", {"k": 1})
    assert p.make_strategy("s", {"k": 1}) is first
    assert p.make_strategy("s", {"k": 2}) is not first
    assert len(made) == 2
