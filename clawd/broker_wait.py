"""Wait at start-up for a broker that is not there yet, instead of failing the service.

A broker that is down when clawd starts (rebooting together with it, or down for longer
than systemd's start timeout) must not leave the unit failed for good after a few
restarts. clawd waits, retrying with capped exponential backoff and jitter, tells systemd
why (STATUS), keeps the start timeout from firing (EXTEND_TIMEOUT_USEC) and feeds the
watchdog, since this loop is making the only progress there is to make.
"""

from __future__ import annotations

import logging
import random
import socket
import time
from collections.abc import Callable
from typing import Any

from clawd.connection import Endpoint
from clawd.systemd import Notifier

log = logging.getLogger("clawd.daemon")

#: longest pause between two attempts, seconds
BACKOFF_CAP = 30.0
#: how far ahead each EXTEND_TIMEOUT_USEC pushes systemd's start timeout, seconds
EXTEND = 60.0


def reachable(endpoint: Endpoint, timeout: float = 5.0) -> str | None:
    """None when the broker's socket accepts a connection, else why it does not."""
    family = socket.AF_UNIX if endpoint.unix else socket.AF_INET
    address: Any = endpoint.host if endpoint.unix else (endpoint.host, endpoint.port)
    if not endpoint.unix:
        try:
            infos = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            return exc.strerror or str(exc)
        family, _, _, _, address = infos[0]
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(address)
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__
    return None


def any_reachable(nodes: list[Endpoint]) -> str | None:
    """None when one of ``nodes`` accepts a connection, else why none does."""
    whys = []
    for node in nodes:
        why = reachable(node)
        if why is None:
            return None
        whys.append(why if len(nodes) == 1 else f"{node}: {why}")
    return "; ".join(whys)


def wait_for_broker(
    endpoint: Endpoint | list[Endpoint],
    notifier: Notifier,
    stopped: Callable[[], bool],
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Return True once ``endpoint`` (or one node of a list) accepts connections, False if
    ``stopped()`` first."""
    nodes = endpoint if isinstance(endpoint, list) else [endpoint]
    where = ", ".join(str(e) for e in nodes)
    why = any_reachable(nodes)
    if why is None:
        return True
    since = time.monotonic()
    log.warning(
        "broker at %s is not reachable (%s); waiting for it, retrying with backoff up to %gs",
        where,
        why,
        BACKOFF_CAP,
    )
    attempt = 0
    while why is not None:
        attempt += 1
        delay = random.uniform(0.5, min(BACKOFF_CAP, 2.0**attempt))
        waited = time.monotonic() - since
        notifier.status(
            f"waiting for broker at {where}: {why} (for {waited:.0f}s, attempt {attempt})"
        )
        notifier.extend_timeout(EXTEND)
        end = time.monotonic() + delay
        while time.monotonic() < end:
            if stopped():
                return False
            notifier.maybe_watchdog(True)
            sleep(min(0.2, max(0.0, end - time.monotonic())))
        why = any_reachable(nodes)
        log.debug("broker at %s: attempt %d: %s", where, attempt, why or "reachable")
    log.info("broker at %s reachable after %.0fs", where, time.monotonic() - since)
    return True
