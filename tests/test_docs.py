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
