"""Benchmark: the same committee on peerblend's in-process engine and behind one vLLM server.

Blends the same real ConvQuestions conversations with the same committee (three
SmolLM2-135M members: concise + likelihood review, terse + likelihood review,
concise + ranking review) in the embedded deployment, four times:

- ``hf``: the members in-process (``transformers`` backend), calls of concurrent
  tasks batched by peerblend (``batch_max`` 16, a 20 ms window);
- ``vllm``: the members behind one vLLM OpenAI CPU server (``openai`` backend; the
  server batches), the server started once for both of its runs;

each with 1 and with 8 conversations in flight. Prints questions per second, mean
seconds per turn (a lone conversation's latency at 1 in flight), the vLLM server's
start-up time, and a Markdown table (docs/results/vllm.md). Each run is a fresh
subprocess that loads (or warms up) its members and blends one warm-up turn before
the clock starts.

    .venv/bin/python tests/benchmarks/bench_vllm.py [--conversations 8] [--turns 3] \
        [--dtype float32] [--vllm-arg=--enforce-eager] [--vllm-url http://127.0.0.1:8000/v1]

``--vllm-url`` (and ``--vllm-name``, default ``smollm2``) uses a running server
serving SmolLM2 instead of starting one. The vLLM virtualenv is built or reused as in tests/test_vllm.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rich.console import Console  # noqa: E402

from pipeline.committee import Committee, Generation, Member  # noqa: E402
from pipeline.evaluation.datasets import load_conversations  # noqa: E402
from pipeline.service.settings import Settings  # noqa: E402
from tests.vllm_support import serve  # noqa: E402
from workers.embedded import connect  # noqa: E402
from workers.evaluation.replay import replay  # noqa: E402
from workers.runtime import runtime_of  # noqa: E402

DATA = Path(os.environ.get("PEERBLEND_SHARED_DATA", ROOT.parent / "shared" / "data")) / "convqa"
MODEL = "smollm2-135m"
SERVED = "smollm2"
ENGINES = ("hf", "vllm")


def committee(engine: str, *, dtype: str, url: str | None, served: str = SERVED) -> Committee:
    """Three SmolLM2 members, in-process (``hf``) or on the vLLM server at ``url``."""
    roles = [("concise", "likelihood"), ("terse", "likelihood"), ("concise", "ranking")]
    members = []
    for i, (style, review) in enumerate(roles):
        where: dict[str, Any] = (
            {"backend": "transformers", "model": MODEL, "dtype": dtype}
            if engine == "hf"
            else {
                "backend": "openai",
                "model": served,
                "options": {"base_url": url, "max_concurrency": 32, "continue_final_message": True},
            }
        )
        generation = Generation(style=style, max_new_tokens=24 if style == "concise" else 12)  # type: ignore[arg-type]
        members.append(
            Member(name=f"smol-{i}-{style}-{review}", review_method=review, generation=generation, **where)  # type: ignore[arg-type]
        )
    return Committee(name=f"smollm2-{engine}", members=tuple(members))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DATA / "convquestions" / "val_books.json")
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--stride", type=int, default=37, help="take every n-th conversation (variety)")
    parser.add_argument("--in-flight", type=int, default=8, help="conversations at once in the busy runs")
    parser.add_argument("--threads", type=int, default=32, help="worker threads (embedded_concurrency)")
    parser.add_argument("--dtype", default="float32", help="both engines (this CPU has no bfloat16 units)")
    parser.add_argument("--vllm-arg", action="append", default=[], help="extra vLLM server argument")
    parser.add_argument("--vllm-url", help="a running vLLM server serving SmolLM2 (no start-up)")
    parser.add_argument("--vllm-name", default=SERVED, help="the name that server serves it under")
    parser.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return
    rows = [run_child(args, "hf", n) for n in (1, args.in_flight)]
    busy = (1, args.in_flight)
    start_s = None
    if args.vllm_url:
        rows += [run_child(args, "vllm", n, url=args.vllm_url) for n in busy]
    else:
        log = Path(tempfile.mkdtemp(prefix="peerblend-vllm-")) / "server.log"
        model_dir = Settings().models_dir / MODEL
        with serve(model_dir, SERVED, log=log, dtype=args.dtype, extra_args=args.vllm_arg) as server:
            rows += [run_child(args, "vllm", n, url=server.url) for n in busy]
        start_s = server.start_s
    report(rows, args, start_s)


def run_child(
    args: argparse.Namespace, engine: str, in_flight: int, url: str | None = None
) -> dict[str, Any]:
    """One run in a fresh interpreter; its measurements, read from its last stdout line."""
    command = [
        sys.executable,
        __file__,
        "--child",
        f"--engine={engine}",
        f"--dataset={args.dataset}",
        f"--conversations={args.conversations}",
        f"--turns={args.turns}",
        f"--stride={args.stride}",
        f"--threads={args.threads}",
        f"--dtype={args.dtype}",
        f"--in-flight={in_flight}",
        *([f"--vllm-url={url}", f"--vllm-name={args.vllm_name}"] if url else []),
    ]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    row: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"  {engine}, {in_flight} in flight: {row['questions']} questions in {row['seconds']:.1f} s "
        f"(+{row['startup_s']:.1f} s start-up)",
        flush=True,
    )
    return row


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Blend the conversations with ``args.in_flight`` at once; throughput and latency."""
    started = time.perf_counter()
    picked = [
        dataclasses.replace(c, questions=c.questions[: args.turns])
        for c in load_conversations(args.dataset)[:: args.stride][: args.conversations]
    ]
    settings = Settings(
        home=Path(tempfile.mkdtemp(prefix="peerblend-bench-vllm-")),
        embedded_concurrency=args.threads,
    )  # batching: the defaults (batch_max 16, 20 ms); it applies to in-process members only
    members = committee(args.engine, dtype=args.dtype, url=args.vllm_url, served=args.vllm_name)
    with connect(settings, members) as client:
        runtime_of(client.app).preload()
        client.submit(["Who wrote Dune?"], run="warm-up").wait(timeout=1800)
        startup_s = time.perf_counter() - started
        summary = replay(
            client,
            picked,
            run="bench",
            method="peer",
            policy="full",
            top_k=None,
            concurrency=args.in_flight,
            console=Console(file=sys.stderr, quiet=True),
        )
        ids = [row.id for row, _ in client.store.run_conversations("bench")]
        turns = [t for i in ids for t in client.fetch(i).turns if t.result is not None]
    return {
        "engine": args.engine,
        "in_flight": args.in_flight,
        "questions": summary.turns_done,
        "failed": summary.failed,
        "not_ok": sum(t.result["status"] != "ok" for t in turns if t.result is not None),
        "seconds": summary.seconds,
        "startup_s": startup_s,
        "turn_s": statistics.mean(t.result["timings"]["total_s"] for t in turns if t.result is not None),
    }


def report(rows: list[dict[str, Any]], args: argparse.Namespace, start_s: float | None) -> None:
    print(
        f"\n{args.conversations} ConvQuestions conversations x {args.turns} turns, 3 SmolLM2-135M members "
        f"({args.dtype}), {args.threads} worker threads, {os.cpu_count()} CPU cores"
    )
    if start_s is not None:
        print(f"vLLM server start-up (to a healthy /health): {start_s:.0f} s")
    print("\n| engine | conversations in flight | questions/s | s per turn |")
    print("|---|---:|---:|---:|")
    for row in rows:
        failures = (
            f" ({row['failed']} failed, {row['not_ok']} not ok)" if row["failed"] or row["not_ok"] else ""
        )
        print(
            f"| {row['engine']} | {row['in_flight']} | {row['questions'] / row['seconds']:.3f} | "
            f"{row['turn_s']:.2f}{failures} |"
        )
    rate = {(r["engine"], r["in_flight"]): r["questions"] / r["seconds"] for r in rows}
    turn = {(r["engine"], r["in_flight"]): r["turn_s"] for r in rows}
    busy = args.in_flight
    print(f"\nvllm / hf questions/s: 1 in flight {rate['vllm', 1] / rate['hf', 1]:.2f}x, ", end="")
    print(f"{busy} in flight {rate['vllm', busy] / rate['hf', busy]:.2f}x")
    print(f"vllm / hf lone-conversation s per turn: {turn['vllm', 1] / turn['hf', 1]:.2f}x")
    for engine in ENGINES:
        print(f"{engine}: {busy} in flight / 1: {rate[engine, busy] / rate[engine, 1]:.2f}x questions/s")


if __name__ == "__main__":
    main()
