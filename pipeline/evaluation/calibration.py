"""Fitting reviewer weights and the member prior from a run with gold answers (pure).

Input: the rows of ``db.runs.run_turns`` of one calibration run, whether each
conversation had a grounding passage (the prior's question feature), and a quality
function ``quality(text, golds) -> float`` (token F1 by default; higher is better).
Questions without a scorable gold (none, or CANNOTANSWER by QuAC's rule) are left out.

- Reviewer weights (``pipeline.weights.calibrate``): turns with 3+ usable candidates
  and at least one ballot (Spearman needs three items); pooled, and per question
  feature bucket (passage / no passage) for ``calibrated-passage``.
- Member prior (``pipeline.prior.fit_prior``): every turn with a usable candidate;
  a member's quality is the mean over the turns it answered, so calibrate on a
  full-policy run (reduced policies leave members out of later turns).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.borda import Ballot
from pipeline.evaluation.datasets import answerable
from pipeline.evaluation.metrics import best_f1
from pipeline.prior import fit_prior, prior_bucket
from pipeline.weights import calibrate

Quality = Callable[[str, Sequence[str]], float]


@dataclass(frozen=True)
class Calibration:
    """What a calibration run gave: reviewer weights, the member prior per bucket, and from how much."""

    weights: dict[str, float]
    feature_weights: dict[str, dict[str, float]]  # bucket (passage / no_passage) -> weights fitted there
    prior: dict[str, dict[str, Any]]  # bucket -> {"quality": {member: q}, "weight": w, "turns": n}
    reviewed_turns: int  # turns that fitted the reviewer weights
    turns: int  # turns that fitted the prior


def fit_calibration(
    rows: Sequence[Mapping[str, Any]], has_passage: Mapping[str, bool], quality: Quality = best_f1
) -> Calibration:
    """Reviewer weights and member prior from the run's stored candidates, ballots and golds."""
    scorable = [r for r in rows if answerable(r["gold"]) and r["candidates"]]
    scored = [{m: quality(text, r["gold"]) for m, text in r["candidates"].items()} for r in scorable]
    buckets = [prior_bucket(has_passage.get(str(r["conversation_id"]), False)) for r in scorable]
    reviewed = [
        (bucket, [Ballot(reviewer, tuple(ranking)) for reviewer, ranking in r["ballots"].items()], values)
        for r, values, bucket in zip(scorable, scored, buckets, strict=True)
        if r["ballots"] and len(values) > 2
    ]
    by_bucket = {
        b: calibrate([(ballots, values) for bucket, ballots, values in reviewed if bucket == b])
        for b in dict.fromkeys(bucket for bucket, _, _ in reviewed)
    }
    return Calibration(
        weights=calibrate([(ballots, values) for _, ballots, values in reviewed]),
        feature_weights=by_bucket,
        prior=fit_prior(list(zip(buckets, scored, strict=True))),
        reviewed_turns=len(reviewed),
        turns=len(scorable),
    )
