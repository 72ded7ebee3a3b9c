"""Scale-out client for the peers: ``python scale_client.py celery|dramatiq|rq N MIX``.

Submits N sleeping tasks at once (``MIX`` "uniform": 50 ms each; "mixed": every tenth
500 ms, the rest 5 ms), waits for every result, and prints one JSON line:
{"seconds": from the first submission to the last result, "cpu_us": CPU µs per task of
every process, by role (cpu.py)}. A warm-up of a few tasks runs first.
"""

import json
import os
import sys
import time

from cpu import Meter


def durations(n, mix):
    if mix == "uniform":
        return [0.05] * n
    return [0.5 if i % 10 == 0 else 0.005 for i in range(n)]


def main():
    which, n, mix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if which == "celery":
        from celery.result import ResultSet
        from celery_app import sleep

        def many(ds):
            ResultSet([sleep.delay(d) for d in ds]).get(timeout=600, propagate=True)

    elif which == "rq":
        from redis import Redis
        from rq import Queue
        from rq_app import sleep

        queue = Queue(connection=Redis.from_url(os.environ["BENCH_REDIS_URL"]))

        def many(ds):
            for job in [queue.enqueue(sleep, d) for d in ds]:
                if job.latest_result(timeout=600) is None:
                    raise RuntimeError(f"rq job {job.id}: no result")

    else:
        from dramatiq_app import sleep

        def many(ds):
            for m in [sleep.send(d) for d in ds]:
                m.get_result(block=True, timeout=600_000)

    many([0.001] * 20)
    meter = Meter()
    meter.start()
    start = time.perf_counter()
    many(durations(n, mix))
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "cpu_us": meter.stop(n)}), flush=True)


if __name__ == "__main__":
    main()
