"""Running a jq program for ``transform``, with nothing of the daemon's to reach.

jq runs as a separate process (the binary found on PATH), so a program that never ends
or eats memory costs a process that is killed, not a worker thread. It gets an empty
environment (``env`` and ``$ENV`` are ``{}``), the data on stdin, the program as one
argv element, a time limit, a memory limit and an output cap. Module directives
(``import``/``include``) are refused: with ``{search: "/some/dir"}`` they read any
``.json`` or ``.jq`` file the daemon can.
"""

from __future__ import annotations

import re
import shutil
from typing import Any

import msgspec

from clawd.errors import BadInput, TaskError, TaskTimeout
from clawd.handlers import _process

MAX_PROGRAM = 64 * 1024  #: bytes of jq program (one argv element; Linux allows 128 KiB)
MAX_OUTPUT = 1024 * 1024  #: bytes jq may write before it is stopped
MEMORY_LIMIT = 512 * 1024 * 1024  #: address space jq may use

# module directives can only open a program, after whitespace and comments
_MODULE_DIRECTIVE = re.compile(r"\A(?:\s|#[^\n]*)*(import|include)\b")


def find_jq() -> str:
    """The jq binary's path, or a TaskError saying it is missing."""
    path = shutil.which("jq")
    if path is None:
        raise TaskError(
            "transform: jq programs need the jq binary, which is not installed on this "
            "worker (install the 'jq' package, or use named ops)"
        )
    return path


def check_program(program: Any) -> str:
    """Validate a jq program before anything is started."""
    if not isinstance(program, str) or not program.strip():
        raise BadInput(f'"jq" must be a non-empty string, got {_kind(program)}')
    if len(program.encode()) > MAX_PROGRAM:
        raise BadInput(f"jq program is over {MAX_PROGRAM} bytes")
    if "\0" in program:
        raise BadInput("jq program contains a NUL character")
    m = _MODULE_DIRECTIVE.match(program)
    if m:
        raise BadInput(f"jq {m.group(1)!r} is not allowed here: programs cannot load modules")
    # jq 1.6 has no "--": a leading space stops a program like "-1" being read as an option
    return " " + program if program.startswith("-") else program


def _kind(value: Any) -> str:
    return "an empty string" if value == "" else type(value).__name__


def _jq_message(stderr: bytes) -> str:
    """jq's stderr on one line, without its hints that do not apply here."""
    text = ""
    for line in stderr.decode("utf-8", "replace").splitlines():
        line = line.replace(" (Unix shell quoting issues?)", "").strip()
        if line and not re.fullmatch(r"jq: \d+ compile errors?", line):
            # "... at <top-level>, line 1:" introduces the program line that follows
            text += (" " if text.endswith(":") else "; " if text else "") + line
    return text


def run_jq(program: Any, data: Any, timeout: float) -> Any:
    """Run ``program`` on ``data``; one output is returned as is, several as a list.

    No output at all is ``null``.
    """
    text = check_program(program)
    jq = find_jq()
    done = _process.run(
        [jq, "--compact-output", text],
        stdin=msgspec.json.encode(data),
        env={},
        cwd="/",
        timeout=max(timeout, 0.0),
        max_output=MAX_OUTPUT,
        memory_limit=MEMORY_LIMIT,
    )
    message = _jq_message(done.stderr)
    if done.timed_out:
        raise TaskTimeout(f"jq program ran past its {timeout:.3g} s limit and was killed")
    if done.overflow:
        raise BadInput(f"jq output is over {MAX_OUTPUT} bytes; the program was stopped")
    if done.returncode == 3:
        raise BadInput(f"jq program does not compile: {message}")
    if done.returncode != 0:
        if done.returncode < 0 or "out of memory" in message.lower():
            why = message or "killed"
            raise BadInput(f"jq stopped ({why}); it may have needed more than 512 MiB")
        raise BadInput(f"jq program failed (exit {done.returncode}): {message}")
    outputs = [msgspec.json.decode(line) for line in done.stdout.splitlines() if line.strip()]
    if not outputs:
        return None
    return outputs[0] if len(outputs) == 1 else outputs
