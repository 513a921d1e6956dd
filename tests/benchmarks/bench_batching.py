"""Benchmark: batching the model calls of concurrent tasks, off and on.

Blends the same real ConvQuestions conversations with the default offline
committee in the embedded deployment, four times: 1 and 8 conversations in
flight, each with batching off (``batch_max=1``) and on (``batch_max=16``, a
20 ms window). Prints questions answered per second, mean seconds per turn, the
batch sizes the batchers ran, and the ratios. Each configuration runs in a
fresh subprocess (one embedded deployment per process, cold backend caches),
which loads the models and blends one warm-up turn before the clock starts.

    .venv/bin/python tests/benchmarks/bench_batching.py [--conversations 8] [--turns 3] \
        [--dtype bfloat16] [--torch-threads 1]

Every configuration uses the same worker threads (``--threads``, default 32:
8 conversations x 4 members), so only ``batch_max`` differs between off and on.
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

from pipeline.committee import default_committee  # noqa: E402
from pipeline.evaluation.datasets import load_conversations  # noqa: E402
from pipeline.service.settings import Settings  # noqa: E402
from workers.batching import BatchingBackend  # noqa: E402
from workers.embedded import connect  # noqa: E402
from workers.evaluation.replay import replay  # noqa: E402
from workers.runtime import runtime_of  # noqa: E402

DATA = Path(os.environ.get("PEERBLEND_SHARED_DATA", ROOT.parent / "shared" / "data")) / "convqa"
CONFIGS = [(1, 1), (16, 1), (1, 8), (16, 8)]  # (batch_max, conversations in flight); >1 means --batch-max


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DATA / "convquestions" / "val_books.json")
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--stride", type=int, default=37, help="take every n-th conversation (variety)")
    parser.add_argument("--in-flight", type=int, default=8, help="conversations at once in the busy runs")
    parser.add_argument("--batch-max", type=int, default=16, help="batch_max of the runs with batching")
    parser.add_argument("--window-ms", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=32, help="worker threads (embedded_concurrency)")
    parser.add_argument("--dtype", default="auto", help="every member's dtype (auto: float32 on CPU)")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch threads per process")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return
    rows = []
    for batch_max, in_flight in CONFIGS:
        batch_max = args.batch_max if batch_max > 1 else 1
        in_flight = args.in_flight if in_flight > 1 else 1
        rows.append(run_child(args, batch_max, in_flight))
        row = rows[-1]
        print(
            f"  batch_max {batch_max}, {in_flight} in flight: {row['questions']} questions in "
            f"{row['seconds']:.1f} s (+{row['startup_s']:.1f} s start-up)",
            flush=True,
        )
    report(rows, args)


def run_child(args: argparse.Namespace, batch_max: int, in_flight: int) -> dict[str, Any]:
    """One configuration in a fresh interpreter; its measurements, read from its last stdout line."""
    command = [
        sys.executable,
        __file__,
        "--child",
        f"--dataset={args.dataset}",
        f"--conversations={args.conversations}",
        f"--turns={args.turns}",
        f"--stride={args.stride}",
        f"--window-ms={args.window_ms}",
        f"--threads={args.threads}",
        f"--dtype={args.dtype}",
        *([f"--torch-threads={args.torch_threads}"] if args.torch_threads else []),
        f"--batch-max={batch_max}",
        f"--in-flight={in_flight}",
    ]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Blend the conversations with ``args.in_flight`` at once; throughput, latency, batch sizes."""
    started = time.perf_counter()
    picked = [
        dataclasses.replace(c, questions=c.questions[: args.turns])
        for c in load_conversations(args.dataset)[:: args.stride][: args.conversations]
    ]
    settings = Settings(
        home=Path(tempfile.mkdtemp(prefix="peerblend-batching-")),
        batch_max=args.batch_max,
        batch_window_ms=args.window_ms,
        embedded_concurrency=args.threads,
        torch_threads=args.torch_threads,
    )
    base = default_committee()
    committee = base.model_copy(
        update={"members": tuple(m.model_copy(update={"dtype": args.dtype}) for m in base.members)}
    )
    with connect(settings, committee) as client:
        runtime = runtime_of(client.app)
        runtime.preload()
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
        backends = {m.model: runtime.backend(m) for m in client.committee.members}
    batchers = {model: b for model, b in backends.items() if isinstance(b, BatchingBackend)}
    stats = [s for b in batchers.values() for s in b.stats().values()]
    busy = {
        f"{model} {kind}": [stat.batches, stat.items, round(stat.seconds, 2)]
        for model, b in batchers.items()
        for kind, stat in b.stats().items()
    }
    return {
        "committee": client.committee.name,
        "batch_max": args.batch_max,
        "in_flight": args.in_flight,
        "questions": summary.turns_done,
        "failed": summary.failed,
        "not_ok": sum(t.result["status"] != "ok" for t in turns if t.result is not None),
        "seconds": summary.seconds,
        "startup_s": startup_s,
        "turn_s": statistics.mean(t.result["timings"]["total_s"] for t in turns if t.result is not None),
        "batches": sum(s.batches for s in stats),
        "items": sum(s.items for s in stats),
        "largest": max((s.largest for s in stats), default=1),
        "busy": busy,  # per model and kind: batches, items, seconds in the model
    }


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\n{args.conversations} ConvQuestions conversations x {args.turns} turns, committee "
        f"{rows[0]['committee']}, {args.threads} worker threads, window {args.window_ms:g} ms, "
        f"{os.cpu_count()} CPU cores"
    )
    print("batch_max  in flight  questions/s   s/turn  items/batch  largest")
    for row in rows:
        per_batch = row["items"] / row["batches"] if row["batches"] else 1.0
        failures = (
            f"  ({row['failed']} failed, {row['not_ok']} not ok)" if row["failed"] or row["not_ok"] else ""
        )
        print(
            f"{row['batch_max']:>9} {row['in_flight']:>10} {row['questions'] / row['seconds']:>12.3f} "
            f"{row['turn_s']:>8.2f} {per_batch:>12.2f} {row['largest']:>8}{failures}"
        )
        for name, (batches, items, seconds) in row["busy"].items():
            print(f"{'':>20} {name}: {items} items in {batches} batches, {seconds:.1f} s in the model")
    by = {(r["batch_max"] > 1, r["in_flight"] > 1): r for r in rows}
    rate = {key: r["questions"] / r["seconds"] for key, r in by.items()}  # (batching, busy) -> questions/s
    busy = args.in_flight
    print(f"\nthroughput, {busy} in flight with batching / 1 at a time without: ", end="")
    print(f"{rate[True, True] / rate[False, False]:.2f}x")
    print(
        f"throughput, {busy} in flight with batching / without: {rate[True, True] / rate[False, True]:.2f}x"
    )
    lone = by[True, False]["turn_s"] / by[False, False]["turn_s"]
    print(f"lone-conversation seconds per turn, with batching / without: {lone:.2f}x")


if __name__ == "__main__":
    main()
