"""A 3-node RabbitMQ cluster with the MQTT plugin on this machine, clawd on all three
nodes' URLs, one node killed with kill -9 under load, and Jepsen-style accounting.

Every node is private (own node name, ports, data dir; one shared private cookie). The
MQTT plugin keeps a persistent session's messages in a classic queue on the node the
client first connected to; a policy mirrors those queues to every node (``ha-mode: all``),
so the queue survives the death of its node.

Accounting: **acked** ids were published by ``mosquitto_pub`` that exited 0 (every PUBACK
in); a batch whose ``mosquitto_pub`` failed is published again, same ids, to the next node
(clawd runs a known id once). **lost**: acked, no result; **duplicated**: one id with more
than one distinct terminal result; **unexpected**: a result for an id never published.
Results are watched by one ``mosquitto_sub`` per node, so the kill leaves two watching.
**recover_s**: from the kill to the first result of a task submitted after it (clients
moved to a surviving node, the distributor took it, a worker ran it); **drain_s**: from
the kill until every acked task had its result.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.brokers.ejabberd import Ejabberd
from tests.brokers.rabbitmq import RabbitMQ
from tests.brokers.rig import Rig, ShellSub


class Cluster:
    """Private broker nodes joined into one cluster."""

    nodes: list[Any]

    def start(self) -> None:
        raise NotImplementedError

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def close(self) -> None:
        for n in self.nodes:
            n.close()


class RabbitCluster(Cluster):
    """Three private RabbitMQ nodes joined into one cluster."""

    def __init__(self, workdir: Path, size: int = 3) -> None:
        self.nodes = [RabbitMQ(workdir / f"rabbit{i}") for i in range(size)]

    def start(self) -> None:
        errors: list[BaseException] = []

        def boot(n: RabbitMQ) -> None:
            try:
                n.start()
            except BaseException as exc:  # reported below, after every node tried
                errors.append(exc)

        threads = [threading.Thread(target=boot, args=(n,)) for n in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        first = self.nodes[0]
        for n in self.nodes[1:]:
            n.join(first)
        r = first.ctl(
            "set_policy",
            "--apply-to",
            "queues",
            "mqtt-mirrored",
            "^mqtt-subscription-",
            '{"ha-mode":"all","ha-sync-mode":"automatic"}',
        )
        if r.returncode != 0:
            raise RuntimeError(f"set_policy: {r.stderr}")


class EjabberdCluster(Cluster):
    """Three private ejabberd nodes (mod_mqtt) joined with ``ejabberdctl join_cluster``."""

    def __init__(self, workdir: Path, size: int = 3) -> None:
        self.nodes = [Ejabberd(workdir / f"ejabberd{i}") for i in range(size)]

    def start(self) -> None:
        for n in self.nodes:
            n.start()
        first = self.nodes[0]
        for n in self.nodes[1:]:
            r = n.ctl("join_cluster", first.node, timeout=120)
            if r.returncode != 0:
                raise RuntimeError(f"join_cluster on {n.node}: {r.stdout}{r.stderr}")
        r = first.ctl("list_cluster")
        if any(n.node not in r.stdout for n in self.nodes):
            raise RuntimeError(f"ejabberd cluster incomplete: {r.stdout}")


@dataclass
class Accounting:
    acked: set[str] = field(default_factory=set)
    republished: int = 0
    results: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    kill_at: float = 0.0
    #: acked after the kill: submitted through a surviving node
    after_kill: set[str] = field(default_factory=set)
    #: seconds from the kill to the first result of a task submitted after it
    recover_s: float | None = None
    #: seconds from the kill until every acked task had its result
    drain_s: float | None = None

    @property
    def lost(self) -> set[str]:
        return self.acked - set(self.results)

    @property
    def duplicated(self) -> set[str]:
        return {k for k, v in self.results.items() if len(v) > 1}

    def unexpected(self, published: set[str]) -> set[str]:
        return set(self.results) - published

    def summary(self, published: set[str]) -> dict[str, Any]:
        return {
            "submitted": len(self.acked),
            "republished_batches": self.republished,
            "results": len(set(self.results) & self.acked),
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "unexpected": len(self.unexpected(published)),
            "recover_s": None if self.recover_s is None else round(self.recover_s, 2),
            "drain_s": None if self.drain_s is None else round(self.drain_s, 2),
        }


class NodeKill:
    """clawd (a distributor, two workers) on all three nodes' URLs; a producer publishing
    batches; node 0, the one every client reaches first, killed with kill -9 mid-run."""

    def __init__(self, cluster: Cluster, workdir: Path) -> None:
        self.cluster = cluster
        self.rig = Rig(cluster.nodes[0], workdir, urls=cluster.urls)
        self.published: set[str] = set()
        self.acc = Accounting()
        self.subs: list[ShellSub] = []

    def start(self) -> None:
        rig = self.rig
        rig.start_distributor()
        for wid in ("w1", "w2"):
            rig.start_worker(wid)
            rig.wait_worker_known(wid)
        for i, node in enumerate(self.cluster.nodes):
            rig.server = node
            args = rig.shell_args()
            s = ShellSub(args, "clawd/results/+", f"cluster-sub-{i}-{uuid.uuid4().hex[:6]}")
            s.wait_subscribed()
            self.subs.append(s)

    def _publish(self, batch: list[str]) -> None:
        lines = [json.dumps({"id": i, "type": "compute", "input": "6*7"}) for i in batch]
        self.published.update(batch)
        for attempt in range(60):
            # like a producer given the node list: the first node first, the next on refusal
            for node in self.cluster.nodes:
                self.rig.server = node
                r = self.rig.pub("clawd/tasks/normal", lines)
                if r.returncode == 0:
                    self.acc.acked.update(batch)
                    if self.acc.kill_at:
                        self.acc.after_kill.update(batch)
                    return
                self.acc.republished += 1
            time.sleep(min(0.1 * (attempt + 1), 1.0))  # every node refused: back off
        raise RuntimeError(f"no node acknowledged batch {batch[0]}..")

    def run(self, tasks: int = 600, batch: int = 10, kill_after: int = 200) -> dict[str, Any]:
        """Publish ``tasks`` in batches; kill -9 node 0 once ``kill_after`` were acked."""
        run = uuid.uuid4().hex[:6]
        ids = [f"c{run}-{i}" for i in range(tasks)]
        killed = False
        for k in range(0, tasks, batch):
            self._publish(ids[k : k + batch])
            if not killed and len(self.acc.acked) >= kill_after:
                self.acc.kill_at = time.time()
                self.cluster.nodes[0].kill()
                killed = True
        self._collect(set(self.acc.acked), timeout=120)
        return self.acc.summary(self.published)

    def _collect(self, ids: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._merge()
            if ids <= set(self.acc.results) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self._merge()

    def _merge(self) -> None:
        first_after: float | None = None
        last: float = 0.0
        for s in self.subs:
            for topic, payloads in list(s.seen.items()):
                tid = topic.rsplit("/", 1)[1]
                for p in payloads:
                    try:
                        doc = json.loads(p)
                    except ValueError:
                        continue
                    # the same result delivered twice is one result; a second run is not
                    key = f"{doc.get('status')}:{doc.get('finished_at')}:{doc.get('worker')}"
                    self.acc.results[tid].add(key)
                    fin = float(doc.get("finished_at") or 0)
                    last = max(last, fin)
                    fresh = tid in self.acc.after_kill
                    if fresh and (first_after is None or fin < first_after):
                        first_after = fin
        if self.acc.kill_at and first_after is not None:
            self.acc.recover_s = first_after - self.acc.kill_at
        if self.acc.kill_at and not self.acc.lost:
            self.acc.drain_s = last - self.acc.kill_at

    def close(self) -> None:
        for s in self.subs:
            s.close()
        self.rig.close()
