"""The Dramatiq side of the comparison: a no-op actor, Redis broker, Results middleware.

Imported by the Dramatiq worker (``dramatiq dramatiq_app``) and by ``client.py``; runs in
the bench's own virtualenv, never in clawd's environment.
"""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

URL = os.environ["BENCH_REDIS_URL"]
broker = RedisBroker(url=URL)
broker.add_middleware(Results(backend=RedisBackend(url=URL)))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True, max_retries=0)
def noop():
    return None


@dramatiq.actor(store_results=True, max_retries=0)
def sleep(seconds):
    import time

    time.sleep(seconds)
