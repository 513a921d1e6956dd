"""Batching concurrent backend calls: every caller gets exactly its own results.

Unit tests drive ``BatchingBackend`` from many threads over a recording fake
backend; the integration test blends many conversations at once through an
embedded deployment with ``batch_max=8``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.backend import Message, Prompt, ScoreRequest
from pipeline.errors import BackendError, ConfigError
from pipeline.service.settings import Settings
from tests.conftest import scripted_committee
from workers.batching import BatchingBackend, SerializedBackend
from workers.runtime import runtime_of


class Recorder:
    """Inner backend: echoes each prompt's last message reversed, scores a continuation
    "<n>" as -n, and records the size of every call. A prompt "boom" fails its batch."""

    def __init__(self) -> None:
        self.sizes: dict[str, list[int]] = {"generate": [], "score": []}
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def _record(self, kind: str, size: int) -> None:
        with self._lock:
            self.sizes[kind].append(size)
            self.threads.add(threading.current_thread().name)

    def generate(self, prompts: Sequence[Prompt]) -> list[str]:
        self._record("generate", len(prompts))
        if any(p.messages[-1].content == "boom" for p in prompts):
            raise BackendError("GPU on fire")
        return [p.messages[-1].content[::-1] for p in prompts]

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        self._record("score", len(requests))
        return [-float(r.continuation) for r in requests]


def _prompt(text: str) -> Prompt:
    return Prompt(messages=(Message("user", text),))


def _score_request(n: int) -> ScoreRequest:
    return ScoreRequest(prompt=_prompt("q"), continuation=str(n))


def _all_at_once(calls: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run each call on its own thread, released together; their results (or exceptions) in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait()
        try:
            return call()
        except Exception as error:  # noqa: BLE001 - returned for the test to inspect
            return error

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def _generate_calls(batcher: BatchingBackend, sizes: Sequence[int]) -> tuple[list[Any], list[list[str]]]:
    """One generate call per size, with prompts unique to the caller; (calls, texts asked)."""
    texts = [[f"caller {i} prompt {j}" for j in range(size)] for i, size in enumerate(sizes)]
    calls = [lambda t=t: batcher.generate([_prompt(x) for x in t]) for t in texts]
    return calls, texts


def test_thirty_two_concurrent_callers_each_get_their_own_outputs_in_order() -> None:
    inner = Recorder()
    batcher = BatchingBackend(inner, max_batch=8, window_s=0.05)
    sizes = [1 + i % 3 for i in range(32)]
    calls, texts = _generate_calls(batcher, sizes)

    results = _all_at_once(calls)

    assert results == [[x[::-1] for x in t] for t in texts]
    assert sum(inner.sizes["generate"]) == sum(sizes)
    assert max(inner.sizes["generate"]) > 1  # it did batch
    assert max(inner.sizes["generate"]) <= 8
    assert inner.threads == {"peerblend-batcher"}  # the inner backend runs on the batch thread only
    stats = batcher.stats()["generate"]
    assert (stats.batches, stats.items, stats.largest) == (
        len(inner.sizes["generate"]),
        sum(sizes),
        max(inner.sizes["generate"]),
    )


def test_thirty_two_concurrent_scorers_each_get_their_own_scores_in_order() -> None:
    inner = Recorder()
    batcher = BatchingBackend(inner, max_batch=8, window_s=0.05)
    numbers = [[10 * i + j for j in range(1 + i % 3)] for i in range(32)]
    calls = [lambda ns=ns: batcher.score([_score_request(n) for n in ns]) for ns in numbers]

    results = _all_at_once(calls)

    assert results == [[-float(n) for n in ns] for ns in numbers]
    assert 1 < max(inner.sizes["score"]) <= 8
    assert batcher.stats()["score"].items == sum(len(ns) for ns in numbers)


class Slow(Recorder):
    def generate(self, prompts: Sequence[Prompt]) -> list[str]:
        time.sleep(0.05)
        return super().generate(prompts)


def test_stats_count_the_time_spent_in_the_model() -> None:
    batcher = BatchingBackend(Slow(), max_batch=4, window_s=0.0)

    batcher.generate([_prompt("a")])
    batcher.generate([_prompt("b")])

    stats = batcher.stats()
    assert stats["generate"].batches == 2
    assert stats["generate"].seconds >= 0.1
    assert stats["score"].seconds == 0.0


class Judge(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.warmed = False

    def warm_up(self) -> None:
        self.warmed = True

    def compare(self, context: str, first: str, second: str) -> float:
        return 0.75


def test_other_methods_of_the_inner_backend_pass_through() -> None:
    inner = Judge()
    batcher = BatchingBackend(inner, max_batch=4, window_s=0.0)

    batcher.warm_up()

    assert inner.warmed
    assert batcher.compare("q", "a", "b") == 0.75
    assert not hasattr(BatchingBackend(Recorder(), max_batch=4, window_s=0.0), "compare")


def test_the_worker_batches_only_backends_that_batch_their_calls(tmp_path: Any) -> None:
    from workers.runtime import Runtime

    committee = scripted_committee(2, name="batch-choice", member_options={"m0": {"batch": True}})
    runtime = Runtime(Settings(home=tmp_path, batch_max=8), committee)

    batched, direct = (runtime.backend(m) for m in committee.members)

    assert isinstance(batched, BatchingBackend) and batched.max_batch == 8
    assert not isinstance(direct, BatchingBackend)
    unbatched = Runtime(Settings(home=tmp_path, batch_max=1), committee).backend(committee.members[0])
    assert not isinstance(unbatched, BatchingBackend)
    # With batching off a local model is still called by one task thread at a time
    assert isinstance(unbatched, SerializedBackend)
    assert not isinstance(direct, SerializedBackend)  # a backend that does not batch is left alone


class Overlaps(Recorder):
    """Counts how many calls are inside the model at once."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = 0
        self.most_inside = 0

    def generate(self, prompts: Sequence[Prompt]) -> list[str]:
        with self._lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        time.sleep(0.01)
        with self._lock:
            self.inside -= 1
        return super().generate(prompts)


def test_a_serialized_backend_lets_one_call_in_at_a_time() -> None:
    inner = Overlaps()
    backend = SerializedBackend(inner)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: backend.generate([_prompt(f"q{i}")]), range(32)))

    assert answers == [[f"q{i}"[::-1]] for i in range(32)]
    assert inner.most_inside == 1


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=12),
    max_batch=st.integers(min_value=1, max_value=6),
)
def test_any_mix_of_call_sizes_gives_each_caller_its_own_outputs(sizes: list[int], max_batch: int) -> None:
    inner = Recorder()
    batcher = BatchingBackend(inner, max_batch=max_batch, window_s=0.005)
    calls, texts = _generate_calls(batcher, sizes)

    results = _all_at_once(calls)

    assert results == [[x[::-1] for x in t] for t in texts]
    assert max(inner.sizes["generate"]) <= max_batch
    assert sum(inner.sizes["generate"]) == sum(sizes)


def test_generate_and_score_calls_at_once_are_batched_apart() -> None:
    inner = Recorder()
    batcher = BatchingBackend(inner, max_batch=4, window_s=0.05)
    generate_calls, texts = _generate_calls(batcher, [2] * 8)
    score_calls = [lambda n=n: batcher.score([_score_request(n)]) for n in range(8)]

    # Given generate and score calls interleaved, all released together
    results = _all_at_once([c for pair in zip(generate_calls, score_calls, strict=True) for c in pair])

    # Then each kind went to its own inner calls (Recorder.score would fail on a prompt's text)
    assert results[0::2] == [[x[::-1] for x in t] for t in texts]
    assert results[1::2] == [[-float(n)] for n in range(8)]
    assert sum(inner.sizes["generate"]) == 16 and sum(inner.sizes["score"]) == 8


def test_a_call_larger_than_max_batch_is_split_and_keeps_its_order() -> None:
    inner = Recorder()
    batcher = BatchingBackend(inner, max_batch=4, window_s=0.01)
    texts = [f"prompt {i}" for i in range(10)]

    results = batcher.generate([_prompt(t) for t in texts])

    assert results == [t[::-1] for t in texts]
    assert len(inner.sizes["generate"]) >= 3 and max(inner.sizes["generate"]) <= 4


def test_an_inner_error_reaches_every_caller_of_its_batch_and_the_batcher_goes_on() -> None:
    inner = Recorder()
    # A long window: the batch closes only once all four items are in, so they share it.
    batcher = BatchingBackend(inner, max_batch=4, window_s=5.0)
    calls = [lambda t=t: batcher.generate([_prompt(t)]) for t in ("a", "boom", "c", "d")]

    results = _all_at_once(calls)

    assert inner.sizes["generate"] == [4]
    assert all(isinstance(r, BackendError) and "GPU on fire" in str(r) for r in results)
    # Then the next batch runs as usual
    assert _all_at_once([lambda t=t: batcher.generate([_prompt(t)]) for t in "wxyz"]) == [
        ["w"],
        ["x"],
        ["y"],
        ["z"],
    ]
    assert batcher.stats()["generate"].batches == 2


def test_a_full_batch_does_not_wait_for_the_window() -> None:
    batcher = BatchingBackend(Recorder(), max_batch=2, window_s=30.0)
    started = time.monotonic()

    assert _all_at_once([lambda: batcher.generate([_prompt("ab")])] * 2) == [["ba"], ["ba"]]
    assert time.monotonic() - started < 10.0


def test_a_lone_call_runs_when_its_window_closes() -> None:
    inner = Recorder()
    batcher = BatchingBackend(inner, max_batch=8, window_s=0.02)

    assert batcher.generate([_prompt("abc")]) == ["cba"]
    assert batcher.score([]) == [] and batcher.generate([]) == []
    assert inner.sizes == {"generate": [1], "score": []}


def test_max_batch_one_is_no_batching() -> None:
    inner, direct = Recorder(), Recorder()
    batcher = BatchingBackend(inner, max_batch=1, window_s=0.05)
    calls, texts = _generate_calls(batcher, [1, 2, 3, 1, 2, 3])

    results = _all_at_once(calls)

    assert results == [direct.generate([_prompt(x) for x in t]) for t in texts]
    assert set(inner.sizes["generate"]) == {1}
    assert batcher.stats()["generate"].largest == 1


@pytest.mark.parametrize("max_batch, window_s", [(0, 0.02), (4, -1.0)])
def test_bad_batching_settings_are_refused(max_batch: int, window_s: float) -> None:
    with pytest.raises(ConfigError):
        BatchingBackend(Recorder(), max_batch=max_batch, window_s=window_s)


def test_batching_never_mixes_up_answers_of_concurrent_conversations(
    _deployment: dict[str, Any], tmp_path: Any
) -> None:
    from workers.embedded import connect

    # Given: no shared embedded deployment running (one per process: Celery resolves some
    # signatures through the current app), then our own with batching on
    if _deployment:
        _deployment.pop("manager").__exit__(None, None, None)
        _deployment.clear()
    committee = scripted_committee(3, member_options={f"m{i}": {"batch": True} for i in range(3)})
    conversations = [[f"conversation {c} question {q}?" for q in range(1 + c % 4)] for c in range(12)]
    config = Settings(home=tmp_path, batch_max=8, batch_window_ms=100, embedded_concurrency=36)
    with connect(config, committee) as client:
        # When: twelve conversations of one to four turns run at once
        handles = [client.submit({"turns": questions}) for questions in conversations]
        outcomes = [handle.wait(timeout=120) for handle in handles]
        runtime = runtime_of(client.app)
        backends = [runtime.backend(member) for member in committee.members]

    # Then: every turn's answer is its chosen member's echo of that turn's own question
    for questions, turns in zip(conversations, outcomes, strict=True):
        assert [t.turn_index for t in turns] == list(range(len(questions)))
        for turn, question in zip(turns, questions, strict=True):
            assert turn.status == "ok"
            assert turn.answer == f"model{turn.chosen[1:]}: {question}"
    assert all(isinstance(b, BatchingBackend) for b in backends)
    largest = max(s.largest for b in backends if isinstance(b, BatchingBackend) for s in b.stats().values())
    assert 1 < largest <= 8


# --- out of memory (issue 22 item 3) ----------------------------------------------------------------


class Cramped(Recorder):
    """Runs out of memory on a generate batch of more than ``fits`` prompts, or on a prompt "huge"."""

    def __init__(self, fits: int) -> None:
        super().__init__()
        self.fits = fits

    def generate(self, prompts: Sequence[Prompt]) -> list[str]:
        import torch

        if len(prompts) > self.fits or any(p.messages[-1].content == "huge" for p in prompts):
            self._record("generate", len(prompts))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().generate(prompts)


@pytest.fixture
def freed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A process using CUDA whose ``empty_cache`` calls are counted."""
    import torch

    calls: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(1))
    return calls


def test_out_of_memory_splits_the_batch_and_every_caller_gets_its_own_result(freed: list[int]) -> None:
    inner = Cramped(fits=2)
    batcher = BatchingBackend(inner, max_batch=8, window_s=5.0)
    calls, texts = _generate_calls(batcher, [1] * 8)

    # Given eight callers whose prompts share one batch of eight, which runs out of memory
    results = _all_at_once(calls)

    # Then the halves were retried (8 -> 4 + 4 -> 2 + 2 + 2 + 2) and each caller got its own answer
    assert results == [[t[0][::-1]] for t in texts]
    assert inner.sizes["generate"][:3] == [8, 4, 2]
    assert sorted(inner.sizes["generate"]) == [2, 2, 2, 2, 4, 4, 8]
    assert len(freed) == 3


def test_after_running_out_of_memory_the_limit_stays_low_for_a_while(freed: list[int]) -> None:
    inner = Cramped(fits=2)
    batcher = BatchingBackend(inner, max_batch=8, window_s=5.0, recover_after=10)

    _all_at_once(_generate_calls(batcher, [1] * 8)[0])

    # The limit is the size that fitted: the next batches do not fail again
    assert batcher.limit == 2 and batcher.stats()["generate"].out_of_memory == 3
    failed = len(inner.sizes["generate"])
    _all_at_once(_generate_calls(batcher, [1] * 4)[0])
    assert inner.sizes["generate"][failed:] == [2, 2]
    # After recover_after good batches in a row it doubles back (not past max_batch)
    batcher.window_s = 0.0  # lone calls from here: no company to wait for
    for i in range(10):
        assert batcher.generate([_prompt(f"later {i}")]) == [f"later {i}"[::-1]]
    assert batcher.limit == 4


def test_a_prompt_that_runs_out_of_memory_alone_fails_alone(freed: list[int]) -> None:
    import torch

    inner = Cramped(fits=8)
    batcher = BatchingBackend(inner, max_batch=4, window_s=5.0)
    calls = [lambda t=t: batcher.generate([_prompt(t)]) for t in ("a", "huge", "c", "d")]

    results = _all_at_once(calls)

    # Then the others got their answers, and only its caller got the error
    assert results[0] == ["a"] and results[2:] == [["c"], ["d"]]
    assert isinstance(results[1], torch.OutOfMemoryError)
    assert len(freed) == 3  # the batch of 4, its half of 2, and the prompt alone


def test_other_errors_are_not_retried_in_halves() -> None:
    inner = Recorder()
    batcher = BatchingBackend(inner, max_batch=4, window_s=5.0)

    results = _all_at_once([lambda t=t: batcher.generate([_prompt(t)]) for t in ("a", "boom", "c", "d")])

    assert inner.sizes["generate"] == [4] and batcher.limit == 4
    assert all(isinstance(r, BackendError) for r in results)


# --- abandoned items, deadlines per item, lengths apart (issue 22 item 5) -----------------------------


class Gated(Recorder):
    """Holds each generate batch until ``gate`` is set; records the prompts it ran and their deadlines."""

    takes_deadlines = True

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.started = threading.Event()
        self.ran: list[str] = []
        self.deadlines: dict[str, float | None] = {}

    def generate(
        self, prompts: Sequence[Prompt], *, deadlines: Sequence[float | None] | None = None
    ) -> list[str]:
        self.started.set()
        self.gate.wait(30)
        self.ran += [p.messages[-1].content for p in prompts]
        if deadlines is not None:
            self.deadlines.update(zip((p.messages[-1].content for p in prompts), deadlines, strict=True))
        return super().generate(prompts)


def test_an_item_whose_caller_stopped_waiting_is_not_run() -> None:
    from workers.deadline import Timeout, call_with_deadline

    inner = Gated()
    batcher = BatchingBackend(inner, max_batch=1, window_s=0.0)
    with ThreadPoolExecutor(1) as pool:
        # Given the model busy with a first batch
        first = pool.submit(batcher.generate, [_prompt("first")])
        assert inner.started.wait(30)

        # When a task waits for its item less long than the model stays busy
        with pytest.raises(Timeout):
            call_with_deadline("generate[m1]", 0.1, lambda: batcher.generate([_prompt("abandoned")]))
        inner.gate.set()

        # Then its item is dropped, not run, and the batcher goes on
        assert first.result(30) == ["tsrif"]
    assert batcher.generate([_prompt("next")]) == ["txen"]
    assert inner.ran == ["first", "next"]
    assert batcher.stats()["generate"].expired == 1


def test_each_item_carries_its_own_callers_deadline_into_the_batch() -> None:
    from workers.deadline import call_with_deadline

    inner = Gated()
    inner.gate.set()
    batcher = BatchingBackend(inner, max_batch=2, window_s=5.0)

    # Given two tasks with 5 s and 300 s left, whose items share a batch
    calls = [
        lambda: call_with_deadline("a", 5.0, lambda: batcher.generate([_prompt("short")])),
        lambda: call_with_deadline("b", 300.0, lambda: batcher.generate([_prompt("long")])),
    ]
    assert _all_at_once(calls) == [["trohs"], ["gnol"]]

    # Then each row's deadline is its own caller's, not the batch's
    short, long = inner.deadlines.get("short"), inner.deadlines.get("long")
    assert short is not None and long is not None
    assert 250 < long - short < 300


def test_long_and_short_generations_are_not_forced_into_one_batch() -> None:
    inner = Recorder()
    batcher = BatchingBackend(inner, max_batch=8, window_s=5.0)
    limits = [16, 512, 24, 48, 500, 1]  # a ballot, fusions, answers, a one-token verdict
    calls = [
        lambda n=n: batcher.generate([Prompt((Message("user", f"p{n}"),), max_new_tokens=n)]) for n in limits
    ]

    results = _all_at_once(calls)

    assert results == [[f"p{n}"[::-1]] for n in limits]
    # Within a batch the longest limit is at most 4x the shortest (limits under 16 count as 16)
    assert sorted(inner.sizes["generate"]) == [2, 4]


def test_a_cancelled_item_past_its_deadline_is_dropped_and_the_batcher_goes_on() -> None:
    from concurrent.futures import Future

    from workers.batching import _Item

    inner = Gated()
    batcher = BatchingBackend(inner, max_batch=1, window_s=0.0)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(batcher.generate, [_prompt("first")])
        assert inner.started.wait(30)
        # Given an item queued behind it whose caller left (cancelled) and whose deadline passed
        gone: Future[Any] = Future()
        gone.cancel()
        batcher._queue.put(_Item("generate", _prompt("gone"), gone, time.monotonic(), time.monotonic()))
        thread = batcher._thread
        inner.gate.set()
        assert first.result(30) == ["tsrif"]

    # Then it never ran, and the same batch thread serves the next call (it did not die)
    assert batcher.generate([_prompt("next")]) == ["txen"]
    assert inner.ran == ["first", "next"]
    assert batcher._thread is thread
