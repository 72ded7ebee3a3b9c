"""Producer for the peers' rows: ``python client.py celery|dramatiq|rq N RTT RUNS``.

Prints one JSON line per run: {"throughput": tasks/s, "rtt": [seconds, ...], "cpu_us":
{role: CPU µs per task}}. Throughput: send N no-op tasks as fast as possible, then fetch
every result from the result backend. Round trip: send one, wait for its result, repeat
RTT times. CPU: of this process and of the trees ``BENCH_CPU_PIDS`` names (cpu.py),
over the throughput part.
"""

import json
import os
import sys
import time

from cpu import Meter


def celery_side():
    from celery.result import ResultSet
    from celery_app import noop

    def many(n):
        rs = ResultSet([noop.delay() for _ in range(n)])
        rs.get(timeout=600, propagate=True)

    def one():
        noop.delay().get(timeout=30)

    return many, one


def dramatiq_side():
    from dramatiq_app import noop

    def many(n):
        messages = [noop.send() for _ in range(n)]
        for m in messages:
            m.get_result(block=True, timeout=600_000)

    def one():
        noop.send().get_result(block=True, timeout=30_000)

    return many, one


def rq_side():
    from redis import Redis
    from rq import Queue
    from rq_app import noop

    queue = Queue(connection=Redis.from_url(os.environ["BENCH_REDIS_URL"]))

    def wait(job):
        result = job.latest_result(timeout=600)
        if result is None or result.type != result.Type.SUCCESSFUL:
            raise RuntimeError(f"rq job {job.id}: {result and result.exc_string}")

    def many(n):
        for job in [queue.enqueue(noop) for _ in range(n)]:
            wait(job)

    def one():
        wait(queue.enqueue(noop))

    return many, one


SIDES = {"celery": celery_side, "dramatiq": dramatiq_side, "rq": rq_side}


def main():
    which, n, rtt, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    many, one = SIDES[which]()
    meter = Meter()
    many(min(n, 200))  # warm up: connections, worker pools
    for _ in range(runs):
        meter.start()
        start = time.perf_counter()
        many(n)
        throughput = n / (time.perf_counter() - start)
        cpu_us = meter.stop(n)
        times = []
        for _ in range(rtt):
            t = time.perf_counter()
            one()
            times.append(time.perf_counter() - t)
        print(json.dumps({"throughput": throughput, "rtt": times, "cpu_us": cpu_us}), flush=True)


if __name__ == "__main__":
    main()
