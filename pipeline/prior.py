"""The member prior: how good each member's answers are, as one more ballot of the Borda count.

Everything about it lives here. When a committee asks for it (``member_prior = true``), each
member's mean quality on the calibration split (``fit_prior``), per question feature
("passage": the turn has a grounding passage, "no_passage"; "all" pooled), is stored per
committee under ``store_keys.prior_key``; a turn reads its feature's bucket, else the pooled one
(``stored_prior``, ``select_prior``). Its ballot (``MemberPrior.ballot``) orders the turn's
candidates by their member's quality; its weight is its own calibrated trust (the mean Spearman
correlation of the prior's order with the candidates' quality, floored at 0) when reviewer
weights are calibrated, else 1: one voter. The Borda count adds it (``pipeline.aggregate.decide``),
or it ranks alone (``decide_by_prior``, re-ranking stored runs); the decision record shows it
(``prior_record``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.borda import Ballot
from pipeline.committee import CALIBRATED_MODES, Committee
from pipeline.correlation import ballot_correlation
from pipeline.policy import PolicyStore
from pipeline.store_keys import prior_key

PRIOR_VOTER = "(member prior)"  # the prior's ballot; no member can have this name


@dataclass(frozen=True)
class MemberPrior:
    """How good each member's answers are (higher is better), and the weight of the prior's ballot."""

    quality: dict[str, float]
    weight: float = 1.0
    note: str = ""

    def ballot(self, pool: Sequence[str]) -> Ballot:
        """The members of ``pool`` the prior knows, best first (ties keep ``pool`` order)."""
        known = [m for m in pool if m in self.quality]
        return Ballot(PRIOR_VOTER, tuple(sorted(known, key=lambda m: -self.quality[m])))


PRIOR_BUCKETS = ("passage", "no_passage")
POOLED = "all"


def prior_bucket(has_passage: bool) -> str:
    """The question feature the prior is fitted and read by."""
    return PRIOR_BUCKETS[0] if has_passage else PRIOR_BUCKETS[1]


def fit_prior(turns: Sequence[tuple[str, Mapping[str, float]]]) -> dict[str, dict[str, Any]]:
    """Per bucket (and ``all``): each member's mean quality, the prior's calibrated weight, the turn count.

    ``turns``: (bucket, quality per usable candidate, higher is better) of gold-annotated turns.
    """
    fitted: dict[str, dict[str, Any]] = {}
    for bucket in (*PRIOR_BUCKETS, POOLED):
        mine = [quality for b, quality in turns if bucket in (b, POOLED)]  # POOLED takes every turn
        if not mine:
            continue
        sums: dict[str, list[float]] = {}
        for quality in mine:
            for member, value in quality.items():
                total, count = sums.get(member, [0.0, 0.0])
                sums[member] = [total + value, count + 1]
        prior = MemberPrior({m: total / count for m, (total, count) in sums.items()})
        agreement = [ballot_correlation(prior.ballot(list(q)).ranking, q) for q in mine]
        measured = [a for a in agreement if a is not None]
        weight = max(0.0, sum(measured) / len(measured)) if measured else 0.0
        fitted[bucket] = {"quality": prior.quality, "weight": weight, "turns": len(mine)}
    return fitted


def select_prior(
    stored: Mapping[str, object] | None, *, has_passage: bool, calibrated_weight: bool
) -> MemberPrior | None:
    """The prior for a turn from a stored ``fit_prior`` value: its feature's bucket, else the pooled one."""
    buckets = dict(stored or {})
    bucket = prior_bucket(has_passage)
    chosen = buckets.get(bucket) or buckets.get(POOLED)
    if not isinstance(chosen, Mapping):
        return None
    used = bucket if bucket in buckets else POOLED
    quality = {str(m): float(q) for m, q in dict(chosen["quality"]).items()}
    weight = float(chosen["weight"]) if calibrated_weight else 1.0
    how = "calibrated weight" if calibrated_weight else "weight 1 (one voter)"
    return MemberPrior(quality, weight, f"member prior ({used}, {chosen['turns']} turns), {how}")


def stored_prior(store: PolicyStore, committee: Committee, *, has_passage: bool) -> MemberPrior | None:
    """This turn's member prior, when the committee asks for one and a calibration stored it."""
    if not committee.member_prior:
        return None
    stored = store.get(prior_key(committee.name)) or {}
    prior = select_prior(
        stored.get("buckets"),
        has_passage=has_passage,
        calibrated_weight=committee.reviewer_weights in CALIBRATED_MODES,
    )
    if prior is None:
        return MemberPrior({}, 0.0, "member prior requested but none stored (run `peerblend calibrate`)")
    return prior


def prior_record(ranking: Sequence[str], prior: MemberPrior | None) -> dict[str, Any]:
    """The prior's fields of a turn's decision record: its quality of the ranked members, weight, note."""
    if prior is None:
        return {}
    pool = set(ranking)
    return {
        "prior": {m: round(q, 6) for m, q in prior.quality.items() if m in pool},
        "prior_weight": prior.weight,
        "prior_note": prior.note,
    }
