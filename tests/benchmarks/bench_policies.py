"""Benchmark: ranking-reduction policies and the pairwise baseline, side by side in one run.

Blends each conversation of a real dataset slice once per configuration, one
conversation at a time, interleaving the configurations conversation by
conversation so that machine noise hits them alike. Prints, per configuration,
mean latency per question, model calls per question and the speed-up against
peer-blend with the `full` policy. (Quality: replay the same configurations and
run `peerblend report`.)

    .venv/bin/python tests/benchmarks/bench_policies.py [--conversations 4] [--turns 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
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
CONFIGS = [  # (label, method, policy, top_k)
    ("peer-blend full", "peer", "full", 1),
    ("peer-blend p1", "peer", "p1", 1),
    ("peer-blend p2", "peer", "p2", 1),
    ("peer-blend p3", "peer", "p3", 1),
    ("pairwise K=1", "pairwise", "full", 1),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DATA / "convquestions" / "val_music.json")
    parser.add_argument("--conversations", type=int, default=4)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--stride", type=int, default=97)
    args = parser.parse_args()

    picked = load_conversations(args.dataset)[:: args.stride][: args.conversations]
    latency: dict[str, list[float]] = defaultdict(list)
    calls: dict[str, list[float]] = defaultdict(list)
    with connect(Settings(home=Path(tempfile.mkdtemp(prefix="peerblend-policies-")))) as client:
        runtime_of(client.app).preload()
        for conversation in picked:
            short = Conversation(conversation.questions[: args.turns], id=conversation.id)
            for label, method, policy, top_k in CONFIGS:
                outcomes = client.submit(short, method=method, policy=policy, top_k=top_k).wait(timeout=3600)
                latency[label] += [o.timings["total_s"] for o in outcomes]
                calls[label] += [o.timings["model_calls"] for o in outcomes]
    full = statistics.mean(latency["peer-blend full"])
    print(
        f"{len(picked)} conversations x {args.turns} turns of {args.dataset.name}, committee "
        f"{client.committee.name}, one conversation at a time, configurations interleaved"
    )
    print(f"  {'configuration':18s} {'s/question':>11s} {'calls/question':>15s} {'speed-up vs full':>17s}")
    for label, *_ in CONFIGS:
        mean = statistics.mean(latency[label])
        print(f"  {label:18s} {mean:11.2f} {statistics.mean(calls[label]):15.1f} {full / mean:16.2f}x")


if __name__ == "__main__":
    main()
