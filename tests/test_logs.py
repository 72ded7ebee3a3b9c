"""Log lines: journald prefixes or timestamps, one line per event, secrets redacted."""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest

from clawd import logs

log = logging.getLogger("clawd.test")


@pytest.fixture(autouse=True)
def clean_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    monkeypatch.setattr(logs, "_secrets", ())
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def journal_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TextIO]:
    """A file standing in for the journal stream, named by JOURNAL_STREAM as systemd does."""
    with open(tmp_path / "journal", "w+", encoding="utf-8") as f:
        st = os.fstat(f.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        yield f


def read(f: TextIO) -> list[str]:
    f.flush()
    f.seek(0)
    return f.read().splitlines()


def test_plain_mode_has_timestamp_level_and_logger() -> None:
    out = io.StringIO()
    logs.setup(stream=out)
    log.info("connected to %s", "mqtt://broker:1883")
    log.debug("not shown at info")
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO clawd\.test: connected to mqtt://broker:1883\n",
        out.getvalue(),
    )


def test_journal_mode_uses_sd_daemon_prefixes_and_no_timestamp(journal_file: TextIO) -> None:
    logs.setup(level="debug", stream=journal_file)
    log.critical("c")
    log.error("e")
    log.warning("w")
    log.info("i")
    log.debug("d")
    assert read(journal_file) == [
        "<2>clawd.test: c",
        "<3>clawd.test: e",
        "<4>clawd.test: w",
        "<6>clawd.test: i",
        "<7>clawd.test: d",
    ]


def test_journal_stream_of_another_file_means_plain_mode(
    journal_file: TextIO, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Inherited JOURNAL_STREAM while our stderr was redirected elsewhere: no prefixes,
    # even though INVOCATION_ID says systemd started us.
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
    with open(tmp_path / "other", "w+", encoding="utf-8") as other:
        logs.setup(stream=other)
        log.warning("w")
        [line] = read(other)
    assert re.fullmatch(r"\S+ \S+ WARNING clawd\.test: w", line)


def test_invocation_id_without_journal_stream_means_prefixes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
    out = io.StringIO()
    logs.setup(stream=out)
    log.error("e")
    assert out.getvalue() == "<3>clawd.test: e\n"


def test_exception_is_one_clear_line_without_debug() -> None:
    out = io.StringIO()
    logs.setup(stream=out)
    try:
        raise ConnectionRefusedError(111, "Connection refused")
    except ConnectionRefusedError:
        log.exception("cannot connect to mqtt://broker:1883")
    [line] = out.getvalue().splitlines()
    assert line.endswith(
        "ERROR clawd.test: cannot connect to mqtt://broker:1883: "
        "ConnectionRefusedError: [Errno 111] Connection refused"
    )
    assert "Traceback" not in out.getvalue()


def test_debug_adds_the_traceback_with_the_level_on_every_line(journal_file: TextIO) -> None:
    logs.setup(debug=True, stream=journal_file)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("handler failed")
    lines = read(journal_file)
    assert lines[0] == "<3>clawd.test: handler failed"
    assert lines[1] == "<3>Traceback (most recent call last):"
    assert lines[-1] == "<3>ValueError: boom"
    assert all(line.startswith("<3>") for line in lines)


def test_newlines_in_messages_cannot_forge_lines() -> None:
    out = io.StringIO()
    logs.setup(stream=out)
    log.warning("rejected payload %s", "2+2\n2026-01-01 12:00:00 CRITICAL clawd: forged")
    assert out.getvalue().count("\n") == 1
    assert "2+2\\n2026-01-01" in out.getvalue()


def test_registered_secret_is_redacted_everywhere(journal_file: TextIO) -> None:
    logs.register_secret("hunter2-pw")
    logs.register_secret("")  # ignored: it would match everywhere
    logs.setup(debug=True, stream=journal_file)
    log.info("connecting as clawd with password %s", "hunter2-pw")
    log.info("literal hunter2-pw in the format string")
    try:
        raise PermissionError("broker rejected password hunter2-pw")
    except PermissionError:
        log.exception("auth failed")
    text = "\n".join(read(journal_file))
    assert "hunter2-pw" not in text
    assert "<6>clawd.test: connecting as clawd with password ***" in text
    assert "<6>clawd.test: literal *** in the format string" in text
    assert "PermissionError: broker rejected password ***" in text


def test_redaction_covers_the_exception_summary_without_debug() -> None:
    logs.register_secret("hunter2-pw")
    out = io.StringIO()
    logs.setup(stream=out)
    try:
        raise PermissionError("bad password hunter2-pw")
    except PermissionError:
        log.exception("auth failed")
    assert out.getvalue().endswith("auth failed: PermissionError: bad password ***\n")


def test_setup_twice_replaces_the_handler_and_bad_level_is_refused() -> None:
    first, second = io.StringIO(), io.StringIO()
    logs.setup(stream=first)
    logs.setup(level="WARNING", stream=second)
    log.info("hidden")
    log.warning("shown")
    assert first.getvalue() == ""
    assert second.getvalue().endswith("WARNING clawd.test: shown\n")
    with pytest.raises(ValueError, match="unknown log level 'verbose'"):
        logs.setup(level="verbose")


def test_filter_redacts_the_record_itself_for_every_handler() -> None:
    logs.register_secret("hunter2-pw")
    record = logging.LogRecord(
        "clawd.test", logging.INFO, __file__, 1, "password=%s", ("hunter2-pw",), None
    )
    assert logs.RedactSecrets().filter(record)
    assert record.getMessage() == "password=***"
