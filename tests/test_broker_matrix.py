"""The quick half of the broker matrix (``python -m bench.brokers`` runs all of it): clawd
connects to every standard broker that installs here, takes a ``clawd submit`` and a bare
``mosquitto_pub``, publishes results ``mosquitto_sub`` sees, and answers MQTT v5
request/reply where the broker speaks v5. A broker clawd cannot be correct on is refused
with a precise reason, never looped on."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.brokers.base import Unavailable
from tests.brokers.matrix import FAST, SERVERS, run_row

#: the broker, and what clawd must make of it
EXPECTED = {
    "mosquitto": dict.fromkeys(FAST, "pass"),
    "rabbitmq": {**dict.fromkeys(FAST, "pass"), "reqrep": "n/a"},
    "ejabberd": dict.fromkeys(FAST, "pass"),
    "amqtt": {**dict.fromkeys(FAST, "pass"), "reqrep": "n/a"},
    "aedes": {**dict.fromkeys(FAST, "pass"), "reqrep": "n/a"},
    # QoS 0 only: clawd says so and exits 78 instead of losing tasks or looping
    "mqttools": dict.fromkeys(FAST, "limit"),
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", list(SERVERS))
def test_broker_quick_checks(name: str, tmp_path: Path) -> None:
    try:
        SERVERS[name].check_installed()
    except Unavailable as exc:
        pytest.skip(str(exc))
    row = run_row(name, tmp_path, FAST)
    got = {c: row.checks[c].status for c in FAST}
    details = {c: row.checks[c].detail for c in FAST if row.checks[c].detail}
    logs = (tmp_path / f"{name}-logs.txt").read_text(errors="replace")[-3000:]
    assert got == EXPECTED[name], f"{details}\n{logs}"
    if name == "mqttools":
        assert "QoS 0 only" in row.checks["connect"].detail
