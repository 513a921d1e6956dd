"""Benchmark: what a client and the chat server cost, and peerblend's throughput against the raw floor.

Scripted zero-cost committees, so every figure is peerblend's own overhead (Celery,
the database, the server), not a model's:

Embedded (one process: in-process worker with 16 threads, SQLite; committee of 3):
1. Added latency: one-turn chats, alternately through ``LiveConversation.ask``
   directly and through ``POST /v1/chat/completions`` on a uvicorn server running in
   this process (httpx client, keep-alive); the median difference is what the server
   adds (target <= 10 ms).
2. Server requests/s with 1, 8 and 32 chats in flight.
3. ``submit`` and ``ask`` rates from one client process.

Distributed (when Redis and PostgreSQL answer; committee of 5; a peerblend worker and a
raw-canvas worker, prefork x4 each, ``tests/benchmarks/cluster.py``):
4. ``submit`` and ``ask`` rates from one client process (the workers run the turns meanwhile).
5. Throughput with 200 one-turn conversations submitted at once, peerblend against a raw
   no-op canvas of the same shape (``raw_canvas.py``), alternated round by round (target >= 0.9x).

    .venv/bin/python tests/benchmarks/bench_serve.py [--requests 60] [--rounds 3] [--skip-distributed]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PEERBLEND_TEST_BACKENDS", "1")

import httpx  # noqa: E402
import uvicorn  # noqa: E402

from pipeline.committee import Committee, Member  # noqa: E402
from pipeline.service.client import BlendClient  # noqa: E402
from pipeline.service.settings import Settings  # noqa: E402
from workers.embedded import connect  # noqa: E402
from workers.runtime import runtime_of  # noqa: E402
from workers.serve import ServerOptions, create_api  # noqa: E402


def committee() -> Committee:
    members = tuple(
        Member(name=f"m{i}", backend="scripted", model=f"model{i}", review_method="likelihood")
        for i in range(3)
    )
    return Committee(name="bench", members=members)


def serve_in_thread(api: object, port: int) -> uvicorn.Server:
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return server


async def rps(url: str, in_flight: int, total: int) -> float:
    async with httpx.AsyncClient(timeout=120) as http:
        queue = list(range(total))

        async def worker() -> None:
            while queue:
                i = queue.pop()
                body = {"model": "bench", "messages": [{"role": "user", "content": f"q{i} {time.time()}?"}]}
                response = await http.post(url, json=body)
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return total / (time.perf_counter() - started)


def submit_rate(client: BlendClient, n: int, tag: str) -> tuple[float, list[Any]]:
    """Conversations stored and sent per second by ``n`` one-turn submits in a row; the handles."""
    started = time.perf_counter()
    handles = [client.submit([f"{tag} submitted {i}?"]) for i in range(n)]
    return n / (time.perf_counter() - started), handles


def ask_rate(client: BlendClient, n: int, in_flight: int, tag: str) -> float:
    """One-turn live chats answered per second, ``in_flight`` at once (``aask``), from this process."""

    async def main() -> None:
        slots = asyncio.Semaphore(in_flight)

        async def one(i: int) -> None:
            async with slots:
                chat = await asyncio.to_thread(client.start)
                await chat.aask(f"{tag} asked {i}?", timeout=120)

        await asyncio.gather(*(one(i) for i in range(n)))

    started = time.perf_counter()
    asyncio.run(main())
    return n / (time.perf_counter() - started)


def client_alone(settings: Settings, n: int, rounds: int = 3) -> str:
    """``submit`` rates of a client whose messages no worker takes (dropped afterwards): the client's
    own cost, without workers sharing the CPU. The median and each round."""
    from db.engine import get_engine
    from db.migrate import upgrade
    from tests.conftest import scripted_committee
    from workers.app import create_app

    tag = uuid.uuid4().hex[:6]
    members = scripted_committee(5, name=f"alone-{tag}", queue_prefix=f"alone{tag}.")
    settings = settings.model_copy(update={"default_queue": f"alone{tag}.peerblend"})
    upgrade(settings.database)
    app = create_app(settings, members)
    client = BlendClient(
        app, get_engine(settings.database), members, policy_store=runtime_of(app).policy_store
    )
    try:
        submit_rate(client, 20, "warm-up")
        rates = [submit_rate(client, n, f"alone {k}")[0] for k in range(rounds)]
    finally:
        if not settings.embedded:
            import redis

            with redis.Redis.from_url(settings.broker_url or "") as broker:
                broker.delete(settings.default_queue, *members.queues)
        app.close()
    return f"median {statistics.median(rates):6.1f}/s ({', '.join(f'{r:.0f}' for r in rates)})"


def embedded(args: argparse.Namespace) -> None:
    home = Path(tempfile.mkdtemp(prefix="peerblend-serve-"))
    alone = client_alone(Settings(home=home / "alone"), args.submits)
    with connect(Settings(home=home, embedded_concurrency=16), committee()) as client:
        server = serve_in_thread(create_api(client, ServerOptions()), args.port)
        url = f"http://127.0.0.1:{args.port}/v1/chat/completions"
        direct, served = [], []
        with httpx.Client(timeout=120) as http:
            for i in range(args.requests + 5):  # the first 5 pairs warm up
                started = time.perf_counter()
                client.start().ask(f"direct {i}?", timeout=60)
                direct_s = time.perf_counter() - started
                started = time.perf_counter()
                body = {"model": "bench", "messages": [{"role": "user", "content": f"served {i}?"}]}
                http.post(url, json=body).raise_for_status()
                served_s = time.perf_counter() - started
                if i >= 5:
                    direct.append(direct_s)
                    served.append(served_s)
        print(f"embedded, scripted committee of 3; one-turn chats, {args.requests} each, alternated:")
        print(f"  LiveConversation.ask  median {1000 * statistics.median(direct):7.1f} ms")
        print(f"  POST chat/completions median {1000 * statistics.median(served):7.1f} ms")
        added = [s - d for s, d in zip(served, direct, strict=True)]
        print(f"  added by the server: median {1000 * statistics.median(added):.1f} ms (target <= 10 ms)")
        for in_flight in (1, 8, 32):
            rate = asyncio.run(rps(url, in_flight, max(32, 2 * in_flight)))
            print(f"  server, {in_flight:2d} chats in flight: {rate:6.1f} requests/s")
        rate, handles = submit_rate(client, args.submits, "embedded")
        for handle in handles:
            handle.wait(timeout=300)
        print(f"  submit from one client process, no worker taking them: {alone} (target >= 100/s)")
        print(f"  submit from one client process, the in-process worker running them: {rate:6.1f}/s")
        chats = ask_rate(client, 64, 32, "embedded")
        print(f"  ask from one client process, 32 chats in flight: {chats:6.1f} chats/s")
        server.should_exit = True


def distributed(args: argparse.Namespace, settings: Settings) -> None:
    from tests.benchmarks.cluster import cluster

    alone = client_alone(settings, args.submits)
    with cluster(members=5, pool="prefork", concurrency=4) as bench:
        client = bench.client
        for handle in submit_rate(client, 20, "warm-up")[1]:
            handle.wait(timeout=120)
        rates = []
        for _ in range(3):
            rate, handles = submit_rate(client, args.submits, "distributed")
            rates.append(rate)
            for handle in handles:
                handle.wait(timeout=300)
        shown = ", ".join(f"{r:.0f}" for r in rates)
        print("distributed (Redis + PostgreSQL), scripted committee of 5, worker prefork x4:")
        print(f"  submit from one client process, no worker taking them: {alone} (target >= 100/s)")
        print(
            "  submit from one client process, the workers running them: "
            f"median {statistics.median(rates):6.1f}/s ({shown})"
        )
        chats = ask_rate(client, 64, 32, "distributed")
        print(f"  ask from one client process, 32 chats in flight: {chats:6.1f} chats/s")
        throughput(bench, args.rounds, args.at_once)


def throughput(bench: Any, rounds: int, at_once: int) -> None:
    """``at_once`` one-turn conversations submitted at once, then waited for: raw and peerblend
    alternated. With each side's CPU per turn (client, workers, Redis, PostgreSQL: on a CPU-bound
    machine their ratio is the throughput's) and Redis commands per turn."""
    import redis

    from tests.conftest import REDIS_URL

    def raw(k: int) -> None:
        results = [bench.raw.turn().apply_async() for _ in range(at_once)]
        for result in results:
            result.get(timeout=300, interval=0.005)

    def raw_started(routed: bool) -> Callable[[int], None]:
        def run(k: int) -> None:
            final_ids = [uuid.uuid4().hex for _ in range(at_once)]
            for final_id in final_ids:
                bench.raw.send_start(final_id, routed=routed)
            for final_id in final_ids:
                bench.raw.app.AsyncResult(final_id).get(timeout=300, interval=0.005)

        return run

    def ours(k: int) -> None:
        handles = [bench.client.submit([f"at once {k} {i}?"]) for i in range(at_once)]
        for handle in handles:
            handle.wait(timeout=300)

    def commands() -> int:
        with redis.Redis.from_url(REDIS_URL) as server:
            return sum(int(stat["calls"]) for stat in server.info("commandstats").values())

    def measure(run: Callable[[int], None], k: int) -> tuple[float, dict[str, float], float]:
        cpu, calls = bench.cpu_seconds(), commands()
        started = time.perf_counter()
        run(k)
        rate = at_once / (time.perf_counter() - started)
        used = {name: (after - cpu[name]) * 1000 / at_once for name, after in bench.cpu_seconds().items()}
        return rate, used, (commands() - calls) / at_once

    runs = {
        "raw canvas": raw,
        "raw, started": raw_started(False),
        "raw, routed": raw_started(True),
        "peerblend": ours,
    }
    for run in runs.values():
        measure(run, -1)  # warm-up
    sides: dict[str, list[tuple[float, dict[str, float], float]]] = {side: [] for side in runs}
    print(f"  {at_once} one-turn conversations at once (5 generators + 5 reviewers), alternated:")
    print("  (raw canvas: sent by the client, every task on one queue; started: sent from a worker on a")
    print("  start message, as peerblend sends a turn; routed: started, and each member's tasks on its own")
    print("  queue, the aggregate and start on a sixth, as peerblend routes them)")
    for k in range(rounds):
        for side, run in runs.items():
            sides[side].append(measure(run, k))
        rates = {side: results[-1][0] for side, results in sides.items()}
        print(
            f"    round {k + 1}: raw canvas {rates['raw canvas']:5.1f}, started {rates['raw, started']:5.1f}, "
            f"routed {rates['raw, routed']:5.1f}, peerblend {rates['peerblend']:5.1f} turns/s "
            f"({rates['peerblend'] / rates['raw canvas']:.2f}x the raw canvas, "
            f"{rates['peerblend'] / rates['raw, routed']:.2f}x routed)"
        )
    medians = {side: statistics.median(r for r, _, _ in results) for side, results in sides.items()}
    ratio = medians["peerblend"] / medians["raw canvas"]
    print(
        f"  median: raw {medians['raw canvas']:.1f}, peerblend {medians['peerblend']:.1f} turns/s: "
        f"{ratio:.2f}x the raw floor (target >= 0.9x); "
        f"{medians['peerblend'] / medians['raw, routed']:.2f}x the routed raw canvas "
        f"({medians['raw, routed']:.1f} turns/s)"
    )
    print("  CPU ms per turn (median of the rounds; the idle side's worker is its background cost):")
    names = list(sides["raw canvas"][0][1])
    print("    " + " " * 13 + "".join(f"{name:>11}" for name in [*names, "total"]) + "  Redis commands")
    for side, results in sides.items():
        per = {name: statistics.median(used[name] for _, used, _ in results) for name in names}
        calls = statistics.median(c for _, _, c in results)
        print(
            f"    {side:<13}"
            + "".join(f"{per[name]:11.1f}" for name in names)
            + f"{sum(per.values()):11.1f}  {calls:8.0f}"
        )


def services() -> Settings | None:
    """The distributed settings of the benchmark, when Redis and PostgreSQL answer."""
    from pipeline.errors import ServiceUnavailable
    from tests.conftest import POSTGRES_URL, REDIS_URL
    from workers.services import check_services

    settings = Settings(
        broker_url=f"{REDIS_URL}/0",
        result_backend=f"{REDIS_URL}/1",
        database_url=os.environ.get("PEERBLEND_BENCH_DATABASE", f"{POSTGRES_URL}/test"),
    )
    try:
        check_services(settings)
    except ServiceUnavailable as error:
        print(f"distributed: skipped ({error})")
        return None
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60, help="one-turn chats per latency series")
    parser.add_argument("--submits", type=int, default=200, help="submits per submit-rate series")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds of the at-once throughput")
    parser.add_argument("--at-once", type=int, default=200, help="conversations submitted at once")
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument("--skip-distributed", action="store_true")
    args = parser.parse_args()
    print(f"load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    if not args.skip_embedded:
        embedded(args)
    settings = None if args.skip_distributed else services()
    if settings is not None:
        distributed(args, settings)
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
