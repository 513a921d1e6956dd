"""The records' JSON (``pipeline.wire``): what the hand-written ``to_json`` wrote before pydantic
took over still loads and is written back the same, and a record read back is equal to itself."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from pipeline.context import Exchange
from pipeline.learned import BucketModel, LearnedModel
from pipeline.outcomes import TurnOutcome
from pipeline.plan import RunConfig
from pipeline.policy import PolicyState, TurnRoles
from pipeline.records import CandidateRecord, Judgement, ReviewRecord, TurnContext

CANDIDATE = (
    '{"member": "m1", "text": "Frank Herbert ✓", "error": null, "seconds": 1.25, "finished_at": 1700000002.5, '
    '"prompt_tokens": 812, "completion_tokens": 17, "tokens_counted": "tokenizer", "ran_out": true}'
)
# Each record as the hand-written to_json of commit a08fe07 wrote it (json.dumps, ensure_ascii=False):
# in Celery messages, and in the JSON columns of stored turns and the policy store; a candidate
# with the field added since ("ran_out", an answer cut at its token limit).
STORED: dict[type[Any], str] = {
    TurnContext: (
        '{"conversation_id": "c-7", "turn_index": 1, "question": "And the sequel?", "n_turns": 3, '
        '"history": [["Who wrote Dune?", "Frank Herbert"]], "passage": null, "enqueued_at": 1700000000.0, '
        '"attempt": 1, "system": "Be brief.", "max_new_tokens": 64, "stop": ["\\n"], "progress": true}'
    ),
    CandidateRecord: CANDIDATE,
    ReviewRecord: (
        '{"reviewer": "m0", "method": "ranking", "status": "scored", "ranking": ["m1", "m0"], '
        '"shown_order": ["m0", "m1"], "seed": 7, "raw": "RANKING: B > A", "error": null, "seconds": 0.5, '
        f'"finished_at": 1700000003.0, "candidates": [{CANDIDATE}], "voters": ["m0", "m2"], '
        '"prompt_tokens": 900, "completion_tokens": 8, "tokens_counted": "estimate"}'
    ),
    Judgement: (
        '{"judge": "j", "first": "m0", "second": "m1", "p_first": 0.75, "error": null, "seconds": 0.25, '
        f'"finished_at": 1700000004.0, "candidates": [{CANDIDATE}], "prompt_tokens": 300, '
        '"completion_tokens": 0, "tokens_counted": "estimate"}'
    ),
    PolicyState: (
        '{"ordinal": 4, "excluded": ["m2"], "scores": {"m0": 1.5, "m1": 0.5}, "last_ranking": ["m0", "m1"], '
        '"note": "p1: bottom half", "applied_turns": 2, "routed": []}'
    ),
    TurnRoles: (
        '{"generators": ["m0", "m1"], "reviewers": ["m0", "m1"], "reason": "full ranking", "excluded": ["m2"], '
        '"preference": ["m1"], "ranked": true}'
    ),
    RunConfig: '{"method": "pairwise", "policy": "p2", "top_k": 2, "live": true}',
}


@pytest.mark.parametrize("cls", STORED, ids=lambda cls: cls.__name__)
def test_a_stored_record_loads_and_is_written_back_byte_for_byte(cls: type[Any]) -> None:
    stored = STORED[cls]

    record = cls.from_json(json.loads(stored))

    assert json.dumps(record.to_json(), ensure_ascii=False) == stored
    assert cls.from_json(json.loads(stored)) == record


def test_records_stored_before_a_field_existed_load_with_its_default() -> None:
    # Given: a review stored before review groups and token usage (no voters, no candidates, no
    # token counts), and one whose voters were written as null
    review = {"reviewer": "m0", "method": "ranking", "status": "scored", "ranking": ["m1", "m0"]}

    old = ReviewRecord.from_json(review)

    # Then: it is cast for its reviewer alone, as the record it was
    assert old == ReviewRecord("m0", "ranking", "scored", ("m1", "m0"))
    assert old.voters == ("m0",) and old.candidates == () and old.tokens_counted == "estimate"
    assert ReviewRecord.from_json({**review, "voters": None}).voters == ("m0",)
    context = {"conversation_id": "c", "turn_index": 0, "question": "q", "history": [["q0", "a0"]]}
    assert TurnContext.from_json(context) == TurnContext("c", 0, "q", history=(Exchange("q0", "a0"),))
    assert RunConfig.from_json({"method": "peer", "policy": "full", "top_k": 1}) == RunConfig()  # no "live"
    assert PolicyState.from_json({}) == PolicyState()
    assert PolicyState.from_json({"ordinal": 2, "scores": {"m0": 1}}) == PolicyState(2, scores={"m0": 1.0})
    assert Judgement.from_json({"judge": "j", "first": "a", "second": "b"}) == Judgement("j", "a", "b")
    candidate = {"member": "m", "text": "t", "error": None, "seconds": 1.0, "finished_at": 2.0}
    assert CandidateRecord.from_json(candidate) == CandidateRecord("m", "t", None, 1.0, 2.0)
    assert not CandidateRecord.from_json(candidate).ran_out  # stored before answers said so


def test_a_stored_decision_record_reads_back_its_roles() -> None:
    roles = TurnRoles(("m0", "m1"), (), "p2 reuse", ("m2",), ("m1", "m0"))
    decision = {**roles.to_json(), "top_k": 1, "ballots": 0, "usage": {"prompt_tokens": 3}}

    assert TurnRoles.from_json(json.loads(json.dumps(decision))) == roles


def test_a_learned_model_stored_by_the_old_code_loads() -> None:
    # Given: a model in the old key order, its bucket without the fields added later
    old = {
        "committee": "c",
        "version": 2,
        "made": {"run": "r"},
        "buckets": {
            "no_passage": {"features": ["prior"], "weights": [1], "decides": "prior", "prior": {"a": 0.5}}
        },
    }

    model = LearnedModel.from_json(old)

    bucket = BucketModel(("prior",), (1.0,), "prior", {"a": 0.5})
    assert model == LearnedModel("c", {"no_passage": bucket}, version=2, made={"run": "r"})
    assert model.voters == {} and model.own == {} and bucket.confidence == {} and bucket.turns == 0
    # The shipped model (written by the old code) loads and is written back with the same content
    shipped = json.loads((files("pipeline") / "data" / "learned-offline-4.json").read_text(encoding="utf-8"))
    assert LearnedModel.from_json(shipped).to_json() == shipped


def test_a_turn_outcome_reads_the_stored_result_fields() -> None:
    data = {"conversation_id": "c", "turn_index": 0, "answer": "", "chosen": None, "status": "no_candidates"}

    assert TurnOutcome.from_json(data) == TurnOutcome("c", 0, "", None, "no_candidates")


def test_a_wrong_record_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="turn_index"):
        TurnContext.from_json({"conversation_id": "c", "question": "q"})
    with pytest.raises(ValidationError, match="policy"):
        RunConfig.from_json({"method": "peer", "policy": "p9", "top_k": 1})
    bucket = {"features": [], "weights": [], "decides": "vote", "prior": {}}
    with pytest.raises(ValidationError, match="decides"):
        LearnedModel.from_json({"committee": "c", "buckets": {"passage": bucket}})


TEXT = st.text(max_size=20)
NAMES = st.lists(st.sampled_from(["m0", "m1", "ü", "m 3"]), unique=True, max_size=4).map(tuple)
SECONDS = st.floats(min_value=0, max_value=2e9, allow_nan=False)
CANDIDATES = st.builds(CandidateRecord, TEXT, TEXT, st.none() | TEXT, SECONDS, SECONDS)


@given(
    st.builds(
        TurnContext,
        TEXT,
        st.integers(0, 99),
        TEXT,
        history=st.lists(st.builds(Exchange, TEXT, TEXT), max_size=3).map(tuple),
        passage=st.none() | TEXT,
        stop=st.lists(TEXT, max_size=2).map(tuple),
    ),
    st.builds(
        ReviewRecord,
        TEXT,
        TEXT,
        TEXT,
        NAMES,
        NAMES,
        raw=TEXT,
        seconds=SECONDS,
        candidates=st.lists(CANDIDATES, max_size=3).map(tuple),
        voters=NAMES,
    ),
)
def test_a_record_read_back_from_its_json_is_equal_to_it(context: TurnContext, review: ReviewRecord) -> None:
    for record in (context, review):
        assert type(record).from_json(json.loads(json.dumps(record.to_json()))) == record
