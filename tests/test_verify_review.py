"""The verification review: a calibrated yes/no judgement per candidate, with a fake scoring backend."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from pipeline.aggregate import judgement_key
from pipeline.backend import Prompt, ScoreRequest
from pipeline.committee import Member
from pipeline.context import Exchange
from pipeline.prompts import CONTENT_FREE_QUESTION, VERIFY_PREFIX, verification_prompts
from pipeline.records import CandidateRecord, TurnContext
from pipeline.stages import review
from tests.conftest import scripted_committee

RIGHT = "1978"
FLUENT = "The movie Grease was released in 2012."

# log P(" yes"), log P(" no") by (which answer, real question or content-free): the fluent wrong answer
# draws "yes" whatever is asked, more so than the right one does to the real question.
LOGPROBS = {
    (RIGHT, "real"): (-0.5, -1.0),
    (FLUENT, "real"): (-0.2, -2.0),
    (RIGHT, "free"): (-1.0, -1.0),
    (FLUENT, "free"): (-0.2, -3.0),
}


class FakeJudge:
    """Scores " yes"/" no" from which answer the prompt shows and whether its question is content-free."""

    def __init__(self) -> None:
        self.requests: list[ScoreRequest] = []

    def generate(self, prompts: Sequence[Prompt]) -> list[str]:
        raise AssertionError("a verification review generates nothing")

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        self.requests += requests
        return [self._one(r) for r in requests]

    def _one(self, request: ScoreRequest) -> float:
        text = request.prompt.messages[-1].content
        answer = RIGHT if f"Proposed answer: {RIGHT}" in text else FLUENT
        kind = "free" if f"Question: {CONTENT_FREE_QUESTION}\n" in text else "real"
        yes, no = LOGPROBS[(answer, kind)]
        return yes if request.continuation == " yes" else no


VERIFIER = Member(name="judge", backend="scripted", model="m", review_method="verify")
COMMITTEE = scripted_committee(2).model_copy(update={"members": (*scripted_committee(2).members, VERIFIER)})
CONTEXT = TurnContext("c", 1, "When was it released?", history=(Exchange("Which movie?", "Grease"),))
CANDIDATES = [CandidateRecord("m0", FLUENT), CandidateRecord("m1", RIGHT)]


def test_the_calibrated_verdict_prefers_the_right_answer_over_the_fluent_one() -> None:
    backend = FakeJudge()

    record = review(backend, VERIFIER, COMMITTEE, CONTEXT, CANDIDATES)

    # Then: raw yes-no margins favour the fluent answer (1.8 vs 0.5); minus the content-free margin
    # (2.8 vs 0.0) the right one wins: 0.5 vs -1.0
    assert record.status == "scored" and record.method == "verify"
    assert record.ranking == ("m1", "m0")
    assert "m1=0.5000" in record.raw and "m0=-1.0000" in record.raw
    assert len(backend.requests) == 8  # 2 candidates x (real, content-free) x (yes, no)


def test_verification_prompts_ask_about_one_answer_and_calibrate_without_context() -> None:
    conditional, free = verification_prompts(
        "When?", [Exchange("Which?", "Grease")], "In\n[C] 1978", passage="P"
    )

    assert conditional.prefill == free.prefill == VERIFY_PREFIX
    assert "Proposed answer: In (C) 1978" in conditional.messages[-1].content  # one line, no brackets
    assert (
        "Conversation so far" in conditional.messages[-1].content and "P" in conditional.messages[0].content
    )
    assert f"Question: {CONTENT_FREE_QUESTION}" in free.messages[-1].content
    assert (
        "Conversation so far" not in free.messages[-1].content and "passage" not in free.messages[0].content
    )


def test_a_failing_backend_gives_no_ballot_and_verify_is_its_own_judgement() -> None:
    class Broken(FakeJudge):
        def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
            return [0.0]

    record = review(Broken(), VERIFIER, COMMITTEE, CONTEXT, CANDIDATES)

    assert (
        record.status == "error"
        and record.ranking == ()
        and "1 scores for 8 requests" in (record.error or "")
    )
    likelihood = VERIFIER.model_copy(update={"review_method": "likelihood"})
    assert judgement_key(VERIFIER) != judgement_key(likelihood)


def test_verify_needs_a_backend_that_scores() -> None:
    with pytest.raises(ValueError, match="role 'reviewer' needs a backend that can score"):
        Member(name="x", backend="cross-encoder", model="m", roles=("reviewer",), review_method="verify")
