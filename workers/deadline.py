"""Calls with a deadline, for every pool: the task waits for its backend call at most ``timeout_s``.

The call runs on a daemon thread; past the deadline the task stops waiting and
records a timeout. A hung backend call cannot be killed from Python: its thread
is left behind (daemon, so it never blocks shutdown), and a prefork worker's
hard time limit (``workers.app``) replaces a child that stays stuck.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Timeout(Exception):
    """The call did not finish within its deadline."""

    def __init__(self, what: str, timeout_s: float) -> None:
        super().__init__(f"timeout: {what} gave no result within {timeout_s:g} s")
        self.timeout_s = timeout_s


def call_with_deadline(what: str, timeout_s: float, call: Callable[[], T]) -> T:
    """``call()``'s result, or ``Timeout`` after ``timeout_s`` seconds; its exceptions pass through."""
    outcome: list[T] = []
    failure: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as error:  # noqa: BLE001 - handed to the waiting task
            failure.append(error)
        finally:
            done.set()

    threading.Thread(target=run, name=f"peerblend-call-{what}", daemon=True).start()
    if not done.wait(timeout_s):
        raise Timeout(what, timeout_s)
    if failure:
        raise failure[0]
    return outcome[0]
