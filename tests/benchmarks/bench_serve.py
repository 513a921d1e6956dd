"""Benchmark: what the chat server adds over the Python client, and how many chats it serves.

One process, the embedded deployment (in-process worker, SQLite) with a scripted
zero-cost committee of 3, so the figures are peerblend's own overhead:

1. Added latency: one-turn chats, alternately through ``LiveConversation.ask``
   directly and through ``POST /v1/chat/completions`` on a uvicorn server running in
   this process (httpx client, keep-alive); the median difference is what the
   server adds (target <= 10 ms).
2. Throughput: requests per second with 1, 8 and 32 chats in flight at once.
3. ``submit`` rate from one client process (conversations stored and sent per second).

    .venv/bin/python tests/benchmarks/bench_serve.py [--requests 60]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PEERBLEND_TEST_BACKENDS", "1")

import httpx  # noqa: E402
import uvicorn  # noqa: E402

from pipeline.committee import Committee, Member  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from workers.embedded import connect  # noqa: E402
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60, help="one-turn chats per latency series")
    parser.add_argument("--port", type=int, default=8791)
    args = parser.parse_args()
    settings = Settings(home=Path(tempfile.mkdtemp(prefix="peerblend-serve-")), embedded_concurrency=16)
    with connect(settings, committee()) as client:
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
        print(f"one-turn chats, {args.requests} each, alternated (2 CPU cores, scripted committee of 3):")
        print(f"  LiveConversation.ask  median {1000 * statistics.median(direct):7.1f} ms")
        print(f"  POST chat/completions median {1000 * statistics.median(served):7.1f} ms")
        added = [s - d for s, d in zip(served, direct, strict=True)]
        print(f"  added by the server: median {1000 * statistics.median(added):.1f} ms (target <= 10 ms)")
        for in_flight in (1, 8, 32):
            rate = asyncio.run(rps(url, in_flight, max(32, 2 * in_flight)))
            print(f"  {in_flight:2d} chats in flight: {rate:6.1f} requests/s")
        started = time.perf_counter()
        for i in range(200):
            client.submit([f"submitted {i}?"])
        print(f"submit from one client process: {200 / (time.perf_counter() - started):.0f} conversations/s")
        server.should_exit = True


if __name__ == "__main__":
    main()
