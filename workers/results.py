"""The Redis result backend of peerblend's app: Celery's, except that a worker sending a canvas
subscribes to none of its results.

Celery subscribes whoever applies a canvas to the result channel of each task in it (its
result sets wait on their members): a SUBSCRIBE per task, a waiter kept per task, and
Redis publishing each of those results to a process that never reads them. A worker
sends canvases and never waits on them: the next turn's canvas (``workers.dispatch``)
and a chord's body, which Celery sends from the worker that finishes the header's last
task (``on_chord_part_return``). Inside ``sending_only()`` this backend subscribes to
nothing; everywhere else (a client waiting on a turn) it is Celery's own.

It also tells ``pipeline.service.canvas`` that a chord's header results need not be stored:
this backend hands each header result to the chord's own list as the task returns
(``stashes_chord_results``), so the results of answers and reviews, which nobody
fetches by task id, are not written a second time (the embedded cache backend joins a
chord by reading each stored result, so it keeps them).

Selected for the ``redis://`` and ``rediss://`` result backend URLs by ``workers.app``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from celery.backends.redis import RedisBackend

_sending_only: ContextVar[bool] = ContextVar("peerblend_sending_only", default=False)


@contextmanager
def sending_only() -> Iterator[None]:
    """Within: results of what this thread sends are not subscribed to (nothing here waits on them)."""
    token = _sending_only.set(True)
    try:
        yield
    finally:
        _sending_only.reset(token)


class SendingRedisBackend(RedisBackend):
    """Celery's Redis result backend; no result subscriptions while ``sending_only()``."""

    stashes_chord_results = True

    def add_pending_result(self, result: Any, weak: bool = False, start_drainer: bool = True) -> Any:
        if _sending_only.get():
            return result
        return super().add_pending_result(result, weak=weak, start_drainer=start_drainer)

    def on_chord_part_return(self, request: Any, state: Any, result: Any, **kwargs: Any) -> Any:
        with sending_only():  # the worker finishing a header sends the body: it never waits on it
            return super().on_chord_part_return(request, state, result, **kwargs)
