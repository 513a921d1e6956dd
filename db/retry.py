"""Retrying a unit of database work while the database is briefly unreachable.

A finished turn must not be lost because PostgreSQL blinked: the aggregate task
retries its write (and the policy update and next-turn claim that go with it)
with jittered exponential backoff, for up to ``budget_s`` seconds, without
recomputing the turn. The work must be idempotent: turns are stored once and
sent once, so running it again after a half-finished attempt is safe.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

T = TypeVar("T")
log = logging.getLogger(__name__)

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 10.0


def unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the database could not be reached (worth retrying), not a bad query."""
    if isinstance(error, OperationalError):
        return True
    return isinstance(error, DBAPIError) and bool(error.connection_invalidated)


def with_retries(
    what: str, work: Callable[[], T], *, budget_s: float, sleep: Callable[[float], None] = time.sleep
) -> T:
    """``work()``, run again after each unreachable-database error until ``budget_s`` seconds have passed."""
    deadline = time.monotonic() + budget_s
    delay = FIRST_DELAY_S
    attempt = 1
    while True:
        try:
            return work()
        except Exception as error:
            left = deadline - time.monotonic()
            if not unreachable(error) or left <= 0:
                raise
            pause = min(delay * random.uniform(0.5, 1.0), left)
            log.warning("%s: database unreachable (try %d), again in %.1f s: %s", what, attempt, pause, error)
            sleep(pause)
            delay = min(delay * 2, MAX_DELAY_S)
            attempt += 1
