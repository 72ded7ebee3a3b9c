"""Logging set-up: one line per event, journald-aware, with registered secrets redacted.

Under journald each line starts with the sd-daemon level prefix (``<3>`` error ...) and
carries no timestamp, since the journal records both itself. Elsewhere lines look like
``2026-01-01 12:00:00 INFO clawd.x: message``. An expected error logs one clear line; the
traceback is added only in debug mode.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import TextIO

REDACTED = "***"

# Longest first, so a secret containing another is replaced whole. Replaced, never mutated,
# so that logging threads can read it without the lock.
_secrets: tuple[str, ...] = ()
_secrets_lock = threading.Lock()

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def register_secret(secret: str) -> None:
    """Redact ``secret`` from every log line from now on (e.g. the broker password)."""
    if not secret:
        return  # an empty string "occurs" everywhere
    global _secrets
    with _secrets_lock:
        _secrets = tuple(sorted({*_secrets, secret}, key=len, reverse=True))


def redact(text: str) -> str:
    """Return ``text`` with every registered secret replaced by ``***``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class RedactSecrets(logging.Filter):
    """Replace registered secrets in a record's message before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            try:
                message = record.getMessage()
            except Exception:
                return True  # a malformed call: let the handler report it as usual
            cleaned = redact(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True


def _syslog_priority(levelno: int) -> int:
    """Map a logging level to the syslog priority journald reads from ``<N>``."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class LineFormatter(logging.Formatter):
    """Formats a record as one line, plus the traceback only in debug mode.

    Newlines inside a message are escaped so that text from the outside (a task payload in
    an error) cannot forge log lines. Without debug, an exception is summarised on the
    same line as ``message: ExceptionType: text``.
    """

    def __init__(self, journal: bool, debug: bool) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
        self.journal = journal
        self.debug = debug

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().replace("\r", "\\r").replace("\n", "\\n")
        if record.exc_info and record.exc_info[1] is not None and not self.debug:
            exc = record.exc_info[1]
            message += f": {type(exc).__name__}: {exc}".replace("\n", "\\n")
        if self.journal:
            line = f"{record.name}: {message}"
        else:
            line = f"{self.formatTime(record, self.datefmt)} {record.levelname} {record.name}: "
            line += message
        lines = [line]
        if self.debug:
            if record.exc_info:
                lines += self.formatException(record.exc_info).splitlines()
            if record.stack_info:
                lines += self.formatStack(record.stack_info).splitlines()
        if self.journal:
            # journald splits on newlines; prefix every line so traceback lines keep the level.
            prefix = f"<{_syslog_priority(record.levelno)}>"
            lines = [prefix + line for line in lines]
        # The filter redacted the message; this also covers exception text and tracebacks.
        return redact("\n".join(lines))


def under_journald(stream: TextIO) -> bool:
    """True when ``stream`` is connected to journald, so ``<N>`` prefixes are understood.

    ``JOURNAL_STREAM`` (``device:inode``) names the journal stream systemd connected; it is
    compared with ``stream`` because it is inherited by processes whose output was
    redirected elsewhere. Without it, ``INVOCATION_ID`` means systemd started us with
    output to syslog or the kernel log, which read the same prefixes.
    """
    expected = os.environ.get("JOURNAL_STREAM")
    if expected:
        try:
            st = os.fstat(stream.fileno())
        except (AttributeError, OSError, ValueError):
            return False  # not a real file (e.g. StringIO): cannot be the journal
        return expected == f"{st.st_dev}:{st.st_ino}"
    return bool(os.environ.get("INVOCATION_ID"))


def setup(level: str = "info", debug: bool = False, stream: TextIO | None = None) -> None:
    """Send all logging to ``stream`` (default ``sys.stderr``), one line per event.

    :param level: lowest level to log: debug, info, warning, error or critical.
    :param debug: add tracebacks to records carrying an exception.
    :param stream: where lines go. Calling ``setup`` again replaces the previous handler.
    :raises ValueError: for an unknown level name.
    """
    try:
        levelno = _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(_LEVELS)}") from None
    stream = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(stream)
    handler.set_name("clawd")
    handler.setFormatter(LineFormatter(journal=under_journald(stream), debug=debug))
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "clawd"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(levelno)
