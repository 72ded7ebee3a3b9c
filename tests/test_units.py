"""The systemd units: valid for systemd-analyze, hardened, and pointing at the real clawd."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from clawd import units

REPO_UNITS = Path(__file__).resolve().parent.parent / "systemd"
MAX_EXPOSURE = 2.0

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)
both = pytest.mark.parametrize(
    ("worker", "name"), [(False, units.MAIN_UNIT_NAME), (True, units.WORKER_UNIT_NAME)]
)


def analyze(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *map(str, args)], capture_output=True, text=True, timeout=60
    )


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def make_executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n", encoding="utf-8")
    path.chmod(0o755)
    return path


@both
def test_repository_copies_are_generated_from_the_package(worker: bool, name: str) -> None:
    expected = units.render(worker=worker, executable=units.DEFAULT_EXECUTABLE)
    assert (REPO_UNITS / name).read_text(encoding="utf-8") == expected, (
        f"systemd/{name} differs from clawd/units.py; regenerate: python -m clawd.units systemd/"
    )


@needs_analyze
@both
def test_verify_reports_nothing(worker: bool, name: str, tmp_path: Path) -> None:
    # render() without an executable finds the installed clawd, which must exist for verify.
    path = write(tmp_path, name, units.render(worker=worker))
    result = analyze("verify", "--man=no", path)
    assert result.stderr == ""
    assert result.returncode == 0


@needs_analyze
@both
def test_security_exposure_is_at_most_two(worker: bool, name: str, tmp_path: Path) -> None:
    path = write(tmp_path, name, units.render(worker=worker))
    result = analyze("security", "--offline=yes", f"--threshold={int(MAX_EXPOSURE * 10)}", path)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    exposure = float(match.group(1))
    print(f"{name}: overall exposure {exposure}")
    assert exposure <= MAX_EXPOSURE
    assert result.returncode == 0, result.stderr


@needs_analyze
def test_awkward_executable_path_is_quoted_for_systemd(tmp_path: Path) -> None:
    exe = make_executable(tmp_path / "opt dir" / "clawd%1$x")
    text = units.render(executable=str(exe))
    # % is a specifier everywhere; $ is literal in the program path (only arguments expand).
    assert f'ExecStart="{tmp_path}/opt dir/clawd%%1$x" run\n' in text
    result = analyze("verify", "--man=no", write(tmp_path, units.MAIN_UNIT_NAME, text))
    assert result.stderr == ""


@both
def test_execstart_names_the_given_executable(worker: bool, name: str) -> None:
    text = units.render(worker=worker, executable="/opt/clawd/bin/clawd")
    exec_lines = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    args = " --role worker --worker-id ${CLAWD_WORKER_ID}" if worker else ""
    assert exec_lines == [f"ExecStart=/opt/clawd/bin/clawd run{args}"]
    assert "/usr/bin/clawd" not in text
    assert not text.startswith("# WARNING")


def test_worker_template_has_its_own_identity_and_state() -> None:
    text = units.render(worker=True, executable="/usr/bin/clawd")
    assert "Environment=CLAWD_WORKER_ID=%H-%i\n" in text
    assert "ExecStart=/usr/bin/clawd run --role worker --worker-id ${CLAWD_WORKER_ID}\n" in text
    # beside /var/lib/clawd, not inside: DynamicUser= cannot link nested state directories
    assert "StateDirectory=clawd-worker-%i\n" in text
    assert "Environment=CLAWD_STATE_DIR=%S/clawd-worker-%i\n" in text
    assert "ConfigurationDirectory=clawd\n" in text


def test_both_units_share_the_same_hardening() -> None:
    def hardening(text: str) -> str:
        return text[text.index("# ---- Resources") :]

    assert hardening(units.render()) == hardening(units.render(worker=True))


def test_every_hardening_setting_says_what_it_protects_and_may_break() -> None:
    section = units.MAIN_UNIT[units.MAIN_UNIT.index("# ---- Hardening") :]
    section = section[: section.index("[Install]")]
    comment: list[str] = []
    previous_was_setting = False
    for line in section.splitlines()[3:]:
        if line.startswith("#"):
            if previous_was_setting:
                comment = []
            comment.append(line)
            previous_was_setting = False
        elif line.strip():
            text = " ".join(comment)
            assert "Protects:" in text and "May break:" in text, line
            previous_was_setting = True


@pytest.mark.parametrize(
    "exe, setting",
    [
        ("/home/alice/.local/bin/clawd", "ProtectHome=yes"),
        ("/root/venv/bin/clawd", "ProtectHome=yes"),
        ("/tmp/venv/bin/clawd", "PrivateTmp=yes"),
    ],
)
def test_an_install_the_sandbox_hides_gets_a_warning(exe: str, setting: str) -> None:
    text = units.render(executable=exe)
    assert text.startswith(f"# WARNING: {exe} is hidden from the service by {setting}")
    assert units.hidden_paths(exe) == [f"{exe} is hidden from the service by {setting}"]
    assert units.hidden_paths("/opt/clawd/bin/clawd") == []


def test_systemd_unit_refuses_an_install_the_sandbox_hides(tmp_path: Path) -> None:
    # a virtualenv under /tmp, as a quick try-out would make
    venv = Path(tempfile.mkdtemp(prefix="clawd-venv-", dir="/tmp"))
    try:
        exe = make_executable(venv / "bin" / "clawd")
        exe.write_text(f"#!{sys.executable}\nfrom clawd.cli import main\nmain()\n")
        p = subprocess.run([str(exe), "systemd", "unit"], capture_output=True, text=True)
        assert p.returncode == 1
        assert p.stdout == ""
        assert p.stderr.startswith("clawd: refusing to write a unit that cannot start: ")
        assert f"{exe} is hidden from the service by PrivateTmp=yes" in p.stderr
        assert len(p.stderr.splitlines()) == 1
        forced = subprocess.run(
            [str(exe), "systemd", "unit", "--force"], capture_output=True, text=True
        )
        assert forced.returncode == 0
        assert forced.stdout.startswith(f"# WARNING: {exe} is hidden from the service by")
    finally:
        shutil.rmtree(venv)


def test_the_broker_password_credential_is_optional() -> None:
    for worker in (False, True):
        text = units.render(worker=worker, executable="/usr/bin/clawd")
        load = "LoadCredential=broker-password:/etc/clawd/broker-password\n"
        # systemd 252 has no optional LoadCredential=; a SetCredential= of the same name is
        # its fallback when the file is missing: one newline, read as "no password"
        assert load + "SetCredential=broker-password:\\n\n" in text


def test_bare_name_is_looked_up_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exe = make_executable(tmp_path / "bin" / "clawd")
    monkeypatch.setenv("PATH", str(exe.parent))
    assert f"ExecStart={exe} run\n" in units.render(executable="clawd")
    with pytest.raises(ValueError, match="absolute path"):
        units.render(executable="no-such-clawd")


def test_find_executable_prefers_the_running_clawd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exe = make_executable(tmp_path / "venv" / "bin" / "clawd")
    monkeypatch.setattr(sys, "argv", [str(exe), "systemd", "unit"])
    assert units.find_executable() == [str(exe)]


def test_find_executable_falls_back_to_python_m(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    python = make_executable(tmp_path / "py" / "python3")
    monkeypatch.setattr(sys, "argv", ["pytest"])
    monkeypatch.setattr(sys, "executable", str(python))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert units.find_executable() == [str(python), "-m", "clawd"]
