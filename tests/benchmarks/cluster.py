"""Real ``celery worker`` processes for the distributed benchmarks: peerblend's and the raw floor's.

Both on the shared Redis, each with its own queues (a random tag), the same pool and
concurrency; peerblend's with a scripted zero-cost committee and PostgreSQL as the store.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from workers.runtime import runtime_of

ROOT = Path(__file__).resolve().parents[2]


def start_worker(
    app_module: str, queues: list[str], env: dict[str, str], log: Path, pool: str, concurrency: int
) -> subprocess.Popen[bytes]:
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


def cpu_seconds(pid: int, *, tree: bool = True) -> float:
    """User + system CPU seconds of a process and (``tree``) its children, 0 for one that is gone."""
    try:
        process = psutil.Process(pid)
        processes = [process, *(process.children(recursive=True) if tree else [])]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for each in processes:
        try:
            times = each.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def services_cpu_seconds() -> dict[str, float]:
    """CPU seconds of this machine's Redis and PostgreSQL server processes (all of them)."""
    totals = {"redis": 0.0, "postgres": 0.0}
    for process in psutil.process_iter(["name"]):
        name = process.info["name"] or ""
        for service in totals:
            if name.startswith(service):
                totals[service] += cpu_seconds(process.pid, tree=False)
    return totals


def wait_ready(app: Any, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(app.control.ping(timeout=0.5) or []) >= n:
            return
    raise RuntimeError("workers did not start")


@dataclass
class Cluster:
    """What a benchmark needs: peerblend's app, client and committee, and the raw canvas module."""

    app: Any
    client: Any
    committee: Any
    raw: Any  # tests.benchmarks.raw_canvas, bound to its own queue
    home: Path
    workers: dict[str, subprocess.Popen[bytes]]  # "peerblend", "raw", "raw routed"

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds so far: this (client) process, each worker with its pool, Redis, PostgreSQL."""
        return {
            "client": cpu_seconds(os.getpid(), tree=False),
            **{name: cpu_seconds(worker.pid) for name, worker in self.workers.items()},
            **services_cpu_seconds(),
        }


@contextmanager
def cluster(*, members: int = 5, pool: str = "prefork", concurrency: int = 4) -> Iterator[Cluster]:
    """A peerblend worker and two raw-canvas workers, one on one queue and one on six like
    peerblend's (``pool`` x ``concurrency`` each), stopped at the end."""
    from db.engine import get_engine
    from db.migrate import upgrade
    from pipeline.service.client import BlendClient
    from pipeline.service.settings import Settings
    from tests.conftest import POSTGRES_URL, REDIS_URL, scripted_committee

    tag = uuid.uuid4().hex[:6]
    home = Path(tempfile.mkdtemp(prefix="peerblend-bench-"))
    committee = scripted_committee(members, name=f"bench-{tag}", queue_prefix=f"b{tag}.")
    (home / "committee.json").write_text(committee.model_dump_json())
    database = os.environ.get("PEERBLEND_BENCH_DATABASE", f"{POSTGRES_URL}/test")
    env = {
        **os.environ,
        "PEERBLEND_TEST_BACKENDS": "1",
        "PEERBLEND_BROKER_URL": f"{REDIS_URL}/0",
        "PEERBLEND_RESULT_BACKEND": f"{REDIS_URL}/1",
        "PEERBLEND_DATABASE_URL": database,
        "PEERBLEND_COMMITTEE_FILE": str(home / "committee.json"),
        "PEERBLEND_DEFAULT_QUEUE": f"b{tag}.peerblend",
        "RAW_QUEUE": f"raw{tag}",
    }
    saved = dict(os.environ)
    os.environ.update(env)
    from tests.benchmarks import raw_canvas
    from workers.app import create_app

    settings = Settings()
    upgrade(database)
    app = create_app(settings, committee)
    assert f"raw{tag}" == raw_canvas.QUEUE, "raw_canvas was imported before its queue was set"
    queues = [settings.default_queue, *committee.queues]
    workers = {
        "peerblend": start_worker("workers.app", queues, env, home / "peerblend.log", pool, concurrency),
        "raw": start_worker(
            "tests.benchmarks.raw_canvas", [f"raw{tag}"], env, home / "raw.log", pool, concurrency
        ),
        "raw routed": start_worker(
            "tests.benchmarks.raw_canvas",
            [raw_canvas.ROUTED, *raw_canvas.member_queues(members)],
            env,
            home / "raw-routed.log",
            pool,
            concurrency,
        ),
    }
    try:
        wait_ready(app, len(workers))
        client = BlendClient(app, get_engine(database), committee, policy_store=runtime_of(app).policy_store)
        yield Cluster(app=app, client=client, committee=committee, raw=raw_canvas, home=home, workers=workers)
    finally:
        for worker in workers.values():
            worker.terminate()
        for worker in workers.values():
            worker.wait(timeout=30)
        os.environ.clear()
        os.environ.update(saved)
