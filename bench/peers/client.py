"""Producer for the Celery/Dramatiq rows: ``python client.py celery|dramatiq N RTT RUNS``.

Prints one JSON line per run: {"throughput": tasks/s, "rtt": [seconds, ...]}.
Throughput: send N no-op tasks as fast as possible, then fetch every result through
Redis. Round trip: send one, wait for its result, repeat RTT times.
"""

import json
import sys
import time


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


def main():
    which, n, rtt, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    many, one = celery_side() if which == "celery" else dramatiq_side()
    many(min(n, 200))  # warm up: connections, worker pools
    for _ in range(runs):
        start = time.perf_counter()
        many(n)
        throughput = n / (time.perf_counter() - start)
        times = []
        for _ in range(rtt):
            t = time.perf_counter()
            one()
            times.append(time.perf_counter() - t)
        print(json.dumps({"throughput": throughput, "rtt": times}), flush=True)


if __name__ == "__main__":
    main()
