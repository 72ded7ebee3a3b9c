"""The documentation keeps up with the code: every hook, strategy and option is described."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from clawd import hookspecs
from clawd.config import Config
from clawd.plugins import Plugins
from clawd.strategies import builtin, fastest, rendezvous

DOCS = Path(__file__).resolve().parent.parent / "docs"


def hook_names() -> list[str]:
    # pluggy marks each spec by setting a "<project>_spec" attribute on the function
    return sorted(
        name
        for name, func in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(func, "clawd_spec")
    )


def test_hookspecs_are_found() -> None:
    # guards the tests below against passing vacuously over an empty list
    assert "clawd_register_strategies" in hook_names()


@pytest.mark.parametrize("hook", hook_names())
def test_every_hook_is_documented_with_its_signature(hook: str) -> None:
    args = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    heading = f"#### `{hook}({args})`"
    assert heading in (DOCS / "plugins.md").read_text(), (
        f"docs/plugins.md has no heading {heading!r}: document the hook (when it is "
        "called and each argument) under 'Hooks'"
    )


def builtin_strategy_names() -> list[str]:
    p = Plugins(Config())
    p.register_object(builtin, "strategies")
    p.collect()
    return sorted(p.strategies)


def test_builtin_strategies_are_found() -> None:
    assert len(builtin_strategy_names()) == 4


@pytest.mark.parametrize("name", builtin_strategy_names())
def test_every_builtin_strategy_is_documented(name: str) -> None:
    assert f"## `{name}`" in (DOCS / "strategies.md").read_text(), (
        f"docs/strategies.md has no section '## `{name}`'"
    )


@pytest.mark.parametrize("option", [*fastest.OPTIONS, *rendezvous.OPTIONS])
def test_every_strategy_option_is_documented(option: str) -> None:
    assert f"| `{option}` |" in (DOCS / "strategies.md").read_text(), (
        f"docs/strategies.md has no row for option {option!r} in an options table"
    )


def doc_rules() -> dict[str, dict[str, object]]:
    """Every rule docs/strategies.md and the README add (``clawd route add`` or
    ``mosquitto_pub -r`` on ``clawd/routes/<id>``), by rule id, as the distributor reads it.
    A loop's ``$i`` is taken as 0; ``[--option X]`` (optional syntax) is left out."""
    import json
    import re
    import shlex

    from clawd.cli_route import route_add, rule_payload
    from clawd.routing.rules import decode

    text = (DOCS / "strategies.md").read_text() + (DOCS.parent / "README.md").read_text()
    rules: dict[str, dict[str, object]] = {}
    for line in text.splitlines():
        line = line.strip().removeprefix("# or: ").rstrip("\\").strip()
        if line.startswith("clawd route add "):
            line = re.sub(r" \[--[^\]]*\]", "", line).replace("$i", "0")
            ctx = route_add.make_context("add", shlex.split(line)[3:])
            payload = rule_payload(ctx.params.pop("rule_id"), **ctx.params)
            rule_id = shlex.split(line)[3]
        elif line.startswith("mosquitto_pub") and "clawd/routes/" in line and " -m " in line:
            argv = shlex.split(line)
            rule_id = argv[argv.index("-t") + 1].split("/")[-1]
            payload = argv[argv.index("-m") + 1].encode()
        else:
            continue
        rules[rule_id] = json.loads(decode(rule_id, payload, 0.0).raw)
    return rules


def test_the_documented_rules_are_valid_and_are_the_ones_the_tests_run() -> None:
    rules = doc_rules()
    # the seed's three distributions and its dedicated lane, as tests/test_routes_e2e.py
    # publishes them (round robin by hash, capability, load-based pool, dedicated lane)
    assert rules["distribute_round_robin_0"] == {
        "match": "hash(task_id) % 3 == 0",
        "target": "worker_0",
        "priority": 500,
    }
    assert rules["route_by_capability_gpu"] == {
        "match": "task.meta.capability == 'gpu'",
        "target": "worker_gpu_*",
        "priority": 600,
    }
    assert rules["pool_batch"]["target"] == "batch_*"
    assert rules["high_priority_lane"] == {
        "lanes": ["urgent"],
        "target": "dedicated_worker",
        "priority": 900,
    }
    assert rules["nightly"]["rate_limit"] == "10/s"
    assert {"gpu", "gpu_big"} <= set(rules)
