"""Batching the model calls of concurrent tasks: ``BatchingBackend``.

A worker with a threads pool runs several tasks at once, and each calls its
member's backend with one or a few prompts. A GPU answers a batch of eight in
about the time of one, so the batcher gathers those calls: every item (a prompt,
a score request) goes on one queue with its own future; one thread takes the
first item, which opens a window, and closes the batch when it holds
``max_batch`` items or ``window_s`` has passed since that item was queued. It
then calls the inner backend once for the batch (generate and score batches
apart) and hands each item's result, or the batch's exception, to its future.
Callers wait on their own items' futures, so results never cross callers and
keep their order within a call; a call larger than ``max_batch`` spans batches.
Other methods of the inner backend (``warm_up``, a judge's ``compare``) are
passed through unbatched.

Trade-off: a lone request waits out the window for company that may never come,
so the window bounds the latency added to it (default 20 ms, small beside a
model call). Items that queue while the model is busy wait no window: the next
batch runs as soon as the model is free. The inner backend is only ever called
from the batcher's thread, so one member model runs one batch at a time.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any, Literal

from pipeline.backend import Backend, Prompt, ScoreRequest
from pipeline.errors import BackendError, ConfigError

log = logging.getLogger(__name__)

Kind = Literal["generate", "score"]


@dataclass(frozen=True)
class BatchStats:
    """Counters of the inner calls one batcher made for one kind of item."""

    batches: int = 0  # inner calls
    items: int = 0  # prompts or score requests, over all batches
    largest: int = 0  # items in the largest batch
    seconds: float = 0.0  # spent in inner calls

    @property
    def mean(self) -> float:
        """Mean items per batch (0.0 before the first batch)."""
        return self.items / self.batches if self.batches else 0.0


@dataclass(frozen=True)
class _Item:
    kind: Kind
    payload: Prompt | ScoreRequest
    future: Future[Any]
    queued_at: float  # time.monotonic()


class BatchingBackend:
    """A Backend that runs ``inner`` on batches of the items of concurrent calls.

    ``max_batch``: items per inner call (>= 1); ``window_s``: seconds a batch
    stays open for more items after its first was queued (>= 0).
    """

    def __init__(self, inner: Backend, *, max_batch: int, window_s: float) -> None:
        if max_batch < 1:
            raise ConfigError(f"max_batch must be at least 1, got {max_batch}")
        if window_s < 0:
            raise ConfigError(f"window_s must not be negative, got {window_s}")
        self.inner = inner
        self.max_batch = max_batch
        self.window_s = window_s
        self._queue: queue.Queue[_Item] = queue.Queue()
        self._held: list[_Item] = []  # taken off the queue during a batch of the other kind
        self._stats: dict[Kind, BatchStats] = {"generate": BatchStats(), "score": BatchStats()}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def __getattr__(self, name: str) -> Any:
        """Anything else (``warm_up``, a judge's ``compare``, ``close``) goes straight to the inner backend."""
        if name == "inner":  # not set yet (during unpickling or a failed __init__)
            raise AttributeError(name)
        return getattr(self.inner, name)

    def generate(self, prompts: Sequence[Prompt]) -> list[str]:
        return self._submit("generate", prompts)

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        return self._submit("score", requests)

    def stats(self) -> dict[Kind, BatchStats]:
        """A snapshot of the counters, per kind of item."""
        with self._lock:
            return dict(self._stats)

    def _submit(self, kind: Kind, payloads: Sequence[Prompt] | Sequence[ScoreRequest]) -> list[Any]:
        """Queue each item with its own future; wait for all of them, in the call's order."""
        if not payloads:
            return []
        self._start_thread()
        now = time.monotonic()
        futures: list[Future[Any]] = []
        for payload in payloads:
            future: Future[Any] = Future()
            self._queue.put(_Item(kind, payload, future, now))
            futures.append(future)
        return [future.result() for future in futures]

    def _start_thread(self) -> None:
        """Start the batch thread on first use (and again in a forked child, where it is gone)."""
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="peerblend-batcher", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            self._execute(self._next_batch())

    def _next_batch(self) -> list[_Item]:
        """Block for a first item, then gather items of its kind until full or the window closes."""
        if not self._held:
            self._held.append(self._queue.get())
        kind = self._held[0].kind
        batch: list[_Item] = []
        rest: list[_Item] = []
        for item in self._held:
            (batch if item.kind == kind and len(batch) < self.max_batch else rest).append(item)
        self._held = rest
        closes = batch[0].queued_at + self.window_s
        while len(batch) < self.max_batch:
            try:  # past the window, timeout 0 still takes what is already queued
                item = self._queue.get(timeout=max(0.0, closes - time.monotonic()))
            except queue.Empty:
                break
            (batch if item.kind == kind else self._held).append(item)
        return batch

    def _execute(self, batch: list[_Item]) -> None:
        """One inner call for the batch; each future gets its result, or all get the error."""
        kind = batch[0].kind
        payloads: list[Any] = [item.payload for item in batch]
        started = time.perf_counter()
        try:
            results: list[Any]
            if kind == "generate":
                results = list(self.inner.generate(payloads))
            else:
                results = list(self.inner.score(payloads))
            if len(results) != len(batch):
                raise BackendError(f"backend returned {len(results)} results for a batch of {len(batch)}")
        except Exception as error:  # noqa: BLE001 - every caller of the batch records it
            log.debug("batch of %d %s items failed: %s", len(batch), kind, error)
            self._count(kind, len(batch), time.perf_counter() - started)
            for item in batch:
                item.future.set_exception(error)
            return
        # Counted before the results go out: a caller that returns sees its batch.
        self._count(kind, len(batch), time.perf_counter() - started)
        for item, result in zip(batch, results, strict=True):
            item.future.set_result(result)

    def _count(self, kind: Kind, size: int, seconds: float) -> None:
        with self._lock:
            stats = self._stats[kind]
            self._stats[kind] = replace(
                stats,
                batches=stats.batches + 1,
                items=stats.items + size,
                largest=max(stats.largest, size),
                seconds=stats.seconds + seconds,
            )


class SerializedBackend:
    """A Backend that lets one call at a time into ``inner``: a local model or tokenizer is not
    safe to call from several task threads at once (the tokenizer raised "Unable to create
    tensor" under concurrent calls). Used for local models when batching is off; the batcher
    already calls its model from one thread."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        """Anything else (``warm_up``, ``compare``) goes straight to the inner backend."""
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def generate(self, prompts: Sequence[Prompt]) -> list[str]:
        with self._lock:
            return self.inner.generate(prompts)

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        with self._lock:
            return self.inner.score(requests)
