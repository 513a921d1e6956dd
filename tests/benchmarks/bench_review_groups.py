"""Benchmark: the review stage with each judgement computed once, against one review per reviewer.

Blends the same few real ConvQuestions conversations twice with the default offline
committee in the embedded deployment (in-process worker with threads, SQLite, CPU):
once with ``one_review_per_voter = false`` (before: every reviewer runs its own review,
so gemma3-fewshot-a and gemma3-fewshot-b score the same likelihood ballot twice) and
once with the default (after: one review per voter group). The two sides alternate
conversation by conversation (which goes first alternates too), in one process with
the models loaded once, so both see the same machine load.

Each reviewer is shown the candidates in the same order on both sides (the review
seed is taken without the conversation id, which differs between the two runs), so
with greedy generation the two sides should decide the same way; the script counts
the turns where they do.

Per turn: ``review_s`` (the stage's wall time, from the last answer to the last
ballot), the seconds of all reviews summed (each from its call to its ballot, waits
for a busy model included), the review model calls (one per review task), the
turn's total, and ``cpu_s``: the process's CPU seconds per turn, submit to stored
(generation included, the same on both sides: the difference is the reviews saved).

    .venv/bin/python tests/benchmarks/bench_review_groups.py [--conversations 3] [--turns 2] [--weights uniform]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pipeline.stages  # noqa: E402
from pipeline.ballot import review_seed  # noqa: E402
from pipeline.committee import Committee, default_committee  # noqa: E402
from pipeline.conversation import Conversation  # noqa: E402
from pipeline.evaluation.datasets import load_conversations  # noqa: E402
from pipeline.service.settings import Settings  # noqa: E402
from workers.embedded import connect  # noqa: E402
from workers.runtime import runtime_of  # noqa: E402

DATA = Path(os.environ.get("PEERBLEND_SHARED_DATA", ROOT.parent / "shared" / "data")) / "convqa"
SIDES = ("before", "after")


def committee_of(side: str, weights: str | None) -> Committee:
    committee = default_committee()
    changes: dict[str, Any] = {"one_review_per_voter": side == "after"}
    if weights is not None:
        changes["reviewer_weights"] = weights
    return committee.model_copy(update=changes)


def blend(
    side: str, home: Path, conversation: Conversation, *, preload: bool, weights: str | None
) -> tuple[list[Any], float]:
    """Blend ``conversation`` on one side: its stored turns, and the CPU seconds this process spent
    from submit to the last turn stored (every model runs in it)."""
    with connect(Settings(home=home), committee_of(side, weights)) as client:
        if preload:
            started = time.perf_counter()
            runtime_of(client.app).preload()
            print(f"models loaded in {time.perf_counter() - started:.1f} s")
        cpu = time.process_time()
        handle = client.submit(conversation)
        handle.wait(timeout=1800)
        cpu = time.process_time() - cpu
        return client.fetch(handle.conversation_id).turns, cpu


def turn_figures(turn: Any) -> dict[str, float]:
    timings = turn.result["timings"]
    return {
        "review_s": timings["review_s"],
        "review_model_s_sum": sum(r["seconds"] for r in turn.reviews),
        "review_calls": float(len(turn.reviews)),
        "total_s": timings["total_s"],
    }


def explain(before: Any, after: Any) -> None:
    """Why a turn was decided differently: other candidates, or other ballots over the same ones."""
    texts = {
        side: {c["member"]: c["text"] for c in t.candidates}
        for side, t in zip(SIDES, (before, after), strict=True)
    }
    print(f"  turn {before.turn_index + 1} differs: {before.question!r}")
    for member, text in texts["before"].items():
        if text != texts["after"].get(member):
            print(f"    {member} answered otherwise: {text!r} -> {texts['after'].get(member)!r}")
    shared = sorted(
        {
            m
            for m in texts["after"]
            for n in texts["after"]
            if m != n and texts["after"][m] == texts["after"][n]
        }
    )
    if shared:
        print(f"    identical answers (tied in every likelihood ballot): {', '.join(shared)}")
    for side, turn in zip(SIDES, (before, after), strict=True):
        ballots = "; ".join(
            f"{r['reviewer']}: {' > '.join(r['ranking']) or r['status']}" for r in turn.reviews
        )
        scores = ", ".join(f"{m} {v:.3g}" for m, v in turn.result["scores"].items())
        print(f"    {side}: chose {turn.result['chosen']} ({scores}) | {ballots}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DATA / "convquestions" / "val_books.json")
    parser.add_argument("--conversations", type=int, default=3)
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--stride", type=int, default=41, help="take every n-th conversation (variety)")
    parser.add_argument(
        "--weights",
        choices=("uniform", "learned"),
        help="the committee's reviewer_weights (default: the default committee's; uniform: the Borda count)",
    )
    args = parser.parse_args()

    # The same shuffles on both sides: the seed without the conversation id (see the docstring).
    pipeline.stages.review_seed = lambda _conversation, turn, reviewer: review_seed("bench", turn, reviewer)  # type: ignore[attr-defined]
    everything = load_conversations(args.dataset)
    picked = everything[:: args.stride][: args.conversations]
    homes = {side: Path(tempfile.mkdtemp(prefix=f"peerblend-groups-{side}-")) for side in SIDES}
    figures: dict[str, dict[str, list[float]]] = {side: defaultdict(list) for side in SIDES}
    per_review: dict[str, dict[str, list[float]]] = {side: defaultdict(list) for side in SIDES}
    rules: dict[str, Counter[str]] = {side: Counter() for side in SIDES}
    same = {"answer": 0, "chosen": 0, "ranking": 0, "scores": 0}
    turns = 0
    for i, conversation in enumerate(picked):
        short = Conversation(conversation.questions[: args.turns], id=conversation.id)
        order = SIDES if i % 2 == 0 else SIDES[::-1]
        stored = {}
        for side in order:
            stored[side], cpu = blend(
                side, homes[side], short, preload=i == 0 and side == order[0], weights=args.weights
            )
            figures[side]["cpu_s"] += [cpu / len(stored[side])] * len(stored[side])
        for before, after in zip(stored["before"], stored["after"], strict=True):
            turns += 1
            for side, turn in (("before", before), ("after", after)):
                for key, value in turn_figures(turn).items():
                    figures[side][key].append(value)
                for r in turn.reviews:
                    per_review[side][r["reviewer"]].append(r["seconds"])
                rules[side][str(turn.result["decision"].get("decided_by") or turn.result["status"])] += 1
            old, new = before.result, after.result
            same["answer"] += old["answer"] == new["answer"]
            same["chosen"] += old["chosen"] == new["chosen"]
            same["ranking"] += old["ranking"] == new["ranking"]
            agree = all(abs(old["scores"][m] - new["scores"].get(m, 0.0)) < 1e-6 for m in old["scores"])
            same["scores"] += agree
            if not agree:
                explain(before, after)
        print(f"conversation {i + 1}/{len(picked)} done ({' then '.join(order)})", flush=True)

    print(
        f"\n{turns} turns per side ({len(picked)} conversations x {args.turns} turns), default committee, "
        f"{os.cpu_count()} CPU cores, fp32; mean / median per turn"
    )
    print(f"  {'':22s}{'before':>20s}{'after':>20s}{'after/before':>14s}")
    for key in ("review_s", "review_model_s_sum", "review_calls", "total_s", "cpu_s"):
        means = {side: statistics.mean(figures[side][key]) for side in SIDES}
        shown = "".join(
            f"{means[side]:10.3f} / {statistics.median(figures[side][key]):7.3f}" for side in SIDES
        )
        print(f"  {key:22s}{shown}{means['after'] / means['before']:14.2f}")
    print("\nseconds per review (call to ballot, waits for a busy model included), mean over turns")
    for reviewer in per_review["before"]:
        shown = "".join(
            f"{statistics.mean(per_review[side][reviewer]):20.3f}"
            if per_review[side][reviewer]
            else f"{'-':>20s}"
            for side in SIDES
        )
        print(f"  {reviewer:22s}{shown}")
    for side in SIDES:
        print(f"\ndecided by ({side}): " + "; ".join(f"{rule} ({n})" for rule, n in rules[side].items()))
    print("\nturns where the two sides agree: " + ", ".join(f"{k} {v}/{turns}" for k, v in same.items()))


if __name__ == "__main__":
    main()
