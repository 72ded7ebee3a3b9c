"""The reference limit: the same four MQTT hops as clawd, with nothing else.

producer -> dispatcher -> worker (one of 2, round robin) -> dispatcher -> producer, one
message per hop, QoS 1, no durability, no decoding. Dispatcher and workers are separate
processes like clawd's: ``python -m bench.raw_pipeline dispatcher|worker PORT [INDEX]``.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import threading
from typing import Any

from bench.infra import ROOT
from bench.mqtt_producer import Producer, connect, subscribe

WORKERS = 2
PREFIX = "rawbench"


def dispatcher(port: int) -> None:
    turn = itertools.cycle(range(WORKERS))

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        topic = msg.topic
        if topic == f"{PREFIX}/tasks":
            client.publish(f"{PREFIX}/w/{next(turn)}", msg.payload, qos=1)
        else:  # rawbench/done/<worker>: payload is the task id
            client.publish(f"{PREFIX}/results/{msg.payload.decode()}", b"null", qos=1)

    c = connect(port, "raw-dispatcher", on_message)
    subscribe(c, f"{PREFIX}/tasks")
    subscribe(c, f"{PREFIX}/done/+")
    _serve()


def worker(port: int, index: int) -> None:
    done = f"{PREFIX}/done/{index}"

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        client.publish(done, msg.payload, qos=1)  # the no-op "task"

    c = connect(port, f"raw-worker-{index}", on_message)
    subscribe(c, f"{PREFIX}/w/{index}")
    _serve()


def _serve() -> None:
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()


class RawPipeline:
    """Dispatcher and workers as processes, plus a producer in this process."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.procs: list[subprocess.Popen[str]] = []

    def start(self) -> Producer:
        roles = [["dispatcher"]] + [["worker", str(i)] for i in range(WORKERS)]
        for role in roles:
            p = subprocess.Popen(
                [sys.executable, "-m", "bench.raw_pipeline", role[0], str(self.port), *role[1:]],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            self.procs.append(p)
        for p in self.procs:
            if p.stdout is None or p.stdout.readline().strip() != "ready":
                raise RuntimeError("raw pipeline process failed to start")
        return Producer(
            self.port,
            topic_for=lambda _id: f"{PREFIX}/tasks",
            payload_for=str.encode,
            result_filter=f"{PREFIX}/results/+",
        )

    def stop(self) -> None:
        from bench.infra import stop

        for p in self.procs:
            stop(p)  # type: ignore[arg-type]


if __name__ == "__main__":
    if sys.argv[1] == "dispatcher":
        dispatcher(int(sys.argv[2]))
    else:
        worker(int(sys.argv[2]), int(sys.argv[3]))
