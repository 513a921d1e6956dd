"""The learned decision: signals, features, the fit chosen by cross-validation, the decision, routing."""

from __future__ import annotations

import io
import random

import pytest
from rich.console import Console

from pipeline.committee import Committee, Member
from pipeline.evaluation.learning import Example, cross_validate, fit_learned, splits
from pipeline.evaluation.rerank import Calibrated, Rule, rerank
from pipeline.learned import (
    BucketModel,
    LearnedModel,
    decide_learned,
    own_voters,
    route,
    stored_learned,
    voter_names,
)
from pipeline.records import CandidateRecord, ReviewRecord
from pipeline.signals import TurnSignals, feature_rows, review_scores, turn_signals
from pipeline.store_keys import learned_key
from tests.conftest import scripted_committee
from workers.report import print_rule

MEMBERS = ("good", "bad", "odd")


def _committee() -> Committee:
    return Committee(
        name="learned-test",
        members=(
            Member(name="good", backend="scripted", model="m1"),
            Member(name="bad", backend="scripted", model="m2"),
            Member(name="odd", backend="scripted", model="m2", roles=("generator",)),
            Member(name="judge", backend="scripted", model="m3", roles=("reviewer",)),
        ),
    )


def _scored(reviewer: str, scores: dict[str, float]) -> ReviewRecord:
    ranking = tuple(sorted(scores, key=lambda m: -scores[m]))
    raw = " ".join(f"{m}={v:.4f}" for m, v in scores.items())
    return ReviewRecord(reviewer, "likelihood", "scored", ranking, raw=raw)


def test_a_scoring_review_gives_its_scores_and_a_ranking_its_points() -> None:
    scored = _scored("good", {"good": -0.5, "bad": 1.25, "odd": 0.0})
    ranked = ReviewRecord("judge", "ranking", "ok", ("odd", "good", "bad"), raw="B > A > C")

    assert review_scores(scored) == {"good": -0.5, "bad": 1.25, "odd": 0.0}
    assert review_scores(ranked) == {"odd": 3.0, "good": 2.0, "bad": 1.0}


def test_reviewers_of_one_judgement_are_one_signal_and_a_member_reads_its_own_models() -> None:
    committee = Committee(
        name="twins",
        members=(
            Member(name="a", backend="scripted", model="m1"),
            Member(name="b", backend="scripted", model="m1"),
            Member(name="c", backend="scripted", model="m2"),
        ),
    )

    assert voter_names(committee) == {"a": "a", "b": "a", "c": "c"}
    assert own_voters(committee) == {"a": "a", "b": "a", "c": "c"}


def test_features_of_a_turn() -> None:
    # Given: three answers, one reviewer's scores, a passage that holds one answer's words
    signals = TurnSignals(
        members=MEMBERS,
        texts={"good": "Frank Herbert", "bad": "Herbert wrote it in 1965", "odd": "no idea"},
        reviews={"good": {"good": 2.0, "bad": 0.0, "odd": -2.0}},
        passage="Dune is a novel by Frank Herbert.",
    )
    features = ("prior", "review:good", "borda", "consensus", "overlap", "length", "confidence")

    rows = feature_rows(
        signals,
        features,
        prior={"good": 0.5, "bad": 0.2},
        confidence={"good": [1.0, 0.5]},
        own={"good": "good"},
    )
    good, bad, odd = (dict(zip(features, row, strict=True)) for row in rows)

    assert (good["prior"], bad["prior"], odd["prior"]) == (0.5, 0.2, pytest.approx(0.35))  # unknown: mean
    assert good["review:good"] == pytest.approx(1.2247, abs=1e-4) and odd["review:good"] < 0
    assert (good["borda"], bad["borda"], odd["borda"]) == (1.0, 0.5, 0.0)
    assert good["consensus"] > 0 and odd["consensus"] == 0.0
    assert good["overlap"] == 1.0 and odd["overlap"] == 0.0
    assert good["length"] < bad["length"]
    assert good["confidence"] == pytest.approx(2.0) and bad["confidence"] == 0.0  # (2 - 1) / 0.5; none: 0


def _examples(
    n: int, *, judge_sees: bool, domains: tuple[str, ...] = ("d1", "d2"), seed: int = 0
) -> list[Example]:
    """Turns where "good" is best 60 % of the time; the judge's score follows the gold or is noise."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        best = "good" if rng.random() < 0.6 else rng.choice(["bad", "odd"])
        quality = {m: float(m == best) for m in MEMBERS}
        scores = {m: (quality[m] if judge_sees else 0.0) + rng.gauss(0, 0.3) for m in MEMBERS}
        texts = {m: f"answer {m} {i}" for m in MEMBERS}
        signals = TurnSignals(MEMBERS, texts, {"judge": scores})
        out.append(Example(f"c{i // 5}", domains[i % len(domains)], "no_passage", signals, quality))
    return out


def test_cross_validation_splits_hold_out_whole_conversations_and_domains() -> None:
    examples = _examples(60, judge_sees=True)

    schemes = splits(examples)

    for train, test in schemes["conversations"]:
        assert not {e.conversation for e in train} & {e.conversation for e in test}
    assert [{e.domain for e in test} for _, test in schemes["domains"]] == [{"d1"}, {"d2"}]


def test_a_judge_that_sees_is_learned_and_beats_the_prior() -> None:
    examples = _examples(150, judge_sees=True)

    model, trials = fit_learned(examples, _committee())
    fitted = model.buckets["no_passage"]

    assert fitted.decides == "learned" and "review:judge" in fitted.features
    assert fitted.cv["scores"]["learned"] > fitted.cv["scores"]["prior"] + 0.2
    assert set(fitted.cv["schemes"]) == {"conversations", "domains"}
    assert len(trials["no_passage"]) > 10


def test_blind_judges_leave_the_decision_to_the_prior() -> None:
    examples = _examples(150, judge_sees=False)

    model, _ = fit_learned(examples, _committee())
    fitted = model.buckets["no_passage"]

    # Then: the ballots add nothing, so the prior decides (and the sentence says so)
    assert fitted.decides == "prior" and fitted.prior["good"] > fitted.prior["bad"]
    assert "add nothing" in fitted.why("no_passage")
    assert route(model, ["bad", "good", "odd"], has_passage=False) == ("good",)
    assert route(model, ["bad", "good"], has_passage=True) == ()  # no model for that bucket: ask everyone


def test_learned_route_routes_where_the_judges_gain_less_than_they_cost() -> None:
    examples = _examples(150, judge_sees=True)
    model, _ = fit_learned(examples, _committee())
    gain = model.buckets["no_passage"].gain

    # Then: the judge gains ~30 F1 points here, so it is asked unless routing demands more
    assert gain is not None and gain > 0.2
    assert route(model, MEMBERS, has_passage=False, min_gain=0.01) == ()
    assert route(model, MEMBERS, has_passage=False, min_gain=gain + 0.01) == ("good",)


def test_the_prior_alone_scores_what_it_would_choose() -> None:
    examples = _examples(100, judge_sees=False)

    scores = cross_validate(examples, ("prior",), 0.0, {})

    good_share = sum(e.quality["good"] for e in examples) / len(examples)
    assert scores["conversations"] == pytest.approx(good_share)


def test_the_learned_decision_ranks_a_live_turn_and_says_why() -> None:
    model, _ = fit_learned(_examples(150, judge_sees=True), _committee())
    candidates = [CandidateRecord(m, f"answer {m}") for m in MEMBERS] + [CandidateRecord("x", error="boom")]
    reviews = [_scored("judge", {"good": 0.0, "bad": 0.1, "odd": 2.0})]

    decision, record = decide_learned(candidates, reviews, model, committee_order=MEMBERS, passage=None)

    assert decision.status == "learned" and decision.chosen == "odd"  # the judge is trusted here
    assert decision.excluded == {"x": "boom"}
    assert record["decided_by"].startswith("learned (") and record["learned_bucket"] == "no_passage"


def test_a_learned_model_round_trips_and_knows_its_committee() -> None:
    model, _ = fit_learned(_examples(100, judge_sees=True), _committee())

    again = LearnedModel.from_json(model.to_json())

    assert again == model and again.fits(_committee())
    other = Committee(name="learned-test", members=_committee().members[:3])
    assert not again.fits(other)  # the judge is gone: its weight means nothing now


def test_rerank_learned_and_the_routed_policy_on_stored_rows() -> None:
    # Given: stored turns where the judge is blind, so the learned decision is the prior's
    examples = _examples(100, judge_sees=False)
    model, _ = fit_learned(examples, _committee())
    rows = []
    for i, example in enumerate(examples[:10]):
        scores = example.signals.reviews["judge"]
        review = _scored("judge", dict(scores))
        rows.append(
            {
                "conversation": {"id": example.conversation, "policy": "full", "n_turns": 5, "passage": None},
                "turn_index": i % 5,
                "candidates": [
                    {"member": m, "text": example.signals.texts[m], "error": None, "seconds": 1.0}
                    for m in MEMBERS
                ],
                "reviews": [{**review.to_json(), "voters": []}],
                "result": {"decision": {}},
            }
        )
    calibrated = Calibrated(learned=model.to_json())

    learned = rerank(rows, Rule("learned"), _committee(), calibrated)
    routed = rerank(rows, Rule("learned", policy="learned-route"), _committee(), calibrated)

    assert all(d.chosen == "good" and d.status == "prior" for d, _ in learned)
    assert all(f["rule_model_calls"] == 4 for _, f in learned)  # 3 answers + 1 review
    assert all(d.chosen == "good" and f["rule_model_calls"] == 1 for d, f in routed)
    assert all(f["routed"] == ["good"] for _, f in routed)


def test_turn_signals_take_one_ballot_per_voter() -> None:
    candidates = [CandidateRecord(m, f"answer {m}") for m in MEMBERS]
    reviews = [
        _scored("a", {"good": 1.0, "bad": 0.0, "odd": 0.5}),
        _scored("b", {"good": 9.0, "bad": 9.0, "odd": 9.0}),
        ReviewRecord("c", "ranking", "unparsable"),
    ]

    signals = turn_signals(
        candidates, reviews, voters={"a": "a", "b": "a", "c": "c"}, committee_order=MEMBERS
    )

    assert signals.reviews == {"a": {"good": 1.0, "bad": 0.0, "odd": 0.5}}  # b is a's voter; c gave none


def _stored_model(committee: Committee, bucket: BucketModel) -> LearnedModel:
    return LearnedModel(committee.name, {"no_passage": bucket}, voter_names(committee), own_voters(committee))


def test_a_committee_with_the_learned_decision_uses_it_live_and_says_which_rule_decided(embedded) -> None:
    # Given: a learned decision that (perversely) prefers the member with the lowest prior
    committee = scripted_committee(3, name="learned-live", reviewer_weights="learned")
    client = embedded(committee)
    prior = {"m0": 0.1, "m1": 0.2, "m2": 0.9}
    model = _stored_model(committee, BucketModel(("prior",), (-1.0,), "learned", prior))
    client.policy_store.update(learned_key(committee.name), lambda _: model.to_json())

    (outcome,) = client.submit(["Who is best?"]).wait(timeout=30)

    result = client.fetch(outcome.conversation_id).turns[0].result
    assert outcome.chosen == "m0" and result["status"] == "learned"
    assert result["decision"]["decided_by"].startswith("learned (prior) for no_passage questions")
    out = io.StringIO()
    print_rule(Console(file=out, width=300), result["decision"])
    assert "decided by: learned (prior)" in out.getvalue() and "learned decision v1" in out.getvalue()


def test_learned_route_asks_only_the_priors_top_member_where_the_judges_are_blind(embedded) -> None:
    committee = scripted_committee(3, name="learned-route", reviewer_weights="learned")
    client = embedded(committee)
    prior = {"m0": 0.1, "m1": 0.2, "m2": 0.9}
    model = _stored_model(committee, BucketModel(("prior",), (1.0,), "prior", prior))
    client.policy_store.update(learned_key(committee.name), lambda _: model.to_json())

    outcomes = client.submit(["Who is best?", "And then?"], policy="learned-route").wait(timeout=30)

    turns = client.fetch(outcomes[0].conversation_id).turns
    assert [o.chosen for o in outcomes] == ["m2", "m2"]
    for turn in turns:
        decision = turn.result["decision"]
        assert decision["generators"] == ["m2"] and decision["reviewers"] == []
        assert [c["member"] for c in turn.candidates] == ["m2"] and not turn.reviews
        assert decision["reason"].startswith("learned-route: the judges add too little")


def test_without_a_fitted_model_a_learned_committee_counts_ballots_and_says_so(embedded) -> None:
    committee = scripted_committee(3, name="learned-none", reviewer_weights="learned")
    client = embedded(committee)

    (outcome,) = client.submit(["Who is best?"]).wait(timeout=30)

    decision = client.fetch(outcome.conversation_id).turns[0].result["decision"]
    assert (
        decision["decided_by"].startswith("Borda count of")
        and "learned decision ranks" in decision["decided_by"]
    )


def test_a_stored_model_is_used_only_for_the_reviewers_it_was_fitted_for() -> None:
    from tests.test_policy import MemoryStore

    committee = _committee()
    store = MemoryStore()
    assert stored_learned(store, committee) == (
        None,
        "no learned decision fitted for this committee (run `peerblend calibrate`)",
    )
    model, _ = fit_learned(_examples(60, judge_sees=True), committee)
    store.update(learned_key(committee.name), lambda _: model.to_json())

    found, note = stored_learned(store, committee)
    changed = Committee(name=committee.name, members=committee.members[:3])  # the judge left
    missing, why = stored_learned(store, changed)

    assert found == model and note.startswith("calibrated (v1")
    assert missing is None and "other reviewers" in why


def test_the_default_committee_ships_a_learned_decision_fitted_for_its_reviewers() -> None:
    from pipeline.committee import default_committee
    from pipeline.learned import packaged_learned

    # If the default committee's reviewers change, this fails until the model is fitted again
    # (docs/results/learned/replay.sh, then analyse.sh).
    committee = default_committee()
    model = packaged_learned(committee)

    assert committee.reviewer_weights == "learned"
    assert model is not None and set(model.buckets) == {"passage", "no_passage"}
    assert model.made["run"] == "learned-cal" and "ConvQuestions" in model.made["note"]
    for bucket in model.buckets.values():
        assert set(bucket.cv["scores"]) == {"learned", "prior", "borda", "random", "oracle"}
