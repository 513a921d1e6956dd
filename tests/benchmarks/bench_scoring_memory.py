"""Benchmark: memory of a likelihood review, scoring code before and after issue 22 (item 4).

One review of 4 candidates is 8 score requests (each candidate under the question's prompt
and under the content-free one). The script scores the same requests with the scoring code
of a git revision (``--before``, default e2abdf3, read with ``git show`` and imported as a
module of its own) and with the working tree's, side by side in one process, on the real
offline models, and prints each call's peak bytes.

What is measured: the peak, over the call, of the bytes that torch's CPU allocator holds
beyond what it held when the call began, from ``torch.profiler`` memory events (every
allocation and free of a tensor's storage, in time order). That counts the prompt's cached
keys/values, their copies, the logits and every intermediate tensor; not Python objects,
nor the allocator's own slack (on CPU that is malloc's). On a GPU the same code allocates
the same tensors there. Peak RSS would mostly measure glibc's reuse of freed blocks; Python's
tracemalloc does not see torch's allocations at all.

    .venv/bin/python tests/benchmarks/bench_scoring_memory.py [--before REV] [--history 12] [--reviews 1]

Cold: the prompts' keys/values are computed in the call; warm: they are in the prefix cache.

``--cpu-seconds``: instead, the CPU seconds of scoring one review (prompts cached) and of
generating 8 short answers, both codes' calls alternated in one process (one torch thread):
a check for a slowdown that a shared machine's wall-clock noise would hide.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from pipeline.backend import Message, Prompt, ScoreRequest  # noqa: E402
from workers.backends.base import BackendSpec  # noqa: E402

QUESTION = "Which novel by Frank Herbert is set on the desert planet Arrakis, and who is its hero?"
CANDIDATES = [
    "Dune; its hero is Paul Atreides.",
    "It is Dune, published in 1965. The hero is Paul Atreides, heir of House Atreides, "
    "who becomes Muad'Dib among the Fremen of Arrakis.",
    "Children of Dune, whose hero is Leto II.",
    "I am not sure, but I think it is Foundation by Isaac Asimov, with Hari Seldon as its hero.",
]


def peak_bytes(call: Callable[[], Any]) -> tuple[int, Any]:
    """The peak bytes torch's CPU allocator held during ``call()`` beyond what it held before it,
    and ``call()``'s result (see the module docstring)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        result = call()
    # Each event's own allocations (+) and frees (-), not its children's again.
    events = sorted(
        (e for e in profiler.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start
    )
    held = peak = 0
    for event in events:
        held += event.self_cpu_memory_usage
        peak = max(peak, held)
    return peak, result


def review_requests(history_turns: int) -> list[ScoreRequest]:
    """A likelihood review's requests: each candidate under the conversation's prompt and the
    content-free one. ``history_turns`` earlier turns make the prompt long, as late in a conversation."""
    history: list[Message] = []
    for turn in range(history_turns):
        history += [
            Message("user", f"Tell me fact number {turn} about the Dune books."),
            Message("assistant", f"Fact {turn}: the spice melange extends life and expands the mind."),
        ]
    prompt = Prompt((*history, Message("user", QUESTION)))
    content_free = Prompt((Message("user", "N/A"),))
    return [ScoreRequest(p, c) for c in CANDIDATES for p in (prompt, content_free)]


def module_at(revision: str, path: str, name: str) -> ModuleType:
    """``path`` as it was at ``revision``, imported as module ``name``."""
    source = subprocess.run(
        ["git", "show", f"{revision}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    file = Path(tempfile.mkdtemp(prefix="peerblend-before-")) / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def measure(backend: Any, requests: list[ScoreRequest]) -> dict[str, Any]:
    backend._prefixes.clear()
    cold, scores = peak_bytes(lambda: backend.score(requests))
    warm, _ = peak_bytes(lambda: backend.score(requests))
    prompt_ids = backend._score_ids(requests[0])[0]
    return {"cold": cold, "warm": warm, "scores": scores, "prompt_tokens": len(prompt_ids)}


ANSWERED = ["Who wrote Dune?", "What is the capital of France?", "Name a large planet.", "Who painted the Mona Lisa?",
            "When did World War II end?", "What is 2 + 2?", "Who wrote Hamlet?", "What is the largest ocean?"]  # fmt: skip


def cpu_seconds(backends: dict[str, Any], requests: list[ScoreRequest], repeats: int) -> None:
    """Median CPU seconds of each code's score and generate calls, alternated; outputs must agree."""
    prompts = [Prompt((Message("user", q),), max_new_tokens=24, stop=("\n",)) for q in ANSWERED]
    calls = {"score": lambda b: b.score(requests), "generate": lambda b: b.generate(prompts)}
    for what, call in calls.items():
        seconds: dict[str, list[float]] = {label: [] for label in backends}
        outputs = {label: call(backend) for label, backend in backends.items()}  # warm-up, prompts cached
        assert outputs["before"] == outputs["after"], what
        for repeat in range(repeats):
            for label in sorted(backends, reverse=repeat % 2 == 1):
                started = time.process_time()
                call(backends[label])
                seconds[label].append(time.process_time() - started)
        before, after = (statistics.median(seconds[label]) for label in ("before", "after"))
        print(f"  {what:9s} before {before:.3f} s  after {after:.3f} s  after/before {after / before:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="e2abdf3", help="git revision of the code before")
    parser.add_argument("--history", type=int, default=12, help="earlier turns in the prompt")
    parser.add_argument("--reviews", type=int, default=1, help="reviews scored in one call (batched)")
    parser.add_argument("--models", default="smollm2-135m,gemma3-270m")
    parser.add_argument("--cpu-seconds", action="store_true", help="time the calls instead (CPU seconds)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    before = module_at(args.before, "workers/backends/hf.py", "hf_before")
    from workers.backends import hf as after

    requests = review_requests(args.history)
    # More reviews in one call: more candidates under the same two prompts (16 rows for four).
    for extra in range(1, args.reviews):
        requests += [ScoreRequest(r.prompt, f"{r.continuation} (review {extra})") for r in requests[:8]]
    print(f"one call: {len(requests)} score requests ({args.reviews} review(s) of 4 candidates)")
    for model in args.models.split(","):
        backends = {
            label: module.TransformersBackend(BackendSpec(model=model))
            for label, module in (("before", before), ("after", after))
        }
        if args.cpu_seconds:
            print(f"{model}, CPU seconds, medians of {args.repeats}, calls alternated:")
            cpu_seconds(backends, requests, args.repeats)
        else:
            memory_rows(model, backends, requests)


def memory_rows(model: str, backends: dict[str, Any], requests: list[ScoreRequest]) -> None:
    """One line per code: prompt tokens, cold and warm peak MiB, and how far its scores differ."""
    rows = {label: measure(backend, requests) for label, backend in backends.items()}
    diff = max(abs(a - b) for a, b in zip(rows["before"]["scores"], rows["after"]["scores"], strict=True))
    print("model           code    prompt tokens   cold peak MiB   warm peak MiB   max |score diff|")
    for label, row in rows.items():
        print(
            f"{model:15s} {label:7s} {row['prompt_tokens']:>13d} {row['cold'] / 2**20:>15.1f} "
            f"{row['warm'] / 2**20:>15.1f}   {diff if label == 'after' else 0:.2e}"
        )


if __name__ == "__main__":
    main()
