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
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PEERBLEND_TEST_BACKENDS", "1")  # the scripted committee, here and in the workers

from db.engine import get_engine  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from pipeline.client import BlendClient  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from tests.conftest import POSTGRES_URL, REDIS_URL, scripted_committee  # noqa: E402


def start_worker(
    app_module: str, queues: list[str], env: dict[str, str], log: Path, pool: str, concurrency: int
):
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app_module,
        "worker",
        "-Q",
        ",".join(queues),
        "--pool",
        pool,
        "-c",
        str(concurrency),
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-n",
        f"{uuid.uuid4().hex[:6]}@%h",
        "-l",
        "WARNING",
    ]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_ready(app, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(app.control.ping(timeout=0.5) or []) >= n:
            return
    raise RuntimeError("workers did not start")


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

    tag = uuid.uuid4().hex[:6]
    home = Path(tempfile.mkdtemp(prefix="peerblend-bench-"))
    committee = scripted_committee(5, name=f"bench-{tag}", queue_prefix=f"b{tag}.")
    (home / "committee.json").write_text(committee.model_dump_json())
    database = f"{POSTGRES_URL}/test"
    env = {
        **os.environ,
        "PEERBLEND_BROKER_URL": f"{REDIS_URL}/0",
        "PEERBLEND_RESULT_BACKEND": f"{REDIS_URL}/1",
        "PEERBLEND_DATABASE_URL": database,
        "PEERBLEND_COMMITTEE_FILE": str(home / "committee.json"),
        "PEERBLEND_DEFAULT_QUEUE": f"b{tag}.peerblend",
        "RAW_QUEUE": f"raw{tag}",
    }
    os.environ.update(env)
    from tests.benchmarks import raw_canvas
    from workers.app import create_app

    settings = Settings()
    upgrade(database)
    app = create_app(settings, committee)
    workers = [
        start_worker(
            "workers.app",
            [settings.default_queue, *committee.queues],
            env,
            home / "peerblend.log",
            args.pool,
            args.concurrency,
        ),
        start_worker(
            "tests.benchmarks.raw_canvas", [f"raw{tag}"], env, home / "raw.log", args.pool, args.concurrency
        ),
    ]
    try:
        wait_ready(app, 2)
        client = BlendClient(app, get_engine(database), committee)
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
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)


if __name__ == "__main__":
    main()
