"""The Celery side of the comparison: a no-op task, Redis broker and result backend, or
RabbitMQ (``BENCH_BROKER_URL``) with its own reply queues for results (``rpc://``).

Imported by the Celery worker (``celery -A celery_app worker``) and by ``client.py``;
runs in the bench's own virtualenv, never in clawd's environment.
"""

import os

from celery import Celery

URL = os.environ.get("BENCH_BROKER_URL") or os.environ["BENCH_REDIS_URL"]
BACKEND = os.environ.get("BENCH_BACKEND_URL") or URL
app = Celery("bench", broker=URL, backend=BACKEND)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="noop")
def noop():
    return None


# scale-out (bench/scaleout.py): acks_late when asked, and a task that sleeps
app.conf.task_acks_late = os.environ.get("BENCH_ACKS_LATE") == "1"


@app.task(name="sleep")
def sleep(seconds):
    import time

    time.sleep(seconds)
