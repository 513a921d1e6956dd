"""The LLM-Blender baseline: pairwise judgements, "max logits", and the judge stage over a fake backend."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.backend import ScoreRequest
from pipeline.committee import Committee, Member
from pipeline.pairwise import decide_pairwise, judge, max_logits, pairwise_ranking, preference
from pipeline.prompts import PAIRWISE_PREFIX
from pipeline.records import CandidateRecord, Judgement, TurnContext


def judged(first: str, second: str, p_first: float | None) -> Judgement:
    return Judgement("judge", first, second, p_first=p_first)


# Hand-computed: M[a][b] = .9, M[b][a] = .3, M[a][c] = .8, M[c][a] = .4, M[b][c] = .6, M[c][b] = .2
# s_a = (.9 - .3) + (.8 - .4) = 1.0; s_b = (.3 - .9) + (.6 - .2) = -0.2; s_c = (.4 - .8) + (.2 - .6) = -0.8
THREE = [
    judged("a", "b", 0.9),
    judged("b", "a", 0.3),
    judged("a", "c", 0.8),
    judged("c", "a", 0.4),
    judged("b", "c", 0.6),
    judged("c", "b", 0.2),
]


# --- max_logits ------------------------------------------------------------------------------------


def test_max_logits_on_a_hand_computed_example():
    scores = max_logits(THREE, ["a", "b", "c"])

    assert scores == pytest.approx({"a": 1.0, "b": -0.2, "c": -0.8})
    assert pairwise_ranking(scores, ["c", "b", "a"]) == ["a", "b", "c"]


def test_max_logits_ignores_unjudged_pairs_and_unknown_members():
    noise = [
        Judgement("judge", "a", "b", p_first=None, error="TimeoutError: judge down"),
        judged("a", "zed", 1.0),
        judged("zed", "c", 1.0),
    ]

    assert max_logits([*THREE, *noise], ["a", "b", "c"]) == pytest.approx({"a": 1.0, "b": -0.2, "c": -0.8})


def test_max_logits_scores_every_member_even_unjudged_ones():
    assert max_logits([], ["a", "b"]) == {"a": 0.0, "b": 0.0}
    assert max_logits([judged("a", "b", 0.7)], ["a", "b", "c"]) == pytest.approx(
        {"a": 0.7, "b": -0.7, "c": 0.0}
    )


_probability = st.floats(min_value=0.0, max_value=1.0)


@st.composite
def judge_matrices(draw: st.DrawFn) -> tuple[list[str], dict[tuple[str, str], float | None]]:
    """Members and M[i][j] for every ordered pair (None: the pair was not judged)."""
    n = draw(st.integers(min_value=2, max_value=6))
    members = [f"m{i}" for i in range(n)]
    matrix = {pair: draw(st.none() | _probability) for pair in itertools.permutations(members, 2)}
    return members, matrix


@given(judge_matrices())
def test_max_logits_is_the_antisymmetric_sum_and_scores_sum_to_zero(case):
    members, matrix = case
    judgements = [judged(i, j, p) for (i, j), p in matrix.items()]

    scores = max_logits(judgements, members)

    def m(i: str, j: str) -> float:
        return matrix[(i, j)] or 0.0

    for i in members:
        expected = sum(m(i, j) - m(j, i) for j in members if j != i)
        assert scores[i] == pytest.approx(expected, abs=1e-9)
    assert math.fsum(scores.values()) == pytest.approx(0.0, abs=1e-9)


@given(judge_matrices(), st.data())
def test_a_candidate_preferred_in_every_pair_in_both_orders_ranks_first(case, data):
    # Given m_best beats everyone, whichever position it is shown in; other pairs are random.
    members, matrix = case
    best = data.draw(st.sampled_from(members))
    for other in members:
        if other != best:
            matrix[(best, other)] = data.draw(st.floats(min_value=0.9, max_value=1.0))
            matrix[(other, best)] = data.draw(st.floats(min_value=0.0, max_value=0.1))
    judgements = [judged(i, j, p) for (i, j), p in matrix.items()]

    ranking = pairwise_ranking(max_logits(judgements, members), members)

    assert ranking[0] == best


# --- preference and ranking ------------------------------------------------------------------------


def test_preference_is_the_softmax_of_the_two_log_probabilities():
    assert preference(math.log(0.3), math.log(0.1)) == pytest.approx(0.75)
    assert preference(-0.5, -0.5) == 0.5


@given(st.floats(min_value=-1e4, max_value=0.0), st.floats(min_value=-1e4, max_value=0.0))
def test_preference_is_symmetric(logprob_a, logprob_b):
    p = preference(logprob_a, logprob_b)

    assert 0.0 <= p <= 1.0
    assert p + preference(logprob_b, logprob_a) == pytest.approx(1.0)


def test_preference_is_stable_for_very_negative_log_probabilities():
    # Naive exp(-1000) underflows to 0 and would divide 0 by 0.
    assert preference(-1000.0, -1001.0) == pytest.approx(1 / (1 + math.exp(-1)))
    assert preference(-1001.0, -1000.0) == pytest.approx(1 / (1 + math.exp(1)))
    assert preference(-1e6, 0.0) == pytest.approx(0.0)


def test_pairwise_ranking_keeps_the_given_order_on_ties():
    scores = {"a": 0.0, "b": 0.5, "c": 0.0, "d": 0.5}

    assert pairwise_ranking(scores, ["d", "c", "b", "a"]) == ["d", "b", "c", "a"]
    assert pairwise_ranking(scores, ["a", "b", "c", "d"]) == ["b", "d", "a", "c"]


# --- decide_pairwise -------------------------------------------------------------------------------


def test_decide_pairwise_ranks_usable_candidates_and_lists_the_failed():
    candidates = [
        CandidateRecord("a", "Paris"),
        CandidateRecord("b", error="RuntimeError: GPU on fire"),
        CandidateRecord("c", "Lyon"),
        CandidateRecord("d", "   "),
    ]
    judgements = [
        judged("a", "c", 0.8),
        judged("c", "a", 0.3),
        Judgement("judge", "a", "b", error="a candidate of this pair failed"),
        Judgement("judge", "d", "c", error="a candidate of this pair failed"),
    ]

    decision = decide_pairwise(candidates, judgements, committee_order=["a", "b", "c", "d"])

    assert decision.ranking == ("a", "c")
    assert decision.scores == pytest.approx({"a": 0.5, "c": -0.5})
    assert decision.status == "ok"
    assert decision.ballots_used == 2
    assert decision.excluded == {"b": "RuntimeError: GPU on fire", "d": "empty answer"}


@pytest.mark.parametrize(
    ("candidates", "ranking", "status"),
    [
        ([CandidateRecord("a", "Paris"), CandidateRecord("b", error="down")], ("a",), "single"),
        ([CandidateRecord("a", error="down"), CandidateRecord("b", "")], (), "no_candidates"),
    ],
)
def test_decide_pairwise_with_fewer_than_two_usable_candidates(candidates, ranking, status):
    decision = decide_pairwise(candidates, [judged("a", "b", 0.9)], committee_order=["a", "b"])

    assert (decision.ranking, decision.status, decision.ballots_used) == (ranking, status, 0)
    assert decision.chosen == (ranking[0] if ranking else None)


def test_decide_pairwise_without_judged_pairs_keeps_committee_order():
    candidates = [CandidateRecord("a", "x"), CandidateRecord("b", "y"), CandidateRecord("c", "z")]
    unjudged = [Judgement("judge", "c", "a", error="TimeoutError")]

    decision = decide_pairwise(candidates, unjudged, committee_order=["c", "a", "b"])

    assert decision.ranking == ("c", "a", "b")
    assert decision.status == "no_ballots"
    assert decision.ballots_used == 0


# --- the judge stage -------------------------------------------------------------------------------


class FakeJudgeBackend:
    """Scores " A" and " B" from a script and records every request; never generates."""

    def __init__(
        self,
        logprobs: Callable[[ScoreRequest], float] | dict[str, float] | None = None,
        error: Exception | None = None,
    ) -> None:
        self.logprobs = logprobs or {" A": -0.1, " B": -2.3}
        self.error = error
        self.requests: list[ScoreRequest] = []

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        self.requests.extend(requests)
        if self.error:
            raise self.error
        if callable(self.logprobs):
            return [self.logprobs(r) for r in requests]
        return [self.logprobs[r.continuation] for r in requests]

    def generate(self, prompts: object) -> list[str]:
        raise AssertionError("the judge scores, it does not generate")


def _member(name: str) -> Member:
    return Member(name=name, backend="scripted", model=f"model-{name}")


COMMITTEE = Committee(name="c", members=(_member("m0"), _member("m1"), _member("m2")), pairwise_judge="m2")
CONTEXT = TurnContext(conversation_id="conv", turn_index=0, question="What is the capital of France?")
CANDIDATES = (
    CandidateRecord("m0", "Paris is the capital."),
    CandidateRecord("m1", "Lyon, probably."),
    CandidateRecord("m2", error="RuntimeError: out of memory"),
)


def _judge(backend: FakeJudgeBackend, pair: tuple[str, str], candidates=CANDIDATES) -> Judgement:
    return judge(backend, COMMITTEE.member("m2"), COMMITTEE, CONTEXT, candidates, pair)


def test_judge_returns_p_first_from_the_a_and_b_scores():
    backend = FakeJudgeBackend({" A": -0.1, " B": -2.3})

    result = _judge(backend, ("m0", "m1"))

    assert (result.judge, result.first, result.second) == ("m2", "m0", "m1")
    assert result.p_first == pytest.approx(preference(-0.1, -2.3))
    assert result.error is None
    assert result.candidates == CANDIDATES
    assert [r.continuation for r in backend.requests] == [" A", " B"]
    assert backend.requests[0].prompt == backend.requests[1].prompt
    assert backend.requests[0].prompt.prefill == PAIRWISE_PREFIX


@pytest.mark.parametrize(
    ("pair", "a_text", "b_text"),
    [
        (("m0", "m1"), "Paris is the capital.", "Lyon, probably."),
        (("m1", "m0"), "Lyon, probably.", "Paris is the capital."),
    ],
)
def test_judge_shows_the_first_member_as_answer_a_and_the_second_as_answer_b(pair, a_text, b_text):
    backend = FakeJudgeBackend()

    _judge(backend, pair)

    shown = backend.requests[0].prompt.messages[-1].content
    assert f"Answer A: {a_text}\nAnswer B: {b_text}" in shown
    assert "What is the capital of France?" in shown


def test_judge_of_both_orders_cancels_position_bias():
    # Given a judge that prefers whatever is shown first by 1.0 nat, and Paris by 0.5 nat.
    def biased(request: ScoreRequest) -> float:
        shown = request.prompt.messages[-1].content
        answer_a = shown.split("Answer A: ")[1].split("\n")[0]
        says_paris = ("Paris" in answer_a) == (request.continuation == " A")
        return (1.0 if request.continuation == " A" else 0.0) + (0.5 if says_paris else 0.0) - 5.0

    backend = FakeJudgeBackend(biased)
    candidates = CANDIDATES[:2]

    judgements = [_judge(backend, pair, candidates) for pair in itertools.permutations(["m1", "m0"], 2)]
    decision = decide_pairwise(candidates, judgements, committee_order=["m1", "m0"])

    # Then both orders favour the first shown, but Paris (m0) wins overall.
    assert all(j.p_first is not None and j.p_first > 0.5 for j in judgements)
    assert decision.ranking == ("m0", "m1")


@pytest.mark.parametrize("pair", [("m0", "m2"), ("m2", "m1")])
def test_judge_of_a_pair_with_a_failed_candidate_records_an_error_without_calling_the_backend(pair):
    backend = FakeJudgeBackend()

    result = _judge(backend, pair)

    assert result.p_first is None
    assert result.error == "a candidate of this pair failed"
    assert backend.requests == []


def test_judge_of_a_pair_with_an_empty_answer_is_not_judged():
    backend = FakeJudgeBackend()
    candidates = (CandidateRecord("m0", "Paris"), CandidateRecord("m1", "  "))

    result = _judge(backend, ("m0", "m1"), candidates)

    assert result.p_first is None
    assert result.error is not None
    assert backend.requests == []


def test_judge_records_a_backend_failure_and_does_not_raise():
    backend = FakeJudgeBackend(error=RuntimeError("CUDA out of memory"))

    result = _judge(backend, ("m0", "m1"))

    assert result.p_first is None
    assert result.error == "RuntimeError: CUDA out of memory"
    assert len(backend.requests) == 2
    assert result.seconds >= 0.0


def test_judgement_round_trips_through_json():
    result = _judge(FakeJudgeBackend(), ("m1", "m0"))

    assert Judgement.from_json(result.to_json()) == result
