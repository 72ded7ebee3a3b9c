"""The configuration every simulated run uses: clawd's own, with short timers.

Short leases, backoffs, breaker windows and (where the distributor has it) a short
``forget_after``, so one run of a minute of simulated time covers many leases, retries,
breaker cycles and forgotten workers. The seed picks the strategy and the concurrency.
"""

from __future__ import annotations

import random

import msgspec

from clawd.config import Config, DistributorConfig

#: a departed worker is forgotten (its retained topics cleared) this soon, where the
#: distributor forgets departed workers at all
FORGET = {"forget_after": 8.0} if "forget_after" in DistributorConfig.__struct_fields__ else {}
STRATEGIES = ("round_robin", "least_loaded", "hash", "fastest")


def sim_config(rng: random.Random, state_dir: str) -> Config:
    """Short timers, so a run covers many leases, retries and breaker cycles."""
    return msgspec.convert(
        {
            "daemon": {"state_dir": state_dir},
            "worker": {"id": "w0", "concurrency": rng.choice((1, 2, 4))},
            "distributor": {
                "strategy": rng.choice(STRATEGIES),
                "liveness_timeout": 3.0,
                "poison_after": 3,
                **FORGET,
            },
            "retry": {"max_attempts": 4, "backoff_base": 0.1, "backoff_cap": 2.0},
            "breakers": {
                "window": 10,
                "minimum_calls": 5,
                "open_seconds": 2.0,
                "half_open_calls": 2,
                "eject_after": 4,
                "eject_seconds": 3.0,
                "hold_seconds": 20.0,
            },
        },
        Config,
    )
