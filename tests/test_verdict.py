"""The pure decision of a turn (pipeline/verdict.py) and the choice of reviewer weights, for every method."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipeline.backend import Generated, cut_at_stop, ran_out
from pipeline.plan import RunConfig
from pipeline.policy import TurnRoles
from pipeline.records import CandidateRecord, Judgement, ReviewRecord, TurnContext
from pipeline.verdict import TurnInputs, answer_finish, decide_turn, finish_timings, with_fusion
from pipeline.weights import UNIFORM, ReviewerWeights, select_weights

MEMBERS = ["m0", "m1", "m2"]
CONTEXT = TurnContext("c1", 0, "Who wrote Dune?", enqueued_at=100.0)
CANDIDATES = [
    CandidateRecord("m0", "Herbert", seconds=1.0, finished_at=101.0),
    CandidateRecord("m1", "Frank Herbert", seconds=2.0, finished_at=102.0),
    CandidateRecord("m2", "Asimov", seconds=0.5, finished_at=100.5),
]
EVERYONE = TurnRoles(tuple(MEMBERS), tuple(MEMBERS), "full ranking")


def _review(reviewer: str, *ranking: str) -> ReviewRecord:
    return ReviewRecord(reviewer, "ranking", "scored", ranking=ranking, finished_at=103.0)


DEFAULT_RUN = RunConfig()


def _decide(
    reviews=(), judgements=(), *, run=DEFAULT_RUN, decision=EVERYONE, weights=UNIFORM, candidates=CANDIDATES
):
    return decide_turn(
        TurnInputs(CONTEXT, run, decision, candidates, reviews, judgements),
        committee_order=MEMBERS,
        weights=weights,
        now=104.0,
    )


def test_peer_review_picks_the_borda_winner_and_records_how():
    verdict = _decide([_review("m0", "m1", "m0", "m2"), _review("m2", "m1", "m2", "m0")])

    assert (verdict.chosen, verdict.answer, verdict.status) == ("m1", "Frank Herbert", "ok")
    assert verdict.ranked.ranking[0] == "m1"
    assert verdict.record["ballots"] == 2
    assert verdict.record["weights_note"] == "uniform"
    assert verdict.to_fuse == ()
    assert verdict.timings["generation_s"] == pytest.approx(2.0)
    assert verdict.timings["review_s"] == pytest.approx(1.0)
    assert verdict.timings["model_calls"] == 5


def test_weights_change_the_winner():
    # Given: m0 prefers m0, m2 prefers m2; m2's ballot carries all the weight
    reviews = [_review("m0", "m0", "m1", "m2"), _review("m2", "m2", "m1", "m0")]
    weights = ReviewerWeights({"m0": 0.0, "m2": 1.0}, "calibrated trust")

    verdict = _decide(reviews, weights=weights)

    assert verdict.chosen == "m2"
    assert verdict.record["weights"] == {"m0": 0.0, "m2": 1.0}


def test_pairwise_ranks_by_max_logits():
    judgements = [
        Judgement("j", a, b, p_first=0.9 if a == "m2" else (0.1 if b == "m2" else 0.5))
        for a in MEMBERS
        for b in MEMBERS
        if a != b
    ]
    decision = TurnRoles(tuple(MEMBERS), ("j",), "full ranking")

    verdict = _decide(judgements=judgements, run=RunConfig(method="pairwise"), decision=decision)

    assert verdict.chosen == "m2" and verdict.status == "ok"
    assert verdict.record["ballots"] == len(judgements)


def test_a_single_member_run_takes_its_answer_unranked():
    decision = TurnRoles(("m1",), (), "single member m1")

    verdict = _decide(run=RunConfig(method="single:m1"), decision=decision, candidates=CANDIDATES[1:2])

    assert (verdict.chosen, verdict.answer, verdict.status) == ("m1", "Frank Herbert", "single")


def test_a_reuse_turn_follows_the_policy_preference():
    # Given: no review stage; the previous turn preferred m2 then m0
    decision = TurnRoles(("m2", "m0"), (), "p2 reuse", preference=("m2", "m0"))

    verdict = _decide(decision=decision, candidates=[CANDIDATES[0], CANDIDATES[2]])

    assert verdict.status == "unranked" and verdict.chosen == "m2"


def test_failed_candidates_are_excluded_and_recorded():
    candidates = [CandidateRecord("m0", error="boom"), *CANDIDATES[1:]]

    verdict = _decide([_review("m1", "m0", "m2", "m1")], candidates=candidates)

    assert "m0" not in verdict.ranked.ranking
    assert verdict.record["excluded_failed"] == {"m0": "boom"}


def test_no_candidate_gives_an_empty_answer_and_nothing_to_fuse():
    candidates = [CandidateRecord(m, error="down") for m in MEMBERS]

    verdict = _decide(run=RunConfig(top_k=2), candidates=candidates)

    assert (verdict.answer, verdict.chosen, verdict.status, verdict.to_fuse) == (
        "",
        None,
        "no_candidates",
        (),
    )


def test_fusion_names_the_top_k_texts_best_first_and_fewer_when_fewer_exist():
    reviews = [_review("m0", "m1", "m0", "m2")]

    assert _decide(reviews, run=RunConfig(top_k=2)).to_fuse == ("Frank Herbert", "Herbert")
    assert _decide(reviews, run=RunConfig(top_k=9)).to_fuse == ("Frank Herbert", "Herbert", "Asimov")


def test_fusion_outcomes():
    verdict = _decide([_review("m0", "m1", "m0", "m2")], run=RunConfig(top_k=2))

    fused = with_fusion(verdict, "Frank Herbert wrote Dune.")
    assert (fused.answer, fused.chosen, fused.status) == ("Frank Herbert wrote Dune.", None, "fused")

    failed = with_fusion(verdict, None, error="RuntimeError: down")
    assert (failed.answer, failed.chosen, failed.status) == ("Frank Herbert", "m1", "fusion_failed")
    assert failed.record["fusion_error"] == "RuntimeError: down"

    empty = with_fusion(verdict, "")
    assert empty.status == "fusion_failed" and empty.record["fusion_error"] == "empty fused answer"


def test_an_answer_that_ran_into_its_token_limit_finishes_with_length():
    # Given m1 wins (its answer cut at its token limit) and m0 ran out too
    verdict = _decide([_review("m0", "m1", "m0", "m2")], run=RunConfig(top_k=2))
    cut = [replace(c, ran_out=c.member in ("m0", "m1")) for c in CANDIDATES]

    # Then the chosen answer's end is the turn's; a fused answer's is its own
    assert answer_finish(with_fusion(verdict, None, error="down"), cut) == "length"
    assert answer_finish(with_fusion(verdict, None, error="down"), CANDIDATES) == "stop"
    assert (
        answer_finish(with_fusion(verdict, Generated("Frank Herbert wrote", ran_out=True)), CANDIDATES)
        == "length"
    )
    assert answer_finish(with_fusion(verdict, "Frank Herbert wrote Dune."), cut) == "stop"


def test_a_stop_string_ends_an_answer_whatever_its_token_limit():
    long = Generated(" Frank Herbert, in 1965", ran_out=True)

    assert ran_out(cut_at_stop(long, ["\n"])) and cut_at_stop(long, ["\n"]) == "Frank Herbert, in 1965"
    assert not ran_out(cut_at_stop(long, [","])) and cut_at_stop(long, [","]) == "Frank Herbert"
    assert not ran_out(cut_at_stop("Frank Herbert", []))


def test_finishing_timings_adds_the_fusion_time_to_aggregate_and_total():
    verdict = _decide([_review("m0", "m1", "m0", "m2")])

    done = finish_timings(verdict.timings, ranked_at=104.0, now=106.5)

    assert done["aggregate_s"] == pytest.approx(verdict.timings["aggregate_s"] + 2.5)
    assert done["total_s"] == pytest.approx(6.5)
    assert done["ranking_s"] == verdict.timings["ranking_s"]


# Reviewer weights: one pure choice with its fallbacks.


def test_uniform_weights_are_none():
    assert select_weights("uniform", ["a", "b"]) == UNIFORM
    assert select_weights("online", []) == UNIFORM


def test_online_weights_start_at_the_prior():
    chosen = select_weights("online", ["a", "b"], trust={})
    assert chosen.weights == {"a": 1.0, "b": 1.0} and chosen.note == "online trust"


def test_calibrated_without_stored_weights_falls_back_to_uniform():
    chosen = select_weights("calibrated", ["a", "b"], calibrated=None)
    assert chosen.weights is None and "none stored" in chosen.note


def test_a_reviewer_missing_from_the_calibration_gets_the_mean_not_zero():
    chosen = select_weights("calibrated", ["a", "new"], calibrated={"a": 0.4, "b": 0.2})

    assert chosen.weights == {"a": 0.4, "new": pytest.approx(0.3)}
    assert "new" in chosen.note


def test_weights_that_are_all_zero_give_the_ballots_no_weight_and_say_so():
    chosen = select_weights("calibrated", ["a", "b"], calibrated={"a": 0.0, "b": 0.0})

    assert chosen.weights == {"a": 0.0, "b": 0.0} and "uniform" not in chosen.note
    assert "the member prior decides" in chosen.note
