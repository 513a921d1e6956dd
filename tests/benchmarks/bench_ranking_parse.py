"""Benchmark: ranking reviews written as free text vs by constrained decoding, with the offline models.

For N turns of real ConvQuestions conversations (the gold answers as the earlier
turns' answers), the four members of the default offline committee answer; then
one ranking reviewer per offline model (SmolLM2-135M, Gemma-3-270M) reviews the
usable candidates twice, through ``pipeline.stages.review`` as a turn does:

- free: the reviewer writes text after the prefilled "Ranking:" and
  ``parse_ranking`` reads it (the backend is told nothing of the ballot, as
  before constrained decoding);
- constrained: the same prompt with ``Prompt.ballot``, so the in-process backend
  can only write a complete strict ballot of the labels shown.

Per model and arm it prints the statuses, the parse rate (a ballot was read:
ok, fallback, constrained, or copied, which parses but is dropped), the counted
rate (ballots the Borda count uses), how often the ballot is exactly the order
shown (of the parsed ones) and the seconds per review (one review at a time).

    OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/bench_ranking_parse.py [--turns 40] \
        [--out docs/results/ranking.md]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipeline.backend import Backend, Prompt, ScoreRequest  # noqa: E402
from pipeline.ballot_grammar import BallotPath  # noqa: E402
from pipeline.committee import Committee, default_committee  # noqa: E402
from pipeline.records import CandidateRecord, ReviewRecord, TurnContext  # noqa: E402
from pipeline.stages import answer, review  # noqa: E402
from tests.benchmarks.bench_injection import turns_of  # noqa: E402
from workers.backends.base import BackendSpec  # noqa: E402
from workers.backends.hf import TransformersBackend  # noqa: E402

DATA = Path(os.environ.get("PEERBLEND_SHARED_DATA", ROOT.parent / "shared" / "data")) / "convqa"
FILES = ("val_music.json", "val_soccer.json")
ARMS = ("free", "constrained")
PARSED = ("ok", "fallback", "constrained", "structured", "copied")
COUNTED = ("ok", "fallback", "constrained", "structured")


class FreeText:
    """The same model, told nothing of the ballot: free text, as before constrained decoding."""

    def __init__(self, inner: TransformersBackend) -> None:
        self.inner = inner

    def generate(self, prompts: Sequence[Prompt]) -> list[str]:
        return self.inner.generate([replace(p, ballot=()) for p in prompts])

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        raise NotImplementedError

    def ballot_path(self, labels: Sequence[str]) -> BallotPath:
        return BallotPath.PARSED


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--stride", type=int, default=37, help="take every n-th conversation (variety)")
    parser.add_argument("--out", type=Path, default=None, help="write the table as markdown here too")
    args = parser.parse_args()

    committee = default_committee()
    models = sorted({m.model for m in committee.members})
    backends = {model: TransformersBackend(BackendSpec(model=model)) for model in models}
    reviewers = {
        model: next(m for m in committee.members if m.model == model).model_copy(
            update={"name": f"{model}-ranking", "review_method": "ranking"}
        )
        for model in models
    }
    records: dict[tuple[str, str], list[ReviewRecord]] = defaultdict(list)
    started = time.perf_counter()
    for number, context in enumerate(
        turns_of([DATA / "convquestions" / name for name in FILES], args.turns, args.stride, prefix="rank"),
        start=1,
    ):
        candidates = _answers(committee, backends, context)
        for model, reviewer in reviewers.items():
            arms: dict[str, Backend] = {"free": FreeText(backends[model]), "constrained": backends[model]}
            for arm, backend in arms.items():
                records[(model, arm)].append(review(backend, reviewer, committee, context, candidates))
        print(f"turn {number}/{args.turns} ({time.perf_counter() - started:.0f} s)", flush=True)
    report = render(records, args.turns, time.perf_counter() - started)
    print(report)
    if args.out:
        args.out.write_text(report)


def _answers(
    committee: Committee, backends: dict[str, TransformersBackend], context: TurnContext
) -> list[CandidateRecord]:
    generators = [committee.member(name) for name in committee.generators]
    return [answer(backends[m.model], m, committee, context) for m in generators]


def render(records: dict[tuple[str, str], list[ReviewRecord]], turns: int, seconds: float) -> str:
    lines = [
        "| reviewer model | arm | reviews | parsed (%) | counted (%) | = shown order (% of parsed) "
        "| s / review | statuses |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for (model, arm), reviews in sorted(records.items(), key=lambda kv: (kv[0][0], ARMS.index(kv[0][1]))):
        ranked = [r for r in reviews if len(r.shown_order) >= 2]
        statuses = Counter(r.status for r in ranked)
        parsed = [r for r in ranked if r.status in PARSED]
        counted = sum(statuses[s] for s in COUNTED)
        copied = sum(1 for r in parsed if r.status == "copied" or r.ranking == r.shown_order)
        mean_s = sum(r.seconds for r in ranked) / max(len(ranked), 1)
        lines.append(
            f"| {model} | {arm} | {len(ranked)} | {_pct(len(parsed), len(ranked))} "
            f"| {_pct(counted, len(ranked))} | {_pct(copied, len(parsed))} | {mean_s:.2f} "
            f"| {', '.join(f'{k} {v}' for k, v in sorted(statuses.items()))} |"
        )
    lines += ["", f"{turns} turns, run time {seconds / 60:.1f} min.", ""]
    return "\n".join(lines)


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}" if whole else "-"


if __name__ == "__main__":
    main()
