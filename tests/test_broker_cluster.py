"""A real broker cluster: three private RabbitMQ nodes (MQTT plugin) joined into one, clawd
on all three URLs, the node every client is on killed with kill -9 under load: every
acknowledged task still gets its result (lost = 0), none runs to two results, no result
for a task never submitted. The longer run and the times: ``python -m bench.cluster``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.brokers.base import Unavailable
from tests.brokers.cluster import NodeKill, RabbitCluster
from tests.brokers.rabbitmq import RabbitMQ


@pytest.mark.timeout(400)
def test_rabbitmq_node_kill_under_load_loses_nothing(tmp_path: Path) -> None:
    try:
        RabbitMQ.check_installed()
    except Unavailable as exc:
        pytest.skip(str(exc))
    cluster = RabbitCluster(tmp_path / "nodes")
    nk = None
    try:
        cluster.start()
        nk = NodeKill(cluster, tmp_path / "clawd")
        nk.start()
        r = nk.run(tasks=300, kill_after=100)
        logs = nk.rig.logs(3000)
        assert r["submitted"] == 300, (r, logs)
        assert r["lost"] == 0, (sorted(nk.acc.lost)[:5], r, logs)
        assert r["duplicated"] == 0, (sorted(nk.acc.duplicated)[:5], r)
        assert r["unexpected"] == 0, r
        assert r["recover_s"] is not None, r
    finally:
        if nk is not None:
            nk.close()
        cluster.close()
