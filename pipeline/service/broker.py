"""What one waiting client sees of the broker: a restart (a new Redis run id: its queues are
gone) or a broker that has not answered for longer than the grace. The run id itself is read by
workers/broker_watch.py (one INFO a second per process); the client is handed that reader."""

from __future__ import annotations

import time
from collections.abc import Callable

BROKER_GRACE_S = 10.0  # how long a server's wait tolerates a broker that does not answer


class BrokerState:
    """What one wait has seen of the broker: its run id at first sight, and since when it is away."""

    def __init__(self, epoch: Callable[[], str | None] | None) -> None:
        self.epoch = epoch
        self.seen = epoch() if epoch is not None else None
        self.away_since: float | None = None

    @property
    def watched(self) -> bool:
        return self.epoch is not None

    def lost(self) -> str | None:
        """ "restarted" (a new run id since the last look), "unreachable" (for over the grace), or None."""
        if self.epoch is None:
            return None
        now = self.epoch()
        if now is None:
            self.away_since = self.away_since or time.monotonic()
            return "unreachable" if time.monotonic() - self.away_since > BROKER_GRACE_S else None
        self.away_since = None
        before, self.seen = self.seen, now
        return "restarted" if before is not None and before != now else None


def connection_error(error: BaseException) -> bool:
    """Whether ``error`` (raised while reading a result) says the result backend is unreachable."""
    return isinstance(error, (ConnectionError, OSError)) or "ConnectionError" in type(error).__name__
