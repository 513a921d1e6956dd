"""The member prior: fitted from gold answers, added to the Borda count as one more ballot."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from pipeline.aggregate import decide, decide_by_prior
from pipeline.evaluation.calibration import fit_calibration
from pipeline.prior import PRIOR_VOTER, MemberPrior, fit_prior, select_prior, stored_prior
from pipeline.records import CandidateRecord, ReviewRecord
from pipeline.store_keys import calibration_key, feature_weights_key, prior_key
from pipeline.weights import feature_weights, select_weights, stored_weights
from tests.conftest import scripted_committee
from tests.test_policy import MemoryStore
from workers.report import print_voters

POOL = ["x", "y", "z"]
CANDIDATES = [CandidateRecord(m, f"answer {m}") for m in POOL]


def _review(reviewer: str, *ranking: str) -> ReviewRecord:
    return ReviewRecord(reviewer, "likelihood", "scored", ranking=ranking)


def test_the_prior_is_one_more_ballot_ordered_by_quality() -> None:
    prior = MemberPrior({"x": 0.1, "y": 0.5, "z": 0.3}, weight=1.0)

    assert prior.ballot(POOL).ranking == ("y", "z", "x")
    assert prior.ballot(["x", "new"]).ranking == ("x",)  # a member it does not know is left unranked


def test_the_prior_breaks_a_split_vote() -> None:
    # Given: two voters who disagree completely (x > y > z and z > y > x): a tie of x and z
    reviews = [_review("a", "x", "y", "z"), _review("b", "z", "y", "x")]
    prior = MemberPrior({"x": 0.2, "y": 0.1, "z": 0.6}, weight=1.0)

    without = decide(CANDIDATES, reviews, committee_order=POOL)
    with_prior = decide(CANDIDATES, reviews, committee_order=POOL, prior=prior)
    silent = decide(CANDIDATES, reviews, committee_order=POOL, prior=MemberPrior(prior.quality, weight=0.0))

    assert without.chosen == "x"  # committee order breaks the tie
    # Then: z = 0 + 2 + 2 (prior's first place) = 4; x = 2 + 0 + 1 = 3; y = 1 + 1 + 0 = 2
    assert with_prior.chosen == "z" and with_prior.scores == {"x": 3.0, "y": 2.0, "z": 4.0}
    assert with_prior.ballots_used == 2  # the prior is not a reviewer's ballot
    assert with_prior.ballot_weights[PRIOR_VOTER] == 1.0
    assert silent.ranking == without.ranking


def test_without_any_reviewer_ballot_the_prior_ranks_alone() -> None:
    reviews = [ReviewRecord("a", "ranking", "unparsable")]
    prior = MemberPrior({"x": 0.2, "y": 0.9, "z": 0.6})

    decision = decide(CANDIDATES, reviews, committee_order=POOL, prior=prior)
    unreviewed = decide(CANDIDATES, [], committee_order=POOL, prior=prior)

    assert (decision.status, decision.ranking) == ("no_ballots", ("y", "z", "x"))
    assert unreviewed.status == "unranked" and unreviewed.ranking == tuple(
        POOL
    )  # policy reuse keeps its order
    assert decide_by_prior(CANDIDATES, prior, committee_order=POOL).ranking == ("y", "z", "x")


def test_fit_prior_means_and_weight_per_feature() -> None:
    # Given: with a passage, x is always best; without one, y is
    turns = [
        ("passage", {"x": 1.0, "y": 0.0, "z": 0.5}),
        ("passage", {"x": 0.8, "y": 0.2, "z": 0.4}),
        ("no_passage", {"x": 0.0, "y": 1.0, "z": 0.5}),
    ]

    fitted = fit_prior(turns)

    assert fitted["passage"]["quality"] == pytest.approx({"x": 0.9, "y": 0.1, "z": 0.45})
    assert fitted["passage"]["weight"] == pytest.approx(1.0)  # its order matched every turn
    assert fitted["passage"]["turns"] == 2
    assert fitted["no_passage"]["quality"] == {"x": 0.0, "y": 1.0, "z": 0.5}
    assert fitted["all"]["quality"] == pytest.approx({"x": 0.6, "y": 0.4, "z": 1.4 / 3})
    assert fitted["all"]["weight"] == pytest.approx(1 / 3)  # (1 + 1 - 1) / 3 turns


def test_select_prior_takes_the_turns_feature_or_the_pooled_fit() -> None:
    stored = {"all": {"quality": {"x": 0.5}, "weight": 0.3, "turns": 9}}
    stored_with_bucket = {**stored, "passage": {"quality": {"x": 0.9}, "weight": 0.7, "turns": 4}}

    pooled = select_prior(stored, has_passage=True, calibrated_weight=False)
    bucket = select_prior(stored_with_bucket, has_passage=True, calibrated_weight=True)

    assert pooled is not None and pooled.quality == {"x": 0.5} and pooled.weight == 1.0
    assert "(all, 9 turns)" in pooled.note and "one voter" in pooled.note
    assert bucket is not None and bucket.quality == {"x": 0.9} and bucket.weight == 0.7
    assert select_prior(None, has_passage=False, calibrated_weight=False) is None


def test_fit_calibration_leaves_out_questions_without_a_scorable_gold() -> None:
    def row(cid: str, gold: list[str], candidates: dict[str, str], ballots: dict | None = None) -> dict:
        return {"conversation_id": cid, "gold": gold, "candidates": candidates, "ballots": ballots or {}}

    rows = [
        row("c1", ["Paris"], {"x": "Paris", "y": "the city of Paris", "z": "Rome"}, {"x": ["z", "y", "x"]}),
        row("c1", ["CANNOTANSWER"], {"x": "no", "y": "yes", "z": "maybe"}, {"x": ["x", "y", "z"]}),
        row("c2", [], {"x": "a", "y": "b"}),
    ]

    fitted = fit_calibration(rows, {"c1": True})

    assert fitted.turns == 1 and fitted.reviewed_turns == 1
    assert fitted.prior["passage"]["quality"] == pytest.approx({"x": 1.0, "y": 0.5, "z": 0.0})
    assert "no_passage" not in fitted.prior
    assert fitted.weights == {"x": 0.0}  # the only reviewer, anti-correlated: a blind judge


def test_reviewer_weights_are_also_fitted_per_passage_bucket_and_read_by_the_turns_bucket() -> None:
    def row(cid: str, ballots: dict) -> dict:
        candidates = {"x": "Paris", "y": "the city of Paris", "z": "Rome"}  # F1 1.0 > 0.5 > 0.0
        return {"conversation_id": cid, "gold": ["Paris"], "candidates": candidates, "ballots": ballots}

    # Given: reviewer a orders like the gold on passage turns and against it without; b the reverse
    good, bad = ["x", "y", "z"], ["z", "y", "x"]
    rows = [row("with", {"a": good, "b": bad}), row("without", {"a": bad, "b": good})]

    fitted = fit_calibration(rows, {"with": True, "without": False})

    assert fitted.feature_weights == {"passage": {"a": 1.0, "b": 0.0}, "no_passage": {"a": 0.0, "b": 1.0}}
    assert fitted.weights == {"a": 0.0, "b": 0.0}  # pooled, the two cancel: both blind
    assert feature_weights(fitted.feature_weights, fitted.weights, True) == {"a": 1.0, "b": 0.0}
    assert feature_weights({"passage": {"a": 1.0}}, {"pooled": 0.5}, False) == {"pooled": 0.5}
    chosen = select_weights("calibrated-passage", ["a", "b"], calibrated=fitted.feature_weights["no_passage"])
    assert chosen.weights == {"a": 0.0, "b": 1.0} and chosen.note == "calibrated trust (by passage)"

    # A live turn of a committee asking for them reads its bucket's weights from the store
    store = MemoryStore()
    committee = scripted_committee(2, name="fw", reviewer_weights="calibrated-passage")
    store.update(calibration_key("fw"), lambda _: {"m0": 0.5, "m1": 0.5})
    store.update(feature_weights_key("fw"), lambda _: {"passage": {"m0": 0.9, "m1": 0.1}})
    reviews = [_review("m0", "x", "y"), _review("m1", "y", "x")]
    assert stored_weights(store, committee, reviews, has_passage=True).weights == {"m0": 0.9, "m1": 0.1}
    assert stored_weights(store, committee, reviews, has_passage=False).weights == {"m0": 0.5, "m1": 0.5}


def test_a_committee_with_the_prior_uses_it_live_and_show_prints_it(embedded) -> None:
    # Given: calibrated reviewer weights that barely count, and a prior that says m2 is the best member
    committee = scripted_committee(3, name="prior", reviewer_weights="calibrated", member_prior=True)
    client = embedded(committee)
    assert stored_prior(client.policy_store, committee, has_passage=False).note.startswith(
        "member prior requested"
    )
    client.policy_store.update(calibration_key("prior"), lambda _: {"m0": 0.01, "m1": 0.01, "m2": 0.01})
    buckets = {"all": {"quality": {"m0": 0.1, "m1": 0.2, "m2": 0.9}, "weight": 1.0, "turns": 5}}
    client.policy_store.update(prior_key("prior"), lambda _: {"buckets": buckets})

    (outcome,) = client.submit(["Who is best?"]).wait(timeout=30)

    decision = client.fetch(outcome.conversation_id).turns[0].result["decision"]
    assert outcome.chosen == "m2"
    assert decision["prior"] == {"m0": 0.1, "m1": 0.2, "m2": 0.9}
    assert decision["prior_weight"] == 1.0
    out = io.StringIO()
    print_voters(Console(file=out, width=300), decision)
    assert "member prior (weight 1): m2 0.900, m1 0.200, m0 0.100" in out.getvalue()


@pytest.mark.parametrize("mode", ["calibrated", "online"])
def test_blind_judges_never_outvote_the_prior(mode: str) -> None:
    # Given: both reviewers put z first, but calibration (or online trust) found them blind
    reviews = [_review("a", "z", "y", "x"), _review("b", "z", "x", "y")]
    zero = {"a": 0.0, "b": 0.0}
    weights = select_weights(mode, ["a", "b"], calibrated=zero, trust={"a": [-3.0, 2.0], "b": [-2.0, 1.0]})
    prior = MemberPrior({"x": 0.2, "y": 0.6, "z": 0.1}, weight=0.46)

    with_prior = decide(CANDIDATES, reviews, committee_order=POOL, weights=weights.weights, prior=prior)
    alone = decide(CANDIDATES, reviews, committee_order=POOL, weights=weights.weights)

    # Then: the ballots weigh nothing (not uniform), so the prior decides; without it, committee order
    assert weights.weights == zero and "no weight" in weights.note and "prior decides" in weights.note
    assert with_prior.ranking == ("y", "x", "z")
    assert alone.ranking == ("x", "y", "z") and set(alone.scores.values()) == {0.0}
