"""Re-deciding a stored run's turns under another selection rule, without running a model (pure).

A rule (``Rule``) says how a turn's stored candidates are ranked from its stored
ballots: ``borda`` (honest voters, as live turns), ``borda-all`` (every reviewer a
voter, the count before honest voters), ``prior`` (the member prior alone) or
``single`` (always one member's answer: that member alone, as in a single-model
run); with reviewer weights ``uniform``, ``calibrated`` (stored by `peerblend
calibrate`) or ``online`` (learned afresh over the run's turns in stored order);
optionally counting only some reviewers' ballots (``reviewers``), adding the member
prior and excluding self-votes. A committee that stores every reviewer's ballot
thus evaluates each smaller panel of reviewers without running a model. With
``policy="p2"`` a full-ranking run replays the alternate-ranking policy
(``pipeline.policy.who_works``): on its reuse turns only the rule's previous top
member's stored answer counts, and no ballot (its time and model calls stay the
stored run's: a simulation measures quality, not cost). ``learned`` ranks by the
committee's learned decision (``pipeline.learned``, stored by `peerblend calibrate`);
``policy="learned-route"`` simulates routing: on a turn whose question bucket the learned
decision leaves to the prior, only the prior's top member's stored answer counts, with
no review (one model call; the turn's time is that member's generation time).

Each decision record holds ``rule_model_calls``: the model calls the rule needs on
that turn (generators plus the ballots it counts; 1 for a single member; the reused
members on a p2 reuse turn), which the re-ranked run reports instead of the stored
run's. Time cannot be re-measured: a single member's turn reports that member's
generation time, any other rule the stored turn's.

Caveat, said in every report of a re-ranked run: a turn's candidates were generated
after the *stored* run's earlier answers, so a rule that would have chosen other
answers earlier is evaluated on histories it would not have produced. Turns the
stored policy left unranked (reuse turns) keep the policy's preference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pipeline.aggregate import Standings, decide, decide_by_prior, decide_single, judgement_keys
from pipeline.borda import Ballot
from pipeline.committee import CALIBRATED_MODES, Committee
from pipeline.errors import InputError
from pipeline.learned import LearnedModel, decide_learned, route
from pipeline.plan import is_ballot
from pipeline.policy import PolicyState, who_works
from pipeline.prior import MemberPrior, select_prior
from pipeline.records import (
    CandidateRecord,
    ReviewRecord,
    candidate_from_row,
    cast_within,
    per_reviewer,
    review_from_row,
)
from pipeline.store_keys import calibration_key, feature_weights_key, trust_key
from pipeline.verdict import voter_record
from pipeline.weights import (
    ReviewerWeights,
    WeightMode,
    add_agreement,
    consensus_agreement,
    stored_weights,
)

# A rule's kind (`peerblend rerank --method`): how it ranks; not a conversation's method
# (``pipeline.plan``), though "single" takes one member's answer as a single-member run would.
RuleKind = Literal["borda", "borda-all", "prior", "single", "learned"]
RerankPolicy = Literal["full", "p2", "learned-route"]
RerankWeights = WeightMode
KINDS: tuple[RuleKind, ...] = get_args(RuleKind)
WEIGHTS: tuple[RerankWeights, ...] = get_args(WeightMode)
POLICIES: tuple[RerankPolicy, ...] = get_args(RerankPolicy)


@dataclass(frozen=True)
class Rule:
    """A selection rule over stored candidates and ballots."""

    kind: RuleKind = "borda"
    weights: RerankWeights = "uniform"
    prior: bool = False  # add the member prior to the count (``kind="prior"`` uses it alone)
    exclude_self: bool = False
    reviewers: tuple[str, ...] | None = None  # count only these reviewers' ballots (None: all)
    member: str | None = None  # ``kind="single"``: whose answer
    # p2: simulate alternate ranking on a full-ranking run; learned-route: where the learned
    # decision is the prior's, only the prior's top member answers and no one reviews
    policy: RerankPolicy = "full"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"unknown rerank method {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.weights not in WEIGHTS:
            raise InputError(
                f"unknown reviewer weights {self.weights!r}; expected one of {', '.join(WEIGHTS)}"
            )
        if (self.kind == "single") != (self.member is not None):
            raise InputError("the single rule needs a member (--member NAME), and only it takes one")
        if self.policy not in POLICIES:
            raise InputError(f"rerank simulates the policies full, p2 and learned-route, not {self.policy!r}")
        if self.policy != "full" and self.kind == "single":
            raise InputError("a single member's answers have no policy to simulate")
        if self.reviewers is not None and not self.reviewers:
            raise InputError("an empty list of reviewers counts no ballot; leave it out to count all")

    def check(self, committee: Committee) -> None:
        """Raise InputError if the rule names a member the committee lacks (or one in the wrong role)."""
        reviewers = {m.name for m in committee.members if "reviewer" in m.roles}
        generators = {m.name for m in committee.members if "generator" in m.roles}
        unknown = sorted(set(self.reviewers or ()) - reviewers)
        if unknown:
            raise InputError(
                f"not reviewers of committee {committee.name!r}: {', '.join(unknown)} "
                f"(its reviewers: {', '.join(sorted(reviewers))})"
            )
        if self.member is not None and self.member not in generators:
            raise InputError(
                f"{self.member!r} is not a generator of committee {committee.name!r} "
                f"(its generators: {', '.join(sorted(generators))})"
            )

    @property
    def uses_prior(self) -> bool:
        return self.prior or self.kind == "prior"

    @property
    def uses_learned(self) -> bool:
        return self.kind == "learned" or self.policy == "learned-route"

    @property
    def name(self) -> str:
        """A short label: ``borda/calibrated+prior``, ``prior``, ``single:m``, ``borda/uniform[r1,r2]``."""
        if self.kind == "prior":
            return "prior"
        if self.kind == "single":
            return f"single:{self.member}"
        if self.kind == "learned":
            return "learned" if self.policy == "full" else f"learned@{self.policy}"
        extras = "".join(s for s, on in (("+prior", self.prior), ("-self", self.exclude_self)) if on)
        panel = f"[{','.join(self.reviewers)}]" if self.reviewers else ""
        policy = "" if self.policy == "full" else f"@{self.policy}"
        return f"{self.kind}/{self.weights}{extras}{panel}{policy}"


@dataclass(frozen=True)
class Calibrated:
    """What `peerblend calibrate` stored for the committee: reviewer weights and the member prior."""

    weights: Mapping[str, float] | None = None
    prior: Mapping[str, Any] | None = None  # the stored value of ``prior_key``: {"buckets": ...}
    feature_weights: Mapping[str, Mapping[str, float]] | None = None  # bucket -> weights
    learned: Mapping[str, Any] | None = None  # the stored value of ``learned_key``


def rerank(
    rows: Sequence[Mapping[str, Any]], rule: Rule, committee: Committee, calibrated: Calibrated
) -> list[tuple[Standings, dict[str, Any]]]:
    """A decision and its decision-record fields for each row of ``db.runs.run_records``, in order."""
    rule.check(committee)
    if rule.uses_prior:
        _require_prior(calibrated)
    learned = _require_learned(calibrated, committee) if rule.uses_learned else None
    voters = judgement_keys(committee) if rule.kind == "borda" else None
    replay = _Replay(rule, committee, calibrated, learned, voters)
    return [replay.turn(row) for row in rows]


@dataclass
class _Replay:
    """``rule`` applied to a run's turns in order, with what it carries from one turn to the next."""

    rule: Rule
    committee: Committee
    calibrated: Calibrated
    learned: LearnedModel | None
    voters: Mapping[str, str] | None  # reviewer -> judgement key (None: every reviewer its own voter)
    trust: dict[str, list[float]] = field(default_factory=dict)  # online weights' statistics so far
    last_ranking: dict[str, tuple[str, ...]] = field(default_factory=dict)  # conversation -> previous (p2)

    def turn(self, row: Mapping[str, Any]) -> tuple[Standings, dict[str, Any]]:
        """One stored turn's decision under the rule, and its decision-record fields."""
        rule = self.rule
        candidates, reused, extra = self._shortlist(row)
        reviews = cast_within([review_from_row(r) for r in row["reviews"] if is_ballot(r)], rule.reviewers)
        prior = _prior(row, rule, self.calibrated)
        decision, weights, calls, fields = self._decide(row, candidates, reused, reviews, prior)
        self.last_ranking[row["conversation"]["id"]] = decision.ranking
        used_prior = prior if rule.prior or rule.kind == "prior" else None
        record = {**_record(decision, weights, used_prior), **extra, **fields, "rule_model_calls": calls}
        return decision, record

    def _shortlist(
        self, row: Mapping[str, Any]
    ) -> tuple[list[CandidateRecord], tuple[str, ...], dict[str, Any]]:
        """The candidates the rule's policy lets answer, the members it shortlisted without a review
        (empty: everyone answers, ranked), and the record fields that say so."""
        candidates = [candidate_from_row(c) for c in row["candidates"]]
        conversation = row["conversation"]
        if self.rule.policy == "p2":
            reused = _reused(self.rule, self.committee, row, self.last_ranking.get(conversation["id"], ()))
            shortlisted = [c for c in candidates if c.member in reused] if reused else candidates
            return shortlisted, reused, {}
        if self.rule.policy == "learned-route":
            has_passage = bool(conversation.get("passage"))
            gain = self.committee.route_min_gain / 100
            routed = route(self.learned, self.committee.generators, has_passage=has_passage, min_gain=gain)
            if routed:
                return [c for c in candidates if c.member in routed], routed, {"routed": list(routed)}
        return candidates, (), {}

    def _decide(
        self,
        row: Mapping[str, Any],
        candidates: Sequence[CandidateRecord],
        reused: tuple[str, ...],
        reviews: Sequence[ReviewRecord],
        prior: MemberPrior | None,
    ) -> tuple[Standings, ReviewerWeights, int, dict[str, Any]]:
        """The decision, the weights it used, the model calls the rule needs on this turn (answers,
        then reviews where it reads them), and the rule's own record fields."""
        rule, order = self.rule, _order(row, self.committee)
        answers = len(row["candidates"])
        if rule.member is not None:
            return decide_single(candidates, rule.member), _unweighted(f"{rule.member}'s answer alone"), 1, {}
        if reused:
            decision = decide(candidates, [], committee_order=[*reused, *order])
            why = "p2 reuse turn, the previous top" if rule.policy == "p2" else "routed to the prior's top"
            return decision, _unweighted(f"{why} {len(reused)}"), len(reused), {}
        if rule.kind == "prior" and prior is not None:
            decision = decide_by_prior(candidates, prior, committee_order=order)
            return decision, _unweighted("the member prior alone"), answers, {}
        passage = row["conversation"].get("passage")
        if rule.kind == "learned" and self.learned is not None:
            decision, fields = decide_learned(
                candidates, reviews, self.learned, committee_order=order, passage=passage
            )
            return decision, _unweighted("the learned decision"), answers + len(reviews), fields
        weights = stored_weights(
            _stored(self.committee, self.calibrated, self.trust),
            self.committee,
            per_reviewer(reviews),
            has_passage=bool(passage),
            mode=rule.weights,
        )
        decision = decide(
            candidates,
            reviews,
            committee_order=order,
            weights=weights.weights,
            exclude_self=rule.exclude_self,
            voters=self.voters,
            prior=prior if rule.prior else None,
        )
        if rule.weights == "online":
            ballots = [Ballot(r.reviewer, r.ranking) for r in per_reviewer(reviews) if r.ranking]
            agreement = consensus_agreement(ballots, list(decision.ranking), self.voters)
            self.trust = add_agreement(self.trust, agreement)
        return decision, weights, answers + len(reviews), {}


def _unweighted(why: str) -> ReviewerWeights:
    """No reviewer weights: the rule decided without ballots (``why``)."""
    return ReviewerWeights(None, f"none: {why}")


def _reused(
    rule: Rule, committee: Committee, row: Mapping[str, Any], last: tuple[str, ...]
) -> tuple[str, ...]:
    """The members p2 reuses on this turn (its previous top K), or () on a turn it ranks."""
    conversation = row["conversation"]
    if conversation["policy"] != "full":
        raise InputError(
            f"simulating p2 needs a full-ranking run (every turn ranked); this one ran {conversation['policy']}"
        )
    state = PolicyState(last_ranking=last)
    turn = who_works("p2", committee, state, row["turn_index"], conversation["n_turns"], top_k=1)
    return turn.generators if not turn.reviewers else ()


def _require_learned(calibrated: Calibrated, committee: Committee) -> LearnedModel:
    if not calibrated.learned:
        raise InputError(
            "this rule needs the learned decision: run `peerblend calibrate RUN` on a calibration run first"
        )
    model = LearnedModel.from_json(calibrated.learned)
    if not model.fits(committee):
        raise InputError(
            f"the stored learned decision was fitted for other reviewers than committee {committee.name!r} "
            "has now: run `peerblend calibrate RUN` again"
        )
    return model


def _require_prior(calibrated: Calibrated) -> None:
    if not (calibrated.prior or {}).get("buckets"):
        raise InputError(
            "this rule needs the member prior: run `peerblend calibrate RUN` on a calibration run first"
        )


def _order(row: Mapping[str, Any], committee: Committee) -> list[str]:
    """The live tie-break order: the stored policy preference first, then the committee's order."""
    preference = list(row["result"]["decision"].get("preference") or [])
    return [*preference, *(m.name for m in committee.members if m.name not in preference)]


def _prior(row: Mapping[str, Any], rule: Rule, calibrated: Calibrated) -> MemberPrior | None:
    if not rule.uses_prior:
        return None
    return select_prior(
        (calibrated.prior or {}).get("buckets"),
        has_passage=bool(row["conversation"].get("passage")),
        calibrated_weight=rule.weights in CALIBRATED_MODES,
    )


def _stored(committee: Committee, calibrated: Calibrated, trust: Mapping[str, Any]) -> dict[str, Any]:
    """What the policy store would hold for ``stored_weights``: the calibration, the online trust so far."""
    return {
        calibration_key(committee.name): calibrated.weights,
        feature_weights_key(committee.name): calibrated.feature_weights,
        trust_key(committee.name): trust,
    }


def _record(decision: Standings, weights: ReviewerWeights, prior: MemberPrior | None) -> dict[str, Any]:
    return {
        "ballots": decision.ballots_used,
        "ranking_status": decision.status,
        "excluded_failed": decision.excluded,
        "weights": dict(weights.weights or {}),
        "weights_note": weights.note,
        **voter_record(decision, prior),
    }
