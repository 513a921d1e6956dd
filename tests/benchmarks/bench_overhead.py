"""Benchmark: peerblend's per-turn overhead against the raw Celery floor, in one run.

Starts two real `celery worker` processes on the same Redis (same pool, same
concurrency): one for a no-op canvas of a turn's shape (raw_canvas.py), one for
peerblend with a scripted zero-cost committee (5 generators, 5 reviewers) and
PostgreSQL as the store. Turns run one at a time, alternating raw / peerblend so
that machine noise hits both alike. Prints median and p95 latency and the ratio.

    .venv/bin/python tests/benchmarks/bench_overhead.py [--turns 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PEERBLEND_TEST_BACKENDS", "1")  # the scripted committee, here and in the workers

from tests.benchmarks.cluster import cluster  # noqa: E402


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    return f"median {1000 * statistics.median(values):6.1f} ms   p95 {1000 * p95:6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    with cluster(members=5, pool=args.pool, concurrency=args.concurrency) as bench:
        client, raw_canvas = bench.client, bench.raw
        raw, ours = [], []
        for i in range(args.turns + 10):
            start = time.perf_counter()
            raw_canvas.turn().apply_async().get(timeout=30, interval=0.001)
            raw_time = time.perf_counter() - start
            start = time.perf_counter()
            client.submit([f"benchmark question {i}?"]).wait(timeout=30)
            our_time = time.perf_counter() - start
            if i >= 10:  # warm-up: connections, imports, first fork
                raw.append(raw_time)
                ours.append(our_time)
        ratio = statistics.median(ours) / statistics.median(raw)
        print(
            f"turn latency, {args.turns} turns one at a time, 5 generators + 5 reviewers, "
            f"{args.pool} pool x{args.concurrency}, Redis broker + result backend"
        )
        print(f"  raw no-op canvas        {summary(raw)}")
        print(f"  peerblend (scripted)    {summary(ours)}   (stores the turn in PostgreSQL)")
        print(f"  ratio of medians        {ratio:.2f}x  (target <= 1.5x)")


if __name__ == "__main__":
    main()
