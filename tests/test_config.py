"""Configuration: sources and merge order, all-at-once validation, secrets, dump, sample."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import msgspec
import pytest

from clawd import config
from clawd.config import (
    EX_CONFIG,
    SAMPLE,
    BreakerConfig,
    BrokerConfig,
    Config,
    ExecConfig,
    HandlerConfig,
    dump,
    load,
    read_password,
)
from clawd.config_check import parse_broker_url
from clawd.config_walk import UNKNOWN
from clawd.errors import ConfigError
from clawd.schedule import ScheduleConfig

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_system_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read /etc: the system default path points into the test's own directory."""
    monkeypatch.setattr(config, "DEFAULT_PATH", tmp_path / "etc-clawd" / "clawd.toml")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"CLAWD_STATE_DIR": str(tmp_path / "state"), "CLAWD_WORKER_ID": "w-test"}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems_of(path: Path | None, env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(str(path) if path else None, env=env)
    return info.value.problems


def without_sources(cfg: Config) -> dict[str, object]:
    data = msgspec.to_builtins(cfg)
    data.pop("sources")
    return data


# -- sources and merging ----------------------------------------------------------------


def test_defaults_without_a_file(env: dict[str, str]) -> None:
    cfg = load(None, env=env)
    assert cfg.sources == []
    assert cfg.broker.url == "embedded"
    assert cfg.daemon.roles == ["distributor", "worker"]
    assert {n: lane.weight for n, lane in cfg.lanes.items()} == {"high": 8, "normal": 4, "low": 1}
    assert cfg.state_path == Path(env["CLAWD_STATE_DIR"])
    assert cfg.worker.id == "w-test"
    assert cfg.handler_config("compute") == HandlerConfig()
    assert cfg.exec_commands() == {}


def test_worker_id_falls_back_to_the_host_name(env: dict[str, str]) -> None:
    del env["CLAWD_WORKER_ID"]
    assert load(None, env=env).worker.id == config.default_worker_id()


def test_system_default_path_is_used_when_it_exists(env: dict[str, str]) -> None:
    write(config.DEFAULT_PATH, "[worker]\nconcurrency = 7\n")
    cfg = load(None, env=env)
    assert cfg.worker.concurrency == 7
    assert cfg.sources == [str(config.DEFAULT_PATH)]


def test_dash_c_beats_clawd_config_which_beats_the_default(
    tmp_path: Path, env: dict[str, str]
) -> None:
    write(config.DEFAULT_PATH, "[worker]\nconcurrency = 1\n")
    from_env = write(tmp_path / "env" / "clawd.toml", "[worker]\nconcurrency = 2\n")
    from_arg = write(tmp_path / "arg" / "clawd.toml", "[worker]\nconcurrency = 3\n")
    env["CLAWD_CONFIG"] = str(from_env)
    assert load(None, env=env).worker.concurrency == 2
    assert load(str(from_arg), env=env).worker.concurrency == 3


def test_conf_d_merges_in_name_order(tmp_path: Path, env: dict[str, str]) -> None:
    main = write(
        tmp_path / "clawd.toml",
        '[broker]\nprefix = "site"\n[worker]\nconcurrency = 2\ncapabilities = ["a", "b"]\n',
    )
    d = tmp_path / "conf.d"
    write(d / "20-later.toml", "[worker]\nconcurrency = 5\n")
    write(d / "10-first.toml", '[worker]\nconcurrency = 3\ncapabilities = ["gpu"]\n')
    write(d / "10-first.toml", '[worker]\nconcurrency = 3\ncapabilities = ["gpu"]\n')
    write(d / "15-broker.toml", "[broker]\nkeepalive = 9\n")
    write(d / ".editor-swap.toml", "this is not TOML")
    write(d / "README", "not a drop-in")
    cfg = load(str(main), env=env)
    assert cfg.worker.concurrency == 5  # later scalars win
    assert cfg.worker.capabilities == ["gpu"]  # lists are replaced, not appended
    assert (cfg.broker.prefix, cfg.broker.keepalive) == ("site", 9)  # tables merge
    assert cfg.sources == [str(main)] + [
        str(d / n) for n in ("10-first.toml", "15-broker.toml", "20-later.toml")
    ]


def test_a_missing_main_file_is_a_problem(tmp_path: Path, env: dict[str, str]) -> None:
    missing = tmp_path / "nope.toml"
    (problem,) = problems_of(missing, env)
    assert problem.startswith(f"{missing}: cannot read")


# -- all problems at once ----------------------------------------------------------------


def test_every_problem_is_reported_at_once(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(
        tmp_path / "clawd.toml",
        '[broker]\nurl = "http://example.com"\n'
        '[worker]\nconcurrency = "four"\n'
        "[handlers.compute]\nmax_atempts = 3\n",
    )
    problems = problems_of(path, env)
    assert len(problems) == 3, problems
    assert all(p.startswith(f"{path}: ") for p in problems)
    assert f'{path}: [worker] concurrency: expected an integer >= 1, got "four"' in problems
    assert (
        f'{path}: [handlers.compute]: unknown key "max_atempts" (did you mean "max_attempts"?)'
        in problems
    )
    assert any(p.startswith(f"{path}: [broker] url: ") and "mqtt://" in p for p in problems)


def test_unknown_keys_telegraf_wording_and_hints(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(
        tmp_path / "clawd.toml",
        "concurrency = 2\n[wroker]\nid = 'x'\n[retry]\nzzz_quux = 1\n",
    )
    problems = problems_of(path, env)
    assert f'{path}: unknown key "concurrency" (did you mean [worker] concurrency?)' in problems
    assert f"{path}: unknown table [wroker] (did you mean [worker]?)" in problems
    assert f'{path}: [retry]: unknown key "zzz_quux": {UNKNOWN}' in problems


def test_a_conf_d_file_is_named_in_its_own_errors(tmp_path: Path, env: dict[str, str]) -> None:
    main = write(tmp_path / "clawd.toml", "[worker]\nconcurrency = 0\n")
    dropin = write(tmp_path / "conf.d" / "50-site.toml", "[handlers.analyze]\ntmeout = 3\n")
    problems = problems_of(main, env)
    assert problems == [
        f"{main}: [worker] concurrency: expected an integer >= 1, got 0",
        f'{dropin}: [handlers.analyze]: unknown key "tmeout" (did you mean "timeout"?)',
    ]


def test_a_value_overridden_in_conf_d_is_blamed_on_conf_d(
    tmp_path: Path, env: dict[str, str]
) -> None:
    main = write(tmp_path / "clawd.toml", "[retry]\nbackoff_base = 1.0\n")
    dropin = write(tmp_path / "conf.d" / "10.toml", "[retry]\nbackoff_cap = 0.5\n")
    expected = f"{dropin}: [retry] backoff_cap: must be >= backoff_base (1.0)"
    assert problems_of(main, env) == [expected]


def test_toml_syntax_errors_give_line_and_column(tmp_path: Path, env: dict[str, str]) -> None:
    main = write(tmp_path / "clawd.toml", "[worker]\nconcurrency = 4\nlanes = [\n")
    dropin = write(tmp_path / "conf.d" / "10.toml", "[broker]\nurl = mqtt\n")
    problems = problems_of(main, env)
    assert len(problems) == 2
    assert re.match(rf"{re.escape(str(main))}:\d+:\d+: invalid TOML: ", problems[0])
    assert problems[1].startswith(f"{dropin}:2:7: invalid TOML: ")


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[daemon]\nroles = ["worke"]', '[daemon] roles[0]: expected one of "distributor", '),
        ("[daemon]\nroles = []", "[daemon] roles: expected a non-empty list"),
        ('[daemon]\nlog_level = "INFO"', '(did you mean "info"?)'),
        ("[daemon]\nmax_payload = 512", "[daemon] max_payload: expected an integer between 1024"),
        ("[daemon]\nmax_payload = 268435457", "max_payload: expected an integer between"),
        ('[daemon]\nstate_dir = "var/lib"', "[daemon] state_dir: must be an absolute path"),
        ("[broker]\nkeepalive = 0", "[broker] keepalive: expected an integer >= 1, got 0"),
        ('[broker]\nprefix = "a/b"', "[broker] prefix: expected a name of 1-64 characters"),
        ("[worker]\nconcurrency = true", "concurrency: expected an integer >= 1, got true"),
        ('[worker]\nid = "w#1"', '[worker] id: "w#1": expected a name of 1-64'),
        ('[worker]\nlanes = ["hihg"]', '[worker] lanes[0]: "hihg" is not a defined lane'),
        ('[distributor]\ndefault_lane = "urgent"', 'default_lane: "urgent" is not a defined'),
        ("[lanes.normal]\nweight = 0", "[lanes.normal] weight: expected an integer >= 1, got 0"),
        ("[lanes.normal]\nweight = 1.5", "weight: expected an integer >= 1, got 1.5"),
        ('[lanes."a/b"]\nweight = 1', '[lanes."a/b"]: invalid name'),
        ("[retry]\nmax_attempts = 0", "[retry] max_attempts: expected an integer >= 1"),
        ("[retry]\nbackoff_base = 0", "[retry] backoff_base: expected a number > 0, got 0"),
        ("[retry]\nbackoff_base = nan", "[retry] backoff_base: expected a number > 0, got nan"),
        ("[handlers.compute]\ntimeout = -1", "[handlers.compute] timeout: expected a number > 0"),
        ("[handlers]\ncompute = 3", "[handlers] compute: expected a table"),
        ("[handlers.exec.x]\ntimeout = 1", '[handlers.exec.x]: missing required key "command"'),
        ("[handlers.exec.x]\ncommand = []", "[handlers.exec.x] command: expected a non-empty list"),
        ('[handlers.exec.x]\ncommand = "tr a-z"', 'argv, e.g. ["/usr/bin/tr", "a-z", "A-Z"]'),
        ('[handlers.exec.x]\ncommand = ["tr"]\ntimeout = 0', "[handlers.exec.x] timeout: expected"),
        ('[handlers.exec.x]\ncommand = ["tr"]\nmax_output = 0', "max_output: expected an integer"),
        ('[handlers.exec."a b"]\ncommand = ["tr"]', '[handlers.exec."a b"]: invalid task type'),
        ('[handlers.exec.x]\ncommand = ["/nonexistent/x"]', '"/nonexistent/x" is not an execu'),
        ('[broker]\nurl = "mqtts://h"\ntls_ca = "/no/ca.pem"', 'tls_ca: cannot read "/no/ca.pem"'),
        ('[broker]\nurl = "mqtts://h"\ntls_key = "clawd.toml"', "must be set together"),
        ('[broker]\nurl = "mqtt://h"\ntls_insecure = true', 'TLS options apply only to "mqtts://"'),
        ('[broker]\npassword_file = "clawd.toml"', "[broker] password_file: set username too"),
        ('[broker]\nurl = "unix://run/x.sock"', "the socket path must be absolute"),
        ('[journal]\nretention = "7 days"', "[journal] retention: expected seconds, or a dura"),
        ("[journal]\nretention = -1", "[journal] retention: expected seconds, or a duration"),
        ("[journal]\nretention = true", "[journal] retention: expected seconds, or a duration"),
    ],
)
def test_each_check_names_its_key(
    tmp_path: Path, env: dict[str, str], toml: str, expected: str
) -> None:
    path = write(tmp_path / "clawd.toml", toml + "\n")
    problems = problems_of(path, env)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}: ")
    assert expected in problems[0]


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("embedded", ("embedded", "", 0)),
        ("mqtt://127.0.0.1", ("mqtt", "127.0.0.1", 1883)),
        ("mqtt://broker.example:1884", ("mqtt", "broker.example", 1884)),
        ("mqtts://broker.example", ("mqtts", "broker.example", 8883)),
        ("mqtt://[::1]:1883", ("mqtt", "::1", 1883)),
        ("unix:///run/mosquitto.sock", ("unix", "/run/mosquitto.sock", 0)),
    ],
)
def test_valid_broker_urls(url: str, parsed: tuple[str, str, int]) -> None:
    assert parse_broker_url(url) == parsed


@pytest.mark.parametrize(
    "url",
    ["mqtt//host", "tcp://host:1883", "mqtt://", "mqtt://h:0", "mqtt://h:99999", "mqtt://h/x",
     "unix://run/x.sock", ""],
)  # fmt: skip
def test_invalid_broker_urls(url: str) -> None:
    with pytest.raises(ValueError, match="embedded|must be|unexpected"):
        parse_broker_url(url)


def test_a_password_is_never_echoed(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(
        tmp_path / "clawd.toml",
        '[broker]\npassword = "hunter2"\nurl = "mqtt://u:hunter2@host"\n'
        '[handlers.exec.x]\ncommand = ["tr"]\nenv = { TOKEN = 12345678 }\n',
    )
    problems = problems_of(path, env)
    assert len(problems) == 3
    text = "\n".join(problems)
    assert "hunter2" not in text and "12345678" not in text
    assert "password_file" in problems[0] and "LoadCredential=broker-password" in problems[0]


def test_relative_paths_are_relative_to_the_file_that_sets_them(
    tmp_path: Path, env: dict[str, str]
) -> None:
    write(tmp_path / "secrets" / "pw", "s3cret\n")
    main = write(tmp_path / "clawd.toml", "[broker]\nusername = 'u'\n")
    write(tmp_path / "conf.d" / "10.toml", "[broker]\npassword_file = '../secrets/pw'\n")
    cfg = load(str(main), env=env)
    assert Path(cfg.broker.password_file or "").resolve() == tmp_path / "secrets" / "pw"


# -- secrets -------------------------------------------------------------------------------


def test_password_from_password_file(tmp_path: Path) -> None:
    write(tmp_path / "pw", "s3cret\n")
    broker = BrokerConfig(username="u", password_file=str(tmp_path / "pw"))
    assert read_password(broker, env={}) == "s3cret"


def test_password_from_a_systemd_credential(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert read_password(BrokerConfig(), env=env) is None  # no credential: no password
    write(creds / "broker-password", "from-systemd")
    assert read_password(BrokerConfig(), env=env) == "from-systemd"
    write(tmp_path / "pw", "from-file\n")  # an explicit password_file wins
    assert read_password(BrokerConfig(password_file=str(tmp_path / "pw")), env=env) == "from-file"


def test_an_unreadable_password_file_names_the_file_only(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the broker password") as info:
        read_password(BrokerConfig(password_file=str(tmp_path / "missing")), env={})
    assert str(tmp_path / "missing") in info.value.problems[0]


# -- dump and sample -------------------------------------------------------------------------


def test_dump_lists_sources_omits_none_and_never_the_password(
    tmp_path: Path, env: dict[str, str]
) -> None:
    write(tmp_path / "pw", "hunter2\n")
    main = write(
        tmp_path / "clawd.toml",
        '[broker]\nurl = "mqtt://h"\nusername = "u"\npassword_file = "pw"\n'
        '[handlers.exec.shout]\ncommand = ["tr", "a-z", "A-Z"]\n'
        "[handlers.compute]\nenabled = false\n",
    )
    cfg = load(str(main), env=env)
    assert read_password(cfg.broker, env=env) == "hunter2"
    text = dump(cfg)
    assert "hunter2" not in text
    assert text.startswith(f"# Effective clawd configuration, merged from:\n#   {main}\n")
    data = tomllib.loads(text)
    assert "sources" not in data and "client_id" not in data["broker"]
    # what dump writes loads back to the same configuration
    again = load(str(write(tmp_path / "dumped" / "clawd.toml", text)), env=env)
    assert without_sources(again) == without_sources(cfg)
    assert again.exec_commands()["shout"] == ExecConfig(command=["tr", "a-z", "A-Z"])
    assert not again.handler_config("compute").enabled


def test_dump_of_defaults_says_so(env: dict[str, str]) -> None:
    assert "#   (built-in defaults)\n" in dump(load(None, env=env))


def test_etc_sample_is_the_sample() -> None:
    assert (ROOT / "etc" / "clawd.toml").read_bytes() == SAMPLE.encode()


def test_sample_loads_and_shows_the_true_defaults(tmp_path: Path, env: dict[str, str]) -> None:
    cfg = load(str(write(tmp_path / "clawd.toml", SAMPLE)), env=env)
    assert without_sources(cfg) == without_sources(load(None, env=env))


@pytest.mark.skipif(not shutil.which("tr", path="/usr/bin"), reason="needs /usr/bin/tr")
def test_sample_examples_load_when_uncommented(tmp_path: Path, env: dict[str, str]) -> None:
    head, mark, examples = SAMPLE.partition("# Settings for one task type")
    text = (
        head + mark + re.sub(r"^# (\[handlers|\[schedules|[a-z_]+ = )", r"\1", examples, flags=re.M)
    )
    cfg = load(str(write(tmp_path / "clawd.toml", text)), env=env)
    assert cfg.exec_commands()["shout"].command == ["/usr/bin/tr", "a-z", "A-Z"]
    assert cfg.handler_config("compute").max_attempts == 3
    assert cfg.schedules["nightly-report"].cron == "30 2 * * *"
    assert cfg.schedules["heartbeat"].every == 300


def schema_keys() -> set[str]:
    """Every key a user can write, as ``section.key`` (handlers as their template)."""
    keys = set()
    sections = {
        "broker": BrokerConfig,
        "daemon": config.DaemonConfig,
        "worker": config.WorkerConfig,
        "distributor": config.DistributorConfig,
        "journal": config.JournalConfig,
        "lanes.<name>": config.LaneConfig,
        "retry": config.RetryConfig,
        "scaler": config.ScalerConfig,
        "breakers": config.BreakerConfig,
        "breakers.types.<type>": config.BreakerTypeConfig,
        "handlers.<type>": HandlerConfig,
        "handlers.exec.<type>": ExecConfig,
        "schedules.<name>": ScheduleConfig,
    }
    for section, struct in sections.items():
        keys |= {f"{section}.{name}" for name in struct.__struct_fields__}
    return keys


@pytest.mark.parametrize("key", sorted(schema_keys()))
def test_every_key_is_in_the_sample_and_the_docs(key: str) -> None:
    name = key.rsplit(".", 1)[1]
    written = rf"^(# )?({name} = |\[[a-z_.]+\.{name}\]$)"  # a key, or a table of its own
    assert re.search(written, SAMPLE, re.M), f"{key} missing from SAMPLE"
    docs = (ROOT / "docs" / "config.md").read_text()
    assert f"`{name}`" in docs, f"{key} missing from docs/config.md"


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[worker]\nmin_concurrency = 8", "[worker] min_concurrency: must be <= concurrency (4)"),
        ("[worker]\nmax_concurrency = 2", "[worker] max_concurrency: must be >= concurrency (4)"),
        ("[worker]\nmin_concurrency = 0", "min_concurrency: expected an integer >= 1, got 0"),
        ("[scaler]\nmin_workers = 3\nmax_workers = 2", "max_workers: must be >= min_workers (3)"),
        ("[scaler]\nmax_workers = -1", "[scaler] max_workers: expected an integer >= 0"),
        ("[scaler]\ntarget_utilisation = 1.5", "target_utilisation: expected a number > 0 and"),
        ("[scaler]\ncooldown = -1", "[scaler] cooldown: expected a number >= 0, got -1"),
        ('[scaler]\ncommand = [""]', "[scaler] command[0]: expected a non-empty string"),
    ],
)
def test_scaling_keys_are_checked(
    tmp_path: Path, env: dict[str, str], toml: str, expected: str
) -> None:
    problems = problems_of(write(tmp_path / "clawd.toml", toml + "\n"), env)
    assert len(problems) == 1, problems
    assert expected in problems[0]


def test_concurrency_limits_default_to_concurrency(tmp_path: Path, env: dict[str, str]) -> None:
    assert load(None, env=env).worker.concurrency_limits == (4, 4)
    path = write(tmp_path / "clawd.toml", "[worker]\nconcurrency = 2\nmax_concurrency = 8\n")
    w = load(str(path), env=env).worker
    assert (w.min_concurrency, w.concurrency, w.max_concurrency) == (2, 2, 8)


# -- circuit breakers ------------------------------------------------------------------------


def test_breaker_sample_example_loads_when_uncommented(tmp_path: Path, env: dict[str, str]) -> None:
    head, mark, rest = SAMPLE.partition("\n[breakers]\n")
    block, end, tail = rest.partition("\n# Settings for one task type")
    block = re.sub(r"^# (\[breakers\.types\.|[a-z_]+ = )", r"\1", block, flags=re.M)
    text = head + mark + block + end + tail
    cfg = load(str(write(tmp_path / "clawd.toml", text)), env=env)
    assert cfg.breakers.slow_call_seconds == 10.0
    shout = cfg.breaker_config("shout")
    assert (shout.failure_rate, shout.open_seconds) == (0.2, 60.0)


def test_breaker_type_overrides_inherit_unset_keys(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(
        tmp_path / "clawd.toml",
        "[breakers]\nwindow = 50\nslow_call_seconds = 5.0\neject_after = 7\n"
        "[breakers.types.compute]\nfailure_rate = 0.25\nenabled = false\n",
    )
    cfg = load(str(path), env=env)
    compute = cfg.breaker_config("compute")
    assert (compute.failure_rate, compute.enabled) == (0.25, False)  # its own
    assert (compute.window, compute.slow_call_seconds, compute.eject_after) == (50, 5.0, 7)
    assert compute.types == {}
    other = cfg.breaker_config("analyze")  # no table: [breakers] as it is
    assert (other.failure_rate, other.window, other.enabled) == (0.5, 50, True)
    assert load(None, env=env).breaker_config("x") == BreakerConfig()


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[breakers]\nfailure_rate = 0", "[breakers] failure_rate: expected a number > 0 and <= 1"),
        ("[breakers]\nslow_call_rate = 1.5", "[breakers] slow_call_rate: expected a number > 0"),
        ("[breakers]\nmax_ejected = -0.1", "[breakers] max_ejected: expected a number between 0"),
        ("[breakers]\nwindow = 0", "[breakers] window: expected an integer >= 1, got 0"),
        ("[breakers]\nslow_call_seconds = 0", "slow_call_seconds: expected a number > 0"),
        ("[breakers]\nwindow = 5", "[breakers] minimum_calls: must be <= window (5)"),
        ("[breakers]\nopen_secs = 5", '[breakers]: unknown key "open_secs" (did you mean "open_'),
        ("[breakers.types.x]\nwindow = 5", "[breakers.types.x] window: minimum_calls (10) must be"),
        ("[breakers.types.x]\nfailure_rate = 2", "[breakers.types.x] failure_rate: expected a n"),
        ('[breakers.types."a/b"]\nwindow = 30', '[breakers.types."a/b"]: invalid name'),
        ("[breakers.types.x]\neject_after = 3", '"eject_after" cannot be set per task type'),
        ("[breakers.types.x]\nhold_secs = 3", '(did you mean "hold_seconds"?)'),
    ],
)
def test_breaker_keys_are_checked(
    tmp_path: Path, env: dict[str, str], toml: str, expected: str
) -> None:
    path = write(tmp_path / "clawd.toml", toml + "\n")
    problems = problems_of(path, env)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}: ")
    assert expected in problems[0]


def test_exit_status_for_config_errors() -> None:
    assert EX_CONFIG == 78


@pytest.mark.parametrize(
    ("value", "seconds"),
    [('"7d"', 604_800.0), ('"1h30m"', 5_400.0), ('"90s"', 90.0), ("3600", 3_600.0), ("0", 0.0)],
)
def test_retention_takes_seconds_or_a_duration(
    tmp_path: Path, env: dict[str, str], value: str, seconds: float
) -> None:
    cfg = load(str(write(tmp_path / "clawd.toml", f"[journal]\nretention = {value}\n")), env=env)
    assert cfg.journal.retention == seconds
    assert f"[journal]\nretention = {seconds}" in dump(cfg)
