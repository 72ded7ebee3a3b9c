"""Validation of ``[distributor] strategy_options`` shared by the built-in strategies.

A misspelled option silently falling back to its default is the worst outcome for an
operator, so every strategy declares its options and anything else is rejected.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from clawd.errors import ConfigError

WHERE = "[distributor] strategy_options"


def check_options(strategy: str, options: Mapping[str, Any], known: Mapping[str, str]) -> None:
    """Reject option keys ``strategy`` does not declare.

    :param known: option name -> one-line description, used in the error message.
    :raises ConfigError: listing every unknown key, with a suggestion when one is close.
    """
    problems = []
    for key in sorted(options):
        if key in known:
            continue
        close = difflib.get_close_matches(key, list(known), n=1)
        if close:
            hint = f'did you mean "{close[0]}"?'
        elif known:
            hint = "known options: " + ", ".join(sorted(known))
        else:
            hint = f"strategy {strategy!r} takes no options"
        problems.append(
            f'{WHERE}: unknown key "{key}" for strategy {strategy!r} ({hint}); this is either '
            "a typo or this option does not exist in this version"
        )
    if problems:
        raise ConfigError(problems)


def number_option(strategy: str, options: Mapping[str, Any], key: str, default: float) -> float:
    """Read a non-negative number option, or raise :class:`ConfigError` naming the key."""
    value = options.get(key, default)
    # bool is an int subclass; `heavy_cost = true` is a mistake, not 1.0
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(
            [f"{WHERE}.{key}: strategy {strategy!r} needs a number >= 0, got {value!r}"]
        )
    return float(value)


def string_option(strategy: str, options: Mapping[str, Any], key: str, default: str) -> str:
    """Read a non-empty string option, or raise :class:`ConfigError` naming the key."""
    value = options.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(
            [f"{WHERE}.{key}: strategy {strategy!r} needs a non-empty string, got {value!r}"]
        )
    return value
