"""The RQ side of the comparison: a no-op job and a sleeping one, on Redis.

Imported by the RQ workers (``rq worker-pool``, whose workers fork a work horse per job,
RQ's default) and by ``client.py``; runs in the bench's own virtualenv.
"""

import time


def noop():
    return None


def sleep(seconds):
    time.sleep(seconds)
