"""Notice, while waiting for a turn, that the broker lost it.

Redis runs without persistence here (as in most Celery deployments): when it restarts, every
queued and unacknowledged message is gone, and a turn whose messages were there never finishes.
A waiting client cannot see its messages (they may sit in a worker's prefetch), but it can see
the restart: Redis gives each start of the server a new ``run_id``. One ``INFO server`` a second
per process, shared by every waiting thread.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

log = logging.getLogger(__name__)


class BrokerWatch:
    """``epoch()``: the Redis broker's current run id, or None while it cannot be reached."""

    def __init__(self, broker_url: str, *, cache_s: float = 1.0, timeout_s: float = 1.0) -> None:
        self.cache_s = cache_s
        self._redis = redis.Redis.from_url(
            broker_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._lock = threading.Lock()
        self._epoch: str | None = None
        self._asked_at = float("-inf")

    def epoch(self) -> str | None:
        with self._lock:
            if time.monotonic() - self._asked_at > self.cache_s:
                self._epoch = self._ask()
                self._asked_at = time.monotonic()
            return self._epoch

    def _ask(self) -> str | None:
        try:
            return str(self._redis.info("server")["run_id"])
        except (redis.RedisError, OSError, KeyError) as error:
            log.debug("broker unreachable: %s", error)
            return None


def broker_watch(broker_url: str | None) -> BrokerWatch | None:
    """A watch for a Redis broker; None for the embedded memory broker (it cannot restart alone)
    or a broker this module does not know."""
    if broker_url and broker_url.startswith(("redis://", "rediss://", "unix://")):
        return BrokerWatch(broker_url)
    return None
