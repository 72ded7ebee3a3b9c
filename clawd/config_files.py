"""Reading the config files: the main file, its conf.d drop-ins, and the deep merge that
remembers which file set each key (so every problem can name its file)."""

from __future__ import annotations

import copy
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: dotted key path -> the file that set it
Origins = dict[tuple[str, ...], str]
#: keys holding paths, resolved relative to the file that sets them
_FILE_KEYS = ("password_file", "tls_ca", "tls_cert", "tls_key")
_TOML_POS = re.compile(r"^(.*) \(at line (\d+), column (\d+)\)$")


def read_toml(path: Path, problems: list[str]) -> dict[str, Any] | None:
    """The file's tables, or None after adding a problem (syntax errors with line:column)."""
    text = ""
    try:
        text = path.read_bytes().decode("utf-8")
        return tomllib.loads(text)
    except OSError as exc:
        problems.append(f"{path}: cannot read: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        problems.append(f"{path}: not UTF-8 text (byte {exc.start})")
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11's error has the position only in its message
        msg, where = str(exc), str(path)
        if m := _TOML_POS.match(msg):
            msg, where = m[1], f"{path}:{m[2]}:{m[3]}"
        elif msg.endswith(" (at end of document)"):
            lines = text.split("\n")
            msg, where = (
                msg.rsplit(" (", 1)[0] + " at end of file",
                f"{path}:{len(lines)}:{len(lines[-1]) + 1}",
            )
        problems.append(f"{where}: invalid TOML: {msg}")
    return None


def dropins(main: Path, problems: list[str]) -> list[Path]:
    """``conf.d/*.toml`` next to the main file, by name; dot files are editor leftovers."""
    d = main.parent / "conf.d"
    try:
        return sorted(p for p in d.glob("*.toml") if p.is_file() and not p.name.startswith("."))
    except OSError as exc:
        problems.append(f"{d}: cannot list: {exc.strerror or exc}")
        return []


def _mark(value: Any, path: tuple[str, ...], source: str, origins: Origins) -> None:
    origins[path] = source
    if isinstance(value, dict):
        for k, v in value.items():
            _mark(v, (*path, k), source, origins)


def merge(base: dict[str, Any], new: Mapping[str, Any], source: str, origins: Origins) -> None:
    """Deep-merge ``new`` into ``base``: tables merge, later scalars and lists win.

    ``origins`` records the file behind each key (a table keeps its first file), so a
    problem found later can name the conf.d file it came from.
    """

    def walk(base: dict[str, Any], new: Mapping[str, Any], path: tuple[str, ...]) -> None:
        for key, value in new.items():
            here = (*path, key)
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                walk(base[key], value, here)
            else:
                for stale in [p for p in origins if p[: len(here)] == here]:
                    del origins[stale]
                base[key] = copy.deepcopy(value)
                _mark(value, here, source, origins)

    walk(base, new, ())


def absolutize(data: dict[str, Any], origins: Origins) -> None:
    broker = data.get("broker")
    if not isinstance(broker, dict):
        return
    for key in _FILE_KEYS:
        value, source = broker.get(key), origins.get(("broker", key), "")
        if isinstance(value, str) and value and not os.path.isabs(value) and source:
            broker[key] = str(Path(source).parent / value)


# -- the schema walk -------------------------------------------------------------------
