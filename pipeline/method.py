"""What a method of the blend declares: its review stage, its ranking and what it stores.

A conversation's method (``RunConfig.method``) is one of the variants that ``pipeline.plan``
registers (``VARIANTS``): ``peer`` (peer.py), ``pairwise`` (pairwise.py) and
``single:<member>`` (single.py). Each is a ``Method``, and the layers ask it instead of
branching on its name:

- the policy (``pipeline.shortlist``): ``fixed`` (a turn decided without the policy),
  ``who_works`` (what the method changes in the policy's turn) and ``signed_scores`` (how its
  scores feed the policy);
- the plan and the canvas (``pipeline.plan``, ``pipeline.service.canvas``): ``review_groups`` and
  ``review_tasks`` (which tasks its review stage sends), ``queue_kwarg`` (on whose queue);
- the aggregate task (``workers.tasks``): ``read`` (its stage's records from the chord);
- the verdict (``pipeline.verdict``): ``rank`` and ``decided_by`` (a reviewed turn's ranking,
  and the sentence that says which rule made it);
- the stored rows (``workers.rows``): ``stored_reviews``, and ``stores_ballots`` (whether its
  rows are ballots, which calibration, the reviewer statistics and ``peerblend rerank`` read:
  ``pipeline.plan.is_ballot``);
- the report (``pipeline.evaluation.report``): ``report_role``, ``described``, ``alone`` and
  ``label`` (its place among the tables' rows and comparisons, and its rows' label).

The base class is a method without a review stage; each variant overrides what its stage
adds. Fusion is not a method but a finishing step any fusable method may add
(``pipeline.fusion``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

from pipeline.aggregate import Standings, decide
from pipeline.committee import Committee
from pipeline.learned import LearnedModel
from pipeline.policy import TurnRoles
from pipeline.prior import MemberPrior
from pipeline.records import CandidateRecord, Judgement, ReviewRecord
from pipeline.weights import ReviewerWeights

# One entry per task of a review stage: the reviewers it is cast for, the first of them reviewing.
ReviewGroups = tuple[tuple[str, ...], ...]
StageRecords = tuple[list[CandidateRecord], list[ReviewRecord], list[Judgement]]
# A method's part in the report, in the tables' order: one member alone (a baseline the blends are
# compared with), the committee's blend under study, a committee baseline the blend is compared with.
ReportRole = Literal["member", "blend", "baseline"]
REPORT_ROLES: tuple[ReportRole, ...] = get_args(ReportRole)


@dataclass(frozen=True)
class StageTask:
    """One task of a turn's review stage, by task name (pipeline/ never imports workers/)."""

    task: str
    kwargs: dict[str, Any]  # besides the turn, which the canvas adds to every task
    shown: str  # its name in logs and Flower


@dataclass(frozen=True)
class Rules:
    """What a turn is ranked by besides its records: ``order``, every member with the policy's
    preference first (the tie-break); the reviewer weights, self votes, voter keys and member
    prior of the Borda count (``pipeline.aggregate.decide``); the committee's learned decision
    (``pipeline.learned``); the turn's passage (the learned decision's bucket)."""

    order: Sequence[str]
    weights: ReviewerWeights
    exclude_self: bool = False
    voters: Mapping[str, str] | None = None
    prior: MemberPrior | None = None
    learned: LearnedModel | None = None
    passage: str | None = None


def candidates_from(items: Sequence[Mapping[str, Any]]) -> list[CandidateRecord]:
    """The generate tasks' records, as a turn without a review stage receives them."""
    return [CandidateRecord.from_json(dict(item)) for item in items]


def by_borda(
    candidates: Sequence[CandidateRecord], reviews: Sequence[ReviewRecord], rules: Rules
) -> Standings:
    """The Borda count of ``reviews`` under ``rules`` (no review: the order, "unranked")."""
    return decide(
        candidates,
        reviews,
        committee_order=rules.order,
        weights=rules.weights.weights,
        exclude_self=rules.exclude_self,
        voters=rules.voters,
        prior=rules.prior,
    )


class Method:
    """A method without a review stage: its turns are decided by the policy's order."""

    name: ClassVar[str] = ""
    takes_member: ClassVar[bool] = False  # named "<name>:<member>"
    queue_kwarg: ClassVar[str | None] = None  # its review task's kwarg naming the member whose queue runs it
    signed_scores: ClassVar[bool] = False  # its scores can be negative (``pipeline.policy.turn_scores``)
    fusable: ClassVar[bool] = True  # top_k > 1 fuses its best candidates (``pipeline.fusion``)
    keeps_state: ClassVar[bool] = True  # its turns are decided from stored policy state (p1, p2, p3)
    # Its review rows are ballots over a turn's candidates (``ReviewRecord``), stored under their
    # review method; a method whose rows are other records stores them under its own name.
    stores_ballots: ClassVar[bool] = False
    report_role: ClassVar[ReportRole] = "blend"
    described: ClassVar[str] = ""  # what the report's comparison titles call it ("peer review")

    @property
    def shown(self) -> str:
        """How error messages list it."""
        return f"{self.name}:<member>" if self.takes_member else self.name

    def check(self, committee: Committee, method: str, policy: str) -> None:
        """Refuse a run of ``method`` (this variant's name as given) this committee cannot run."""

    def fixed(self, method: str) -> TurnRoles | None:
        """Every turn's roles when the method fixes them (no policy applies); else None."""
        return None

    def who_works(self, committee: Committee, roles: TurnRoles) -> TurnRoles:
        """The roles the policy chose, as this method runs them."""
        return roles

    def review_groups(self, committee: Committee, reviewers: Sequence[str]) -> ReviewGroups:
        """The turn's reviewers grouped one task each; empty: one task per reviewer."""
        return ()

    def review_tasks(self, generators: Sequence[str], reviews: ReviewGroups) -> list[StageTask]:
        """The tasks of a reviewed turn's review stage (they receive the turn's candidates)."""
        return []

    def read(self, items: Sequence[dict[str, Any]]) -> StageRecords:
        """(candidates, reviews, judgements) from what a reviewed turn's review tasks returned."""
        return candidates_from(items), [], []

    def rank(
        self,
        candidates: Sequence[CandidateRecord],
        reviews: Sequence[ReviewRecord],
        judgements: Sequence[Judgement],
        rules: Rules,
    ) -> tuple[Standings, dict[str, Any]]:
        """A reviewed turn's ranking, and the rule's own fields for the verdict's record."""
        return by_borda(candidates, reviews, rules), {}

    def decided_by(self, ranked: Standings, rules: Rules) -> str:
        """One sentence for a reviewed turn with at least two usable candidates."""
        raise NotImplementedError(f"method {self.name!r} has no review stage")

    def stored_reviews(
        self, reviews: Sequence[ReviewRecord], judgements: Sequence[Judgement]
    ) -> list[dict[str, Any]]:
        """The fields of each review row the turn stores (``db.models.Review``, less the turn's keys)."""
        return []

    def alone(self, method: str) -> str | None:
        """The member that answers every turn of ``method`` alone; None: the committee answers."""
        return None

    def label(self, method: str, policy: str, top_k: int) -> str:
        """The label of a run's row in the report's tables (``method`` as given)."""
        return f"{method}{policy_shown(policy)} K={top_k}"


def policy_shown(policy: str) -> str:
    """A report label's policy part: nothing for the full ranking, " p2" for p2."""
    return "" if policy == "full" else f" {policy}"
