"""The peer method: the committee reviews its own answers, and the Borda count ranks them.

Each voter group of the turn's reviewers (``pipeline.aggregate.review_groups``) sends one
review task, on its first reviewer's queue, and that ballot is cast for the whole group. A
reviewed turn is ranked by the Borda count of the ballots (with the member prior and the
reviewer weights), or by the committee's learned decision when it has one
(``pipeline.learned``). Every ballot is stored as a review row. It is the blend the report
studies ("peer-blend"), compared with the single members and the committee baselines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.aggregate import Standings, review_groups
from pipeline.committee import Committee
from pipeline.learned import decide_learned
from pipeline.method import (
    Method,
    ReviewGroups,
    Rules,
    StageRecords,
    StageTask,
    by_borda,
    policy_shown,
)
from pipeline.records import CandidateRecord, Judgement, ReviewRecord

REVIEW = "workers.review"


class Peer(Method):
    name = "peer"
    queue_kwarg = "reviewer"
    stores_ballots = True
    report_role = "blend"
    described = "peer review"

    def label(self, method: str, policy: str, top_k: int) -> str:
        """peer-blend, peer-blend p2, peer-blend K=3 (K only where it fuses)."""
        return f"peer-blend{policy_shown(policy)}" + (f" K={top_k}" if top_k > 1 else "")

    def review_groups(self, committee: Committee, reviewers: Sequence[str]) -> ReviewGroups:
        """Each judgement reviewed once (``Committee.one_review_per_voter``)."""
        return review_groups(reviewers, committee) if committee.one_review_per_voter else ()

    def review_tasks(self, generators: Sequence[str], reviews: ReviewGroups) -> list[StageTask]:
        return [
            StageTask(REVIEW, {"reviewer": voters[0], "voters": list(voters)}, f"review[{'='.join(voters)}]")
            for voters in reviews
        ]

    def read(self, items: Sequence[dict[str, Any]]) -> StageRecords:
        reviews = [ReviewRecord.from_json(item) for item in items]
        # Every review carries the turn's candidates on (a chord hands on only its header's results).
        return (list(reviews[0].candidates) if reviews else []), reviews, []

    def rank(
        self,
        candidates: Sequence[CandidateRecord],
        reviews: Sequence[ReviewRecord],
        judgements: Sequence[Judgement],
        rules: Rules,
    ) -> tuple[Standings, dict[str, Any]]:
        if rules.learned is not None:
            return decide_learned(
                candidates, reviews, rules.learned, committee_order=rules.order, passage=rules.passage
            )
        return by_borda(candidates, reviews, rules), {}

    def decided_by(self, ranked: Standings, rules: Rules) -> str:
        prior, weights = rules.prior, rules.weights
        with_prior = " + the member prior" if prior is not None and prior.weight > 0 else ""
        if ranked.status == "no_ballots":
            return "no ballot counted: " + ("the member prior" if with_prior else "committee order")
        if weights.weights is not None and not any(weights.weights.values()):
            return (
                "the member prior: the reviewers weigh 0 here"
                if with_prior
                else "committee order: the reviewers weigh 0"
            )
        return f"Borda count of {len(ranked.voters)} voter(s), {weights.note}{with_prior}"

    def stored_reviews(
        self, reviews: Sequence[ReviewRecord], judgements: Sequence[Judgement]
    ) -> list[dict[str, Any]]:
        return [
            {
                "reviewer": r.reviewer,
                "method": r.method,
                "status": r.status,
                "ranking": list(r.ranking),
                "shown_order": list(r.shown_order),
                "seed": r.seed,
                "raw": r.raw,
                "error": r.error,
                "seconds": r.seconds,
                "voters": list(r.voters),
            }
            for r in reviews
        ]


PEER = Peer()
