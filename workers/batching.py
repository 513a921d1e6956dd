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

What a GPU would waste otherwise:

- An item past its deadline (its task stopped waiting, ``workers.deadline``) or
  cancelled is dropped, not run. A backend that takes ``deadlines`` (declares
  ``takes_deadlines``) stops each row at its own item's deadline, not the batch's.
- Generations join a batch only if its token limits stay within ``LENGTH_RATIO``
  of each other: a short ballot does not wait out a long fusion's steps.
- Out of memory: the batch is split in halves and each half retried (down to one
  item, which then gets the error); the batcher's limit drops to the half that
  failed's size and doubles back after ``recover_after`` good batches; the
  accelerator's cached blocks are freed. Every caller gets its own result or error.

Trade-off: a lone request waits out the window for company that may never come,
so the window bounds the latency added to it (default 20 ms, small beside a
model call). Items that queue while the model is busy wait no window: the next
batch runs as soon as the model is free. The inner backend is only ever called
from the batcher's thread, so one member model runs one batch at a time.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pipeline.backend import Backend, Prompt, ScoreRequest
from pipeline.errors import BackendError, ConfigError
from workers.deadline import current_deadline

log = logging.getLogger(__name__)

Kind = Literal["generate", "score"]

# Generations share a batch while its longest token limit is at most this many times its
# shortest; limits under LENGTH_FLOOR count as LENGTH_FLOOR (a few steps cost little).
LENGTH_RATIO = 4
LENGTH_FLOOR = 16


@dataclass(frozen=True)
class BatchStats:
    """Counters of the inner calls one batcher made for one kind of item."""

    batches: int = 0  # inner calls
    items: int = 0  # prompts or score requests, over all batches
    largest: int = 0  # items in the largest batch
    seconds: float = 0.0  # spent in inner calls
    out_of_memory: int = 0  # inner calls that ran out of memory (their items were retried in halves)
    expired: int = 0  # items dropped unrun: their caller had stopped waiting

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
    deadline: float | None  # time.monotonic() at which its caller stops waiting; None: never

    @property
    def length(self) -> int:
        """Decoding steps it may take (a score request takes none)."""
        payload = self.payload
        return max(payload.max_new_tokens, LENGTH_FLOOR) if isinstance(payload, Prompt) else 0


@dataclass
class _Batch:
    """Items gathered for one inner call: one kind, at most ``limit``, lengths within LENGTH_RATIO."""

    kind: Kind
    limit: int
    items: list[_Item] = field(default_factory=list)

    def take(self, item: _Item) -> bool:
        """Add ``item`` if it fits; whether it did."""
        if item.kind != self.kind or len(self.items) >= self.limit:
            return False
        lengths = [i.length for i in self.items] + [item.length]
        if max(lengths) > LENGTH_RATIO * min(lengths):
            return False
        self.items.append(item)
        return True


class BatchingBackend:
    """A Backend that runs ``inner`` on batches of the items of concurrent calls.

    ``max_batch``: items per inner call (>= 1); ``window_s``: seconds a batch
    stays open for more items after its first was queued (>= 0); ``timeout_s``: the
    longest a caller waits for an item (the member's time limit; None: no bound),
    also bounded by the caller's own ``workers.deadline``; ``recover_after``: good
    batches after which a limit lowered by running out of memory doubles back.
    """

    def __init__(
        self,
        inner: Backend,
        *,
        max_batch: int,
        window_s: float,
        timeout_s: float | None = None,
        recover_after: int = 16,
    ) -> None:
        if max_batch < 1:
            raise ConfigError(f"max_batch must be at least 1, got {max_batch}")
        if window_s < 0:
            raise ConfigError(f"window_s must not be negative, got {window_s}")
        self.inner = inner
        self.max_batch = max_batch
        self.window_s = window_s
        self.timeout_s = timeout_s
        self.recover_after = recover_after
        self.limit = max_batch  # items per inner call now: lower for a while after running out of memory
        self._good = 0  # batches run well since the limit was last lowered
        self._queue: queue.Queue[_Item] = queue.Queue()
        self._held: list[_Item] = []  # taken off the queue but left out of a batch (kind or length)
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
        deadlines = [d for d in (current_deadline(), self.timeout_s and now + self.timeout_s) if d]
        deadline = min(deadlines, default=None)
        futures: list[Future[Any]] = []
        for payload in payloads:
            future: Future[Any] = Future()
            self._queue.put(_Item(kind, payload, future, now, deadline))
            futures.append(future)
        try:
            return [future.result() for future in futures]
        finally:  # left early (an exception while waiting): what has not started never will
            for future in futures:
                future.cancel()

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
            batch = self._next_batch()
            self._execute(batch.kind, self._live(batch.items))

    def _next_batch(self) -> _Batch:
        """Block for a first item, then gather items that fit beside it until full or the window closes."""
        if not self._held:
            self._held.append(self._queue.get())
        batch = _Batch(self._held[0].kind, self.limit)
        self._held = [item for item in self._held if not batch.take(item)]
        closes = batch.items[0].queued_at + self.window_s
        while len(batch.items) < batch.limit:
            try:  # past the window, timeout 0 still takes what is already queued
                item = self._queue.get(timeout=max(0.0, closes - time.monotonic()))
            except queue.Empty:
                break
            if not batch.take(item):
                self._held.append(item)
        return batch

    def _live(self, items: list[_Item]) -> list[_Item]:
        """The items still awaited, marked running; the others are dropped unrun."""
        now = time.monotonic()
        live = []
        for item in items:
            if not item.future.set_running_or_notify_cancel():
                continue  # cancelled: its caller left while waiting
            if item.deadline is not None and now >= item.deadline:
                item.future.set_exception(BackendError("timeout: the call stopped waiting before its turn"))
            else:
                live.append(item)
        if len(live) < len(items):
            self._count(items[0].kind, expired=len(items) - len(live))
        return live

    def _call_inner(self, kind: Kind, items: list[_Item]) -> list[Any]:
        payloads: list[Any] = [item.payload for item in items]
        results: list[Any]
        if kind == "score":
            results = list(self.inner.score(payloads))
        elif getattr(self.inner, "takes_deadlines", False):
            results = list(self.inner.generate(payloads, deadlines=[i.deadline for i in items]))  # type: ignore[call-arg]
        else:
            results = list(self.inner.generate(payloads))
        if len(results) != len(items):
            raise BackendError(f"backend returned {len(results)} results for a batch of {len(items)}")
        return results

    def _execute(self, kind: Kind, items: list[_Item]) -> None:
        """One inner call for the items; each future gets its result, or all get the error.

        Out of memory, the items are retried in two halves (see the module docstring).
        """
        if not items:
            return
        started = time.perf_counter()
        try:
            results = self._call_inner(kind, items)
        except Exception as error:  # noqa: BLE001 - every caller of the batch records it
            out_of_memory = _is_out_of_memory(error)
            if out_of_memory:  # its traceback holds the failed call's frames, and with them its tensors
                error.__traceback__ = None
            self._count(kind, batches=1, items=len(items), seconds=time.perf_counter() - started)
            if out_of_memory:
                self._out_of_memory(kind, len(items))
            if out_of_memory and len(items) > 1:
                half = len(items) // 2
                self._execute(kind, items[:half])
                self._execute(kind, items[half:])
                return
            log.debug("batch of %d %s items failed: %s", len(items), kind, error)
            for item in items:
                item.future.set_exception(error)
            return
        # Counted before the results go out: a caller that returns sees its batch.
        self._count(kind, batches=1, items=len(items), seconds=time.perf_counter() - started)
        self._recover()
        for item, result in zip(items, results, strict=True):
            item.future.set_result(result)

    def _out_of_memory(self, kind: Kind, size: int) -> None:
        """Lower the limit below the size that failed, and give the cached blocks back."""
        self.limit = max(1, min(self.limit, size // 2))
        self._good = 0
        self._count(kind, out_of_memory=1)
        _free_accelerator_memory()
        log.warning(
            "out of memory on a batch of %d %s items: retrying in halves; at most %d items per batch "
            "for the next %d batches",
            size,
            kind,
            self.limit,
            self.recover_after,
        )

    def _recover(self) -> None:
        """After ``recover_after`` good batches under a lowered limit, double it (up to ``max_batch``)."""
        if self.limit >= self.max_batch:
            return
        self._good += 1
        if self._good >= self.recover_after:
            self.limit, self._good = min(self.max_batch, 2 * self.limit), 0
            log.info("batch limit back up to %d items", self.limit)

    def _count(
        self,
        kind: Kind,
        *,
        batches: int = 0,
        items: int = 0,
        seconds: float = 0.0,
        out_of_memory: int = 0,
        expired: int = 0,
    ) -> None:
        with self._lock:
            stats = self._stats[kind]
            self._stats[kind] = replace(
                stats,
                batches=stats.batches + batches,
                items=stats.items + items,
                largest=max(stats.largest, items),
                seconds=stats.seconds + seconds,
                out_of_memory=stats.out_of_memory + out_of_memory,
                expired=stats.expired + expired,
            )


def _is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is torch's out-of-memory error (torch is not imported here for it)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(error, torch.OutOfMemoryError)


def _free_accelerator_memory() -> None:
    """Hand the CUDA allocator's cached blocks back, where CUDA is in use in this process."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


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
