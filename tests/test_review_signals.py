"""The length-corrected likelihood and the self-consistency reviews, with fake backends."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.aggregate import judgement_key
from pipeline.backend import Prompt, ScoreRequest
from pipeline.committee import Generation, Member
from pipeline.prompts import CONTENT_FREE_QUESTION
from pipeline.records import CandidateRecord, TurnContext
from pipeline.stages import answer_length, review
from tests.conftest import scripted_committee

SHORT = "Yes."
LONG = "Yes, you can freeze the dough for up to three months."
CONTEXT = TurnContext("c", 0, "Can I freeze the dough?")
CANDIDATES = [CandidateRecord("m0", SHORT), CandidateRecord("m1", LONG)]


class FakeScorer:
    """Mean log-prob per token: the short reply is likelier per token; the content-free prompt
    gives both the same baseline."""

    def generate(self, prompts: Sequence[Prompt]) -> list[str]:
        raise AssertionError("a likelihood review generates nothing")

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        out = []
        for r in requests:
            free = r.prompt.messages[-1].content == CONTENT_FREE_QUESTION
            out.append(-3.0 if free else (-1.0 if r.continuation == SHORT else -1.5))
        return out


def _with(*members: Member):
    base = scripted_committee(2)
    return base.model_copy(update={"members": (*base.members, *members)})


def test_total_likelihood_weighs_the_per_token_evidence_by_the_answer_length() -> None:
    per_token = Member(name="lik", backend="scripted", model="m", review_method="likelihood")
    total = Member(name="tot", backend="scripted", model="m", review_method="likelihood-total")
    committee = _with(per_token, total)

    mean = review(FakeScorer(), per_token, committee, CONTEXT, CANDIDATES)
    summed = review(FakeScorer(), total, committee, CONTEXT, CANDIDATES)

    # PMI per token: "Yes." 2.0 > the long answer's 1.5; times the words (1 vs 11): 2.0 < 16.5
    assert mean.ranking == ("m0", "m1")
    assert summed.status == "scored" and summed.method == "likelihood-total"
    assert summed.ranking == ("m1", "m0")
    assert "m1=16.5000" in summed.raw and "m0=2.0000" in summed.raw


def test_answer_length_counts_words_and_never_zero() -> None:
    assert answer_length("  a b\nc ") == 3
    assert answer_length("") == 1


class FakeSampler:
    """Answers sampled prompts from a fixed list; records what it was asked."""

    def __init__(self, samples: list[str]) -> None:
        self.samples = samples
        self.prompts: list[Prompt] = []

    def generate(self, prompts: Sequence[Prompt]) -> list[str]:
        self.prompts += prompts
        return [self.samples[i % len(self.samples)] for i in range(len(prompts))]

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        raise AssertionError("a consistency review scores nothing")


def test_consistency_ranks_by_agreement_with_the_reviewers_own_samples() -> None:
    reviewer = Member(
        name="sc",
        backend="scripted",
        model="m",
        review_method="consistency",
        generation=Generation(consistency_samples=3, consistency_temperature=0.9, max_new_tokens=12),
    )
    candidates = [CandidateRecord("m0", "Paris"), CandidateRecord("m1", "Lyon, France")]
    backend = FakeSampler([" Lyon", "Lyon France", "Paris"])

    record = review(backend, reviewer, _with(reviewer), CONTEXT, candidates)

    # token F1 with the samples: "Paris" 0, 0, 1 -> 0.333; "Lyon, France" 0.667, 1.0, 0 -> 0.556
    assert record.status == "scored" and record.ranking == ("m1", "m0")
    assert "m1=0.5556" in record.raw and "m0=0.3333" in record.raw
    assert "sample: Lyon France" in record.raw
    # Three sampled prompts at the reviewer's temperature, each with its own seed, answer-length bound
    assert len(backend.prompts) == 3
    assert {p.temperature for p in backend.prompts} == {0.9}
    assert len({p.seed for p in backend.prompts}) == 3
    assert {p.max_new_tokens for p in backend.prompts} == {12}
    assert backend.prompts[0].messages[-1].content.endswith(CONTEXT.question)


def test_consistency_reviewers_that_sample_differently_are_different_voters() -> None:
    a = Member(name="a", backend="scripted", model="m", review_method="consistency")
    b = a.model_copy(update={"name": "b"})
    c = a.model_copy(update={"name": "c", "generation": Generation(consistency_temperature=1.2)})
    lik = a.model_copy(update={"name": "d", "review_method": "likelihood"})

    assert judgement_key(a) == judgement_key(b)
    assert judgement_key(a) != judgement_key(c)
    assert judgement_key(a) != judgement_key(lik)
