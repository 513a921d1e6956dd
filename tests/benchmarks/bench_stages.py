"""Benchmark: where a turn's time goes with the real offline committee.

Blends a few real ConvQuestions conversations in the embedded deployment (one
process, in-process worker with threads, SQLite) with the default offline
committee (SmolLM2-135M x2, Gemma-3-270M x2, CPU), after loading the models,
and prints the per-stage breakdown from the stored timings. Then the same turns again
with the committee's slowest generator alone (``single:<member>``), alternating
conversation by conversation with the committee, and the ratio of the two turn times:
what blending costs over the slowest member answering by itself.

    .venv/bin/python tests/benchmarks/bench_stages.py [--conversations 3] [--turns 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipeline.conversation import Conversation  # noqa: E402
from pipeline.evaluation.datasets import load_conversations  # noqa: E402
from pipeline.service.settings import Settings  # noqa: E402
from workers.embedded import connect  # noqa: E402
from workers.runtime import runtime_of  # noqa: E402

DATA = Path(os.environ.get("PEERBLEND_SHARED_DATA", ROOT.parent / "shared" / "data")) / "convqa"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DATA / "convquestions" / "val_books.json")
    parser.add_argument("--conversations", type=int, default=3)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--stride", type=int, default=37, help="take every n-th conversation (variety)")
    args = parser.parse_args()

    everything = load_conversations(args.dataset)
    picked = everything[:: args.stride][: args.conversations]
    settings = Settings(home=Path(tempfile.mkdtemp(prefix="peerblend-stages-")))
    stages = defaultdict(list)
    members = defaultdict(lambda: defaultdict(list))
    rules: dict[str, int] = defaultdict(int)
    alone: list[float] = []
    with connect(settings) as client:
        started = time.perf_counter()
        runtime_of(client.app).preload()
        print(f"models loaded in {time.perf_counter() - started:.1f} s (committee {client.committee.name})")
        slowest = None
        for conversation in picked:
            short = Conversation(conversation.questions[: args.turns], id=conversation.id)
            handle = client.submit(short)
            handle.wait(timeout=1800)
            for turn in client.fetch(handle.conversation_id).turns:
                for key, value in turn.result["timings"].items():
                    stages[key].append(value)
                rules[str(turn.result["decision"].get("decided_by", "?")).split(" (")[0]] += 1
                for c in turn.candidates:
                    members[c["member"]]["generate_s"].append(c["seconds"])
                for r in turn.reviews:
                    members[r["reviewer"]][f"review_s ({r['method']})"].append(r["seconds"])
            # the slowest generator so far, alone on the same questions
            slowest = max(members, key=lambda m: statistics.mean(members[m].get("generate_s", [0.0])))
            single = client.submit(short, method=f"single:{slowest}")
            single.wait(timeout=1800)
            alone += [t.result["timings"]["total_s"] for t in client.fetch(single.conversation_id).turns]
    n = len(stages["total_s"])
    print(
        f"\nper-turn stage times over {n} turns ({args.conversations} conversations x {args.turns} turns, "
        f"{os.cpu_count()} CPU cores, fp32), mean / median seconds"
    )
    for key in ("generation_s", "review_s", "aggregate_s", "total_s"):
        print(f"  {key:14s} {statistics.mean(stages[key]):7.3f} / {statistics.median(stages[key]):7.3f}")
    print("\nper member, mean seconds inside the model (members run concurrently on shared cores)")
    for member, values in members.items():
        print("  " + member.ljust(18) + "  ".join(f"{k} {statistics.mean(v):.2f}" for k, v in values.items()))
    blend = statistics.mean(stages["total_s"])
    print(
        f"\nturn time, the committee {blend:.2f} s vs its slowest generator alone {statistics.mean(alone):.2f} s: "
        f"{blend / statistics.mean(alone):.2f}x (mean over {len(alone)} turns each, alternated)"
    )
    print("decided by: " + ", ".join(f"{rule} ({n} turns)" for rule, n in rules.items()))


if __name__ == "__main__":
    main()
