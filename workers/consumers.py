"""Fail fast when a queue a turn needs has no worker: say which, instead of waiting in silence.

Asks the workers which queues they consume (Celery's control API: one broadcast,
answered within a second) and caches the answer briefly, so a burst of submissions
costs one broadcast.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from celery import Celery

from pipeline.committee import Committee
from pipeline.errors import ServiceUnavailable


class QueueCheck:
    """``check(members)`` raises ServiceUnavailable naming each member whose queue no worker consumes."""

    def __init__(self, app: Celery, committee: Committee, *, cache_s: float = 10.0, timeout_s: float = 1.0):
        self.app, self.committee = app, committee
        self.cache_s, self.timeout_s = cache_s, timeout_s
        self._lock = threading.Lock()
        self._consumed: set[str] = set()
        self._asked_at = float("-inf")

    def check(self, members: Iterable[str], default_queue: str) -> None:
        needed = {
            default_queue: "turn launches, aggregation",
            **{self.committee.member(m).queue: m for m in members},
        }
        missing = {q: who for q, who in needed.items() if q not in self._queues(fresh=False)}
        if missing:  # maybe a worker just started: ask again before refusing
            missing = {q: who for q, who in missing.items() if q not in self._queues(fresh=True)}
        if missing:
            named = ", ".join(f"{q} ({who})" for q, who in sorted(missing.items()))
            raise ServiceUnavailable(
                f"no worker consumes queue {named}; start one, e.g. "
                f"`celery -A workers.app worker -Q {','.join(sorted(missing))}`"
            )

    def _queues(self, *, fresh: bool) -> set[str]:
        with self._lock:
            if fresh or time.monotonic() - self._asked_at > self.cache_s:
                replies = self.app.control.inspect(timeout=self.timeout_s).active_queues() or {}
                self._consumed = {q["name"] for queues in replies.values() for q in queues}
                self._asked_at = time.monotonic()
            return set(self._consumed)
