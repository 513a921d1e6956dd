"""How good each reviewer is as a judge, from a stored run's ballots and gold answers (pure).

Input: the rows of ``db.runs.run_records`` (every review with its status, every
candidate) and the committee. Per reviewer and dataset:

- ``ballots``: reviews over 2+ usable candidates; ``parsed``: those that gave a
  ranking (scored, strict, fallback), the rest by status (copied, unparsable,
  error, timeout);
- ``voter``: the reviewers whose judgement is the same function
  (``pipeline.aggregate.judgement_key``), which count as one voter;
- ``tau``: mean Kendall tau-b between the reviewer's ranking and the candidates'
  token F1 against the gold, over answerable turns where the F1s differ (1: the
  reviewer orders the candidates as the gold does; 0: unrelated);
- ``top1_f1``: mean F1 of the reviewer's first choice over answerable ranked turns
  (what the reviewer alone would score as the selector), beside ``random_f1`` and
  ``best_f1`` over the same turns;
- ``own_model_first``: how often its first choice was written by its own model
  (self-preference), over turns where another model's answer was also ranked;
- ``seconds``: mean time per review.

A review computed once for a voter group (``voters``) counts as each member's
ballot, with the group's review time.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

from pipeline.aggregate import judgement_keys, voter_groups
from pipeline.committee import Committee
from pipeline.evaluation.datasets import answerable
from pipeline.evaluation.metrics import best_f1
from pipeline.plan import is_ballot

RANKED = ("scored", "ok", "constrained", "structured", "fallback")  # the statuses of a counted ballot


@dataclass
class ReviewerStats:
    reviewer: str
    method: str
    dataset: str
    voter: tuple[str, ...]  # this reviewer and every other one judging as it does
    statuses: Counter[str] = field(default_factory=Counter)
    taus: list[float] = field(default_factory=list)
    top1: list[float] = field(default_factory=list)
    random: list[float] = field(default_factory=list)
    best: list[float] = field(default_factory=list)
    own_first: list[bool] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def ballots(self) -> int:
        return sum(self.statuses.values())

    @property
    def parsed(self) -> int:
        return sum(self.statuses[s] for s in RANKED)


def kendall_tau_b(ranking: Sequence[str], values: Mapping[str, float]) -> float | None:
    """Kendall tau-b between a best-first ranking and values (higher is better); None if the
    values (or the ranking) leave no untied pair."""
    position = {m: i for i, m in enumerate(ranking)}
    items = [m for m in ranking if m in values]
    concordant = discordant = ties_rank = ties_value = 0
    for i, a in enumerate(items):
        for b in items[i + 1 :]:
            by_rank = position[b] - position[a]  # > 0: a ranked above b
            by_value = values[a] - values[b]  # > 0: a better by gold
            if by_value == 0:
                ties_value += 1
            elif by_rank * by_value > 0:
                concordant += 1
            else:
                discordant += 1
            ties_rank += by_rank == 0
    pairs = len(items) * (len(items) - 1) // 2
    denominator = ((pairs - ties_rank) * (pairs - ties_value)) ** 0.5
    return None if denominator == 0 else (concordant - discordant) / denominator


def reviewer_stats(rows: Sequence[Mapping[str, Any]], committee: Committee) -> list[ReviewerStats]:
    """One entry per (reviewer, dataset) that reviewed a turn, then per reviewer over all ("all")."""
    keys = judgement_keys(committee)
    groups = {name: group for group in voter_groups(list(keys), keys) for name in group}
    model_of = {m.name: m.model for m in committee.members}
    stats: dict[tuple[str, str], ReviewerStats] = {}
    for row in rows:
        dataset = str(row["conversation"].get("source") or "unknown")
        texts = {
            c["member"]: c["text"] for c in row["candidates"] if c["error"] is None and c["text"].strip()
        }
        if len(texts) < 2:
            continue
        gold = list(row["gold"])
        f1 = {m: best_f1(t, gold) for m, t in texts.items()} if answerable(gold) else None
        for review in row["reviews"]:
            if not is_ballot(review):  # a method's other records (a judgement matrix)
                continue
            for name in review.get("voters") or [review["reviewer"]]:  # a group's ballot, per member
                for where in (dataset, "all"):
                    entry = stats.setdefault(
                        (name, where),
                        ReviewerStats(name, review["method"], where, groups.get(name, (name,))),
                    )
                    _add(entry, review, f1, model_of)
    return sorted(stats.values(), key=lambda s: (s.dataset == "all", s.dataset, s.reviewer))


def _add(
    entry: ReviewerStats,
    review: Mapping[str, Any],
    f1: Mapping[str, float] | None,
    model_of: Mapping[str, str],
) -> None:
    entry.statuses[review["status"]] += 1
    if review.get("seconds") is not None:
        entry.seconds.append(float(review["seconds"]))
    ranking = [m for m in review["ranking"] if f1 is None or m in f1]
    if not ranking or review["status"] not in RANKED:
        return
    own = model_of.get(entry.reviewer)
    if any(model_of.get(m) != own for m in ranking):
        entry.own_first.append(model_of.get(ranking[0]) == own)
    if f1 is None:
        return
    entry.top1.append(f1[ranking[0]])
    entry.random.append(fmean(f1.values()))
    entry.best.append(max(f1.values()))
    tau = kendall_tau_b(ranking, f1)
    if tau is not None:
        entry.taus.append(tau)


def render_reviewers(stats: Sequence[ReviewerStats]) -> str:
    """A markdown table of ``reviewer_stats``, a block per dataset."""
    lines = [
        "| dataset | reviewer | method | voter (judges as) | ballots | parsed | dropped (status) | "
        "tau vs gold (turns) | first choice F1 | random F1 | best F1 | own model first | s/review |",
        "| --- | --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    by_dataset: dict[str, list[ReviewerStats]] = defaultdict(list)
    for s in stats:
        by_dataset[s.dataset].append(s)
    for dataset, entries in by_dataset.items():
        voters = len({s.voter for s in entries})
        for s in entries:
            dropped = ", ".join(f"{k} {v}" for k, v in sorted(s.statuses.items()) if k not in RANKED) or "-"
            lines.append(
                "| "
                + " | ".join(
                    [
                        f"{dataset} ({voters} voters)",
                        s.reviewer,
                        s.method,
                        " = ".join(s.voter),
                        str(s.ballots),
                        f"{100 * s.parsed / s.ballots:.0f} %" if s.ballots else "-",
                        dropped,
                        f"{fmean(s.taus):+.2f} ({len(s.taus)})" if s.taus else "-",
                        _mean100(s.top1),
                        _mean100(s.random),
                        _mean100(s.best),
                        f"{100 * fmean(s.own_first):.0f} %" if s.own_first else "-",
                        f"{fmean(s.seconds):.2f}" if s.seconds else "-",
                    ]
                )
                + " |"
            )
    return "\n".join(lines) + "\n"


def _mean100(values: Sequence[float]) -> str:
    return f"{100 * fmean(values):.1f}" if values else "-"
