"""Exceptions that cross module boundaries."""

from __future__ import annotations


class ClawdError(Exception):
    """Base class of clawd's own errors."""


class TaskError(ClawdError):
    """Raised by a handler to fail a task with a clear message.

    ``retryable=False`` (the default) fails the task at once: bad input, division by
    zero and the like will not get better by trying again. Any other exception a
    handler raises is treated as retryable.
    """

    def __init__(self, message: str, *, retryable: bool = False, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.code = code


class BadInput(TaskError):
    """The task's input cannot be processed by this handler (never retried)."""


class TaskTimeout(TaskError):
    """The handler ran past its time limit and was stopped."""

    def __init__(self, message: str):
        super().__init__(message, retryable=True, code="timeout")


class ConfigError(ClawdError):
    """The configuration is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class PluginError(ClawdError):
    """A plugin could not be loaded or registered something invalid."""


class BrokerError(ClawdError):
    """The broker could not be reached, started or found."""


class BrokerRefused(BrokerError):
    """The broker refused clawd for a reason retrying cannot fix (credentials, TLS
    verification, a protocol version or a limit clawd cannot work with)."""


class JournalError(ClawdError):
    """The journal cannot be opened or is of a schema this clawd cannot use."""


class Deposed(JournalError):
    """Another distributor took the lead of a shared journal: this one may write nothing
    more, and stops (its supervisor starts it again as a standby)."""
