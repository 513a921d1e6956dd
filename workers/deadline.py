"""Calls with a deadline, for every pool: the task waits for its backend call at most ``timeout_s``.

The call runs on a helper thread; past the deadline the task stops waiting and
records a timeout. A hung backend call cannot be killed from Python: its thread is
left behind (daemon, so it never blocks shutdown) and the next call gets a new one;
a prefork worker's hard time limit (``workers.app``) replaces a child that stays stuck.

Each task thread keeps its helper between calls (starting a thread per call cost
three times as much CPU as handing a call to a waiting one: 86 against 27 us here).

The call can read its own deadline (``current_deadline``): a batcher that queues work
for it skips that work once nobody waits for it any more.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Timeout(Exception):
    """The call did not finish within its deadline."""

    def __init__(self, what: str, timeout_s: float) -> None:
        super().__init__(f"timeout: {what} gave no result within {timeout_s:g} s")
        self.timeout_s = timeout_s


class _Call:
    """One call handed to a helper, and what came of it."""

    def __init__(self, call: Callable[[], Any], deadline: float) -> None:
        self.call = call
        self.deadline = deadline  # time.monotonic() at which the task stops waiting
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class _Helper:
    """A daemon thread that runs the calls of one task thread, one at a time."""

    def __init__(self) -> None:
        self.pid = os.getpid()  # a forked child inherits this object but not its thread
        self.calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="peerblend-call", daemon=True).start()

    def _serve(self) -> None:
        while True:
            item = self.calls.get()
            _running.deadline = item.deadline
            try:
                item.value = item.call()
            except BaseException as error:  # noqa: BLE001 - handed to the waiting task
                item.error = error
            finally:
                _running.deadline = None
                item.done.set()


_helpers = threading.local()
_running = threading.local()  # on a helper thread: the deadline of the call it runs


def current_deadline() -> float | None:
    """The ``time.monotonic()`` at which the task waiting for the call running on this thread
    stops waiting; None outside ``call_with_deadline``."""
    deadline: float | None = getattr(_running, "deadline", None)
    return deadline


def call_with_deadline(what: str, timeout_s: float, call: Callable[[], T]) -> T:
    """``call()``'s result, or ``Timeout`` after ``timeout_s`` seconds; its exceptions pass through."""
    helper: _Helper | None = getattr(_helpers, "helper", None)
    if helper is None or helper.pid != os.getpid():
        helper = _helpers.helper = _Helper()
    item = _Call(call, time.monotonic() + timeout_s)
    helper.calls.put(item)
    if not item.done.wait(timeout_s):
        _helpers.helper = None  # busy with the late call for good, maybe: the next call gets a new one
        raise Timeout(what, timeout_s)
    if item.error is not None:
        raise item.error
    return item.value  # type: ignore[no-any-return]
