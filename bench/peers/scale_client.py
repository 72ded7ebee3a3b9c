"""Scale-out client for the peers: ``python scale_client.py celery|dramatiq N MIX``.

Submits N sleeping tasks at once (``MIX`` "uniform": 50 ms each; "mixed": every tenth
500 ms, the rest 5 ms), waits for every result, and prints one JSON line:
{"seconds": from the first submission to the last result}. A warm-up of a few tasks
runs first.
"""

import json
import sys
import time


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

    else:
        from dramatiq_app import sleep

        def many(ds):
            for m in [sleep.send(d) for d in ds]:
                m.get_result(block=True, timeout=600_000)

    many([0.001] * 20)
    start = time.perf_counter()
    many(durations(n, mix))
    print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)


if __name__ == "__main__":
    main()
