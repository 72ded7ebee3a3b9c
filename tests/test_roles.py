"""Roles: each runs at most once per process; an unknown or repeated one is a config error."""

from __future__ import annotations

from pathlib import Path

import pytest

from clawd.config import load
from clawd.config_check import check_roles, role_problems
from clawd.errors import ConfigError
from tests.conftest import run_cli


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        (["distributor", "distributor"], [(1, '"distributor" is listed twice')]),
        (["worker", "distributor", "worker"], [(2, '"worker" is listed twice')]),
        (["distributer"], [(0, '"distributer": expected one of "distributor", "worker"')]),
        (["distributor", "worker"], []),
        (["worker"], []),
    ],
)
def test_role_problems_name_the_index(roles: list[str], expected: list[tuple[int, str]]) -> None:
    found = role_problems(roles)
    assert [i for i, _ in found] == [i for i, _ in expected]
    for (_, msg), (_, want) in zip(found, expected, strict=True):
        assert msg.startswith(want)


def test_duplicate_role_in_the_file_names_file_key_and_why(tmp_path: Path) -> None:
    path = tmp_path / "clawd.toml"
    path.write_text('[daemon]\nroles = ["distributor", "distributor"]\n')
    with pytest.raises(ConfigError) as info:
        load(str(path), env={"CLAWD_STATE_DIR": str(tmp_path / "state")})
    (problem,) = info.value.problems
    assert problem.startswith(f'{path}: [daemon] roles[1]: "distributor" is listed twice')
    assert "once" in problem


def test_repeated_role_on_the_command_line_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        check_roles(["worker", "worker"])
    assert info.value.problems == [
        '--role: "worker" is listed twice; a process runs each role once (two distributors '
        "over one journal would dispatch every task twice)"
    ]


def test_clawd_run_refuses_a_duplicate_role_in_the_file(tmp_path, broker, clawd_env) -> None:
    cfg = tmp_path / "clawd.toml"
    cfg.write_text(
        f'[broker]\nurl = "{broker.url}"\n\n[daemon]\nroles = ["distributor", "distributor"]\n'
    )
    out = run_cli("-c", str(cfg), "run", env=clawd_env)
    assert out.returncode == 78, out.stderr
    assert f'{cfg}: [daemon] roles[1]: "distributor" is listed twice' in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "state" / "journal.db").exists()


def test_clawd_run_refuses_a_repeated_role_flag(make_config, clawd_env, tmp_path) -> None:
    out = run_cli(
        "-c",
        str(make_config()),
        "run",
        "--role",
        "distributor",
        "--role",
        "distributor",
        env=clawd_env,
    )
    assert out.returncode == 78, out.stderr
    assert '--role: "distributor" is listed twice' in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "state" / "journal.db").exists()
