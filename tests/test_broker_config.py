"""``[broker] url`` as a list and ``[broker] protocol``: what the config accepts and what it
refuses, and the CLI trying the nodes of a list in turn (a real mosquitto behind a dead
first node)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clawd.config import load
from clawd.connection import Endpoint, url_text
from clawd.errors import ConfigError
from tests.conftest import free_port, run_cli


def _load(tmp_path: Path, broker: str) -> object:
    path = tmp_path / "clawd.toml"
    path.write_text(f"[broker]\n{broker}\n")
    return load(str(path), env={"CLAWD_STATE_DIR": str(tmp_path / "state")})


def _problems(tmp_path: Path, broker: str) -> str:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, broker)
    return "\n".join(info.value.problems)


def test_a_list_of_urls_and_a_protocol_load(tmp_path) -> None:
    cfg = _load(tmp_path, 'url = ["mqtt://a:1883", "mqtt://b:1884"]\nprotocol = "3.1.1"')
    b = cfg.broker  # type: ignore[attr-defined]
    assert b.url == ["mqtt://a:1883", "mqtt://b:1884"] and b.protocol == "3.1.1"
    assert [str(e) for e in Endpoint.parse_all(b.url)] == ["mqtt://a:1883", "mqtt://b:1884"]
    assert url_text(b.url) == "mqtt://a:1883,mqtt://b:1884"
    # the same list as one string, as $CLAWD_BROKER_URL carries it
    assert Endpoint.parse_all("mqtt://a:1883, mqtt://b:1884") == Endpoint.parse_all(b.url)
    assert _load(tmp_path, 'url = "mqtt://a"').broker.protocol == "auto"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "line, phrase",
    [
        ("url = []", "name at least one broker url"),
        ('url = ["mqtt://a", "mqtts://b"]', "share one scheme"),
        ('url = ["embedded", "mqtt://b"]', '"embedded" cannot be one node'),
        ('url = ["mqtt://a", "http://b"]', "is not a broker URL"),
        ("url = [1883]", "expected a string"),
        ('protocol = "4"', 'expected one of "3.1.1", "5", "auto"'),
        ("protocol = 5", "expected one of"),
    ],
)
def test_bad_urls_and_protocols_are_named(tmp_path, line, phrase) -> None:
    text = _problems(tmp_path, line)
    assert phrase in text and ("[broker] url" in text or "[broker] protocol" in text), text


def test_the_cli_moves_past_a_dead_first_node(
    tmp_path, broker, make_config, start_clawd, clawd_env
) -> None:
    dead = f"mqtt://127.0.0.1:{free_port()}"
    cfg = (
        make_config()
        .read_text()
        .replace(f'url = "{broker.url}"', f'url = ["{dead}", "{broker.url}"]')
    )
    path = tmp_path / "list.toml"
    path.write_text(cfg)
    start_clawd("-c", str(path), "run")
    out = run_cli("-c", str(path), "submit", "compute", "3*3", "--wait", "--json", env=clawd_env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["result"] == 9
