"""The model stages (answer, review, fuse) over a scripted fake backend, and the decision."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import pytest

from pipeline.aggregate import Standings, decide, top_k_texts
from pipeline.backend import Prompt, ScoreRequest
from pipeline.ballot_grammar import BallotPath
from pipeline.committee import Committee, Member
from pipeline.context import Exchange
from pipeline.fusion import fuse
from pipeline.prompts import CONTENT_FREE_QUESTION, RANKING_PREFIX
from pipeline.records import CandidateRecord, ReviewRecord, TurnContext
from pipeline.stages import answer, review

Reply = str | Callable[[Prompt], str]


class FakeBackend:
    """A scripted backend, like simonw/llm's MockModel: queued replies and a call history.

    ``replies``: one per generated prompt, in order; a callable reply is given the prompt.
    ``scores``: (kind, continuation) -> mean log-probability, kind "conditional" or
    "content_free" (a prompt whose question is CONTENT_FREE_QUESTION).
    ``error``: raised by every call, after it is recorded.
    """

    def __init__(
        self,
        replies: Sequence[Reply] = (),
        scores: Mapping[tuple[str, str], float] | None = None,
        error: Exception | None = None,
    ) -> None:
        self.replies = list(replies)
        self.scores = dict(scores or {})
        self.error = error
        self.generated: list[Prompt] = []
        self.scored: list[ScoreRequest] = []

    def generate(self, prompts: Sequence[Prompt]) -> list[str]:
        self.generated.extend(prompts)
        if self.error:
            raise self.error
        out = []
        for prompt in prompts:
            reply = self.replies.pop(0)
            out.append(reply(prompt) if callable(reply) else reply)
        return out

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        self.scored.extend(requests)
        if self.error:
            raise self.error
        return [self.scores[(_kind(r.prompt), r.continuation)] for r in requests]


def _kind(prompt: Prompt) -> str:
    return "content_free" if prompt.messages[-1].content == CONTENT_FREE_QUESTION else "conditional"


def _member(name: str, **extra: object) -> Member:
    return Member(name=name, backend="scripted", model="echo", **extra)  # type: ignore[arg-type]


COMMITTEE = Committee(
    name="test",
    members=(
        _member("alpha"),
        _member("beta"),
        _member("gamma"),
        _member("judge-text", roles=("reviewer",), review_method="ranking"),
        _member("judge-pmi", roles=("reviewer",), review_method="likelihood"),
    ),
)
ORDER = ["alpha", "beta", "gamma"]
CONTEXT = TurnContext(
    conversation_id="conv-1",
    turn_index=1,
    question="What is the follow up book?",
    history=(Exchange("Who wrote Dune?", "Frank Herbert"),),
)
TEXTS = {"alpha": "Dune Messiah", "beta": "Children of Dune", "gamma": "Foundation"}


def _candidates(order: Sequence[str] = ORDER) -> list[CandidateRecord]:
    return [CandidateRecord(m, text=TEXTS[m]) for m in order]


def _shown_labels(prompt: Prompt) -> dict[str, str]:
    """Answer text -> label, as the reviewer's prompt shows them ("[A] text" lines)."""
    return {
        text: label for label, text in re.findall(r"^\[([A-Z])\] (.*)$", prompt.messages[-1].content, re.M)
    }


def _reply_ranking(*members: str) -> Callable[[Prompt], str]:
    """A reviewer reply that ranks the given members' answers, found by their text in the prompt."""

    def reply(prompt: Prompt) -> str:
        labels = _shown_labels(prompt)
        return " > ".join(labels[TEXTS[m]] for m in members)

    return reply


# --- answer ----------------------------------------------------------------------------------


def test_answer_success() -> None:
    backend = FakeBackend(["  Dune Messiah \n"])

    record = answer(backend, COMMITTEE.member("alpha"), COMMITTEE, CONTEXT)

    assert record.member == "alpha"
    assert record.text == "Dune Messiah"
    assert record.error is None
    assert record.ok
    assert record.seconds >= 0
    assert record.finished_at > 0
    # the prompt carried the question and the conversation so far
    (prompt,) = backend.generated
    contents = [m.content for m in prompt.messages]
    assert contents[-1] == CONTEXT.question
    assert "Who wrote Dune?" in contents
    assert "Frank Herbert" in contents


def test_answer_uses_member_generation_settings() -> None:
    member = _member("terse", generation={"style": "terse", "max_new_tokens": 7})
    backend = FakeBackend(["Dune Messiah"])

    answer(backend, member, COMMITTEE, CONTEXT)

    assert backend.generated[0].max_new_tokens == 7
    assert backend.generated[0].stop == ("\n",)


def test_answer_backend_error_becomes_a_record() -> None:
    backend = FakeBackend(error=RuntimeError("CUDA out of memory"))

    record = answer(backend, COMMITTEE.member("beta"), COMMITTEE, CONTEXT)

    assert record.member == "beta"
    assert record.error == "RuntimeError: CUDA out of memory"
    assert record.text == ""
    assert not record.ok


@pytest.mark.parametrize("text", ["", "  \n "])
def test_answer_empty_text_is_an_error(text: str) -> None:
    record = answer(FakeBackend([text]), COMMITTEE.member("alpha"), COMMITTEE, CONTEXT)

    assert record.error == "empty answer"
    assert not record.ok


# --- review: ranking method ------------------------------------------------------------------


@pytest.mark.parametrize("turn_index", range(6))
@pytest.mark.parametrize("arrival", [ORDER, ["gamma", "alpha", "beta"]], ids=["in-order", "out-of-order"])
def test_ranking_review_maps_labels_back_to_members(turn_index: int, arrival: list[str]) -> None:
    # Given candidates arriving in any order, shown to the reviewer shuffled under labels
    context = TurnContext("conv-1", turn_index, CONTEXT.question, CONTEXT.history)
    backend = FakeBackend([_reply_ranking("beta", "gamma", "alpha")])

    # When the reviewer answers with the labels under which beta, gamma, alpha were shown
    record = review(backend, COMMITTEE.member("judge-text"), COMMITTEE, context, _candidates(arrival))

    # Then the ballot names those members, in that order (unless that is exactly the order
    # shown, which is recorded as a copied list and dropped)
    if record.shown_order == ("beta", "gamma", "alpha"):
        assert (record.status, record.ranking) == ("copied", ())
    else:
        assert record.status == "ok"
        assert record.ranking == ("beta", "gamma", "alpha")
    assert record.reviewer == "judge-text"
    assert record.method == "ranking"
    assert record.error is None


def test_ranking_review_records_the_order_shown() -> None:
    backend = FakeBackend(["C > A > B"])

    record = review(backend, COMMITTEE.member("judge-text"), COMMITTEE, CONTEXT, _candidates())

    # The labels A, B, C were given in the recorded shown order, so "C > A > B" maps through it
    (prompt,) = backend.generated
    labels = _shown_labels(prompt)
    assert [labels[TEXTS[m]] for m in record.shown_order] == ["A", "B", "C"]
    shown = record.shown_order
    assert record.ranking == (shown[2], shown[0], shown[1])
    assert sorted(record.shown_order) == sorted(ORDER)
    assert record.raw == "C > A > B"
    assert prompt.prefill == RANKING_PREFIX


def test_a_ranking_that_copies_the_shown_order_is_recorded_and_dropped() -> None:
    record = review(
        FakeBackend(["A > B > C"]), COMMITTEE.member("judge-text"), COMMITTEE, CONTEXT, _candidates()
    )

    assert (record.status, record.ranking, record.raw) == ("copied", (), "A > B > C")


class BallotBackend(FakeBackend):
    """A FakeBackend with ``Capability.BALLOT``'s method: it reports ``path`` after each call."""

    def __init__(self, replies: Sequence[Reply], path: BallotPath) -> None:
        super().__init__(replies)
        self.path = path
        self.asked: list[tuple[str, ...]] = []

    def ballot_path(self, labels: Sequence[str]) -> BallotPath:
        self.asked.append(tuple(labels))
        return self.path


def _ballot_reviewer(path: str) -> Member:
    return _member(f"judge-{path}", roles=("reviewer",), review_method="ranking", options={"ballot": path})


@pytest.mark.parametrize("path", [BallotPath.CONSTRAINED, BallotPath.STRUCTURED])
def test_a_backend_that_writes_ballots_is_asked_for_one_and_the_path_is_recorded(path: BallotPath) -> None:
    # Given a reviewer whose backend declares Capability.BALLOT
    backend = BallotBackend([_reply_ranking("beta", "gamma", "alpha")], path)
    reviewer = _ballot_reviewer(path.value)

    record = review(backend, reviewer, COMMITTEE, CONTEXT, _candidates())

    # Then its prompt carries the labels shown, and the ballot says which path wrote it
    (prompt,) = backend.generated
    assert prompt.ballot == ("A", "B", "C") and backend.asked == [("A", "B", "C")]
    assert prompt.prefill == RANKING_PREFIX
    if record.shown_order == ("beta", "gamma", "alpha"):
        assert record.status == "copied"
    else:
        assert (record.status, record.ranking) == (path.value, ("beta", "gamma", "alpha"))
    assert record.raw.startswith(f"{path.value}: ") and " > " in record.raw


def test_a_constrained_ballot_that_copies_the_shown_order_is_dropped_with_its_path() -> None:
    backend = BallotBackend(["A > B > C"], BallotPath.CONSTRAINED)

    record = review(backend, _ballot_reviewer("constrained"), COMMITTEE, CONTEXT, _candidates())

    assert (record.status, record.ranking, record.raw) == ("copied", (), "constrained: A > B > C")


def test_a_backend_that_could_not_constrain_this_ballot_is_parsed_as_free_text() -> None:
    # Given a server without structured outputs: it takes the ballot prompt but writes free text
    backend = BallotBackend(["I prefer C > A"], BallotPath.PARSED)

    record = review(backend, _ballot_reviewer("structured"), COMMITTEE, CONTEXT, _candidates())

    assert record.status == "fallback"
    assert record.raw == "I prefer C > A"
    assert record.ranking == (record.shown_order[2], record.shown_order[0])


def test_a_reviewer_without_the_capability_is_not_asked_for_a_ballot() -> None:
    backend = FakeBackend(["C > A > B"])

    record = review(backend, COMMITTEE.member("judge-text"), COMMITTEE, CONTEXT, _candidates())

    (prompt,) = backend.generated
    assert prompt.ballot == ()
    assert record.status == "ok" and record.raw == "C > A > B"


def test_shown_order_is_replayable_and_differs_between_reviewers() -> None:
    # Given the same turn reviewed twice by one reviewer, and by many reviewers
    candidates = _candidates()
    first = review(FakeBackend(["A > B"]), COMMITTEE.member("judge-text"), COMMITTEE, CONTEXT, candidates)
    again = review(FakeBackend(["A > B"]), COMMITTEE.member("judge-text"), COMMITTEE, CONTEXT, candidates)
    others = {
        review(
            FakeBackend(["A > B"]),
            _member(f"judge-{i}", review_method="ranking"),
            COMMITTEE,
            CONTEXT,
            candidates,
        ).shown_order
        for i in range(12)
    }

    # Then the shuffle replays from the recorded seed, and reviewers see different orders
    assert (first.seed, first.shown_order) == (again.seed, again.shown_order)
    assert len(others) > 1


def test_unparsable_ranking_gives_no_ballot() -> None:
    backend = FakeBackend(["They are all quite good."])

    record = review(backend, COMMITTEE.member("judge-text"), COMMITTEE, CONTEXT, _candidates())

    assert record.status == "unparsable"
    assert record.ranking == ()
    assert record.raw == "They are all quite good."


def test_fallback_ranking_is_marked() -> None:
    backend = FakeBackend(["I prefer A > C"])

    record = review(backend, COMMITTEE.member("judge-text"), COMMITTEE, CONTEXT, _candidates())

    assert record.status == "fallback"
    assert record.ranking == (record.shown_order[0], record.shown_order[2])


def test_failed_candidates_are_not_shown_to_reviewers() -> None:
    # Given beta failed (with an error text, as earlier implementations passed on) and gamma is empty
    candidates = [
        CandidateRecord("alpha", text="Dune Messiah"),
        CandidateRecord("beta", text="Error: CUDA out of memory", error="RuntimeError: CUDA out of memory"),
        CandidateRecord("gamma", text="", error="empty answer"),
        CandidateRecord("delta", text="Children of Dune"),
    ]
    backend = FakeBackend(["A > B"])

    record = review(backend, COMMITTEE.member("judge-text"), COMMITTEE, CONTEXT, candidates)

    # Then only alpha and delta are labelled and ranked
    (prompt,) = backend.generated
    assert sorted(_shown_labels(prompt)) == ["Children of Dune", "Dune Messiah"]
    assert "CUDA" not in prompt.messages[-1].content
    assert sorted(record.shown_order) == ["alpha", "delta"]
    assert set(record.ranking) == {"alpha", "delta"}
    # and every candidate is carried on to the aggregation, failures included
    assert record.candidates == tuple(candidates)


@pytest.mark.parametrize("usable_count", [0, 1])
@pytest.mark.parametrize("reviewer", ["judge-text", "judge-pmi"])
def test_fewer_than_two_usable_candidates_is_skipped(usable_count: int, reviewer: str) -> None:
    candidates = [CandidateRecord("alpha", text="Dune Messiah"), CandidateRecord("beta", error="boom")]
    backend = FakeBackend(["A > B"])

    record = review(backend, COMMITTEE.member(reviewer), COMMITTEE, CONTEXT, candidates[1 - usable_count :])

    assert record.status == "skipped"
    assert record.ranking == ()
    assert backend.generated == []
    assert backend.scored == []


@pytest.mark.parametrize("reviewer", ["judge-text", "judge-pmi"])
def test_reviewer_backend_error_becomes_a_record(reviewer: str) -> None:
    backend = FakeBackend(error=ValueError("model not loaded"))

    record = review(backend, COMMITTEE.member(reviewer), COMMITTEE, CONTEXT, _candidates())

    assert record.status == "error"
    assert record.error == "ValueError: model not loaded"
    assert record.ranking == ()


# --- review: likelihood method (PMI) ---------------------------------------------------------


def test_likelihood_review_ranks_by_pmi_not_raw_likelihood() -> None:
    # Given raw conditional log-probs that favour alpha > beta > gamma,
    # but beta and gamma are far more likely given the question than in themselves
    scores = {
        ("conditional", TEXTS["alpha"]): -1.0,
        ("conditional", TEXTS["beta"]): -2.0,
        ("conditional", TEXTS["gamma"]): -3.0,
        ("content_free", TEXTS["alpha"]): -0.5,  # PMI -0.5
        ("content_free", TEXTS["beta"]): -3.0,  # PMI +1.0
        ("content_free", TEXTS["gamma"]): -3.2,  # PMI +0.2
    }
    backend = FakeBackend(scores=scores)

    # When the likelihood reviewer reviews, whatever order candidates arrived in
    record = review(
        backend, COMMITTEE.member("judge-pmi"), COMMITTEE, CONTEXT, _candidates(["gamma", "beta", "alpha"])
    )

    # Then PMI decides: beta > gamma > alpha
    assert record.status == "scored"
    assert record.method == "likelihood"
    assert record.ranking == ("beta", "gamma", "alpha")
    assert "beta=1.0000" in record.raw
    assert backend.generated == []
    # each candidate scored once under each prompt
    kinds = sorted((_kind(r.prompt), r.continuation) for r in backend.scored)
    assert kinds == sorted(scores)


def test_likelihood_review_conditional_prompt_has_question_and_history() -> None:
    scores = {(kind, text): -1.0 for kind in ("conditional", "content_free") for text in TEXTS.values()}
    backend = FakeBackend(scores=scores)

    review(backend, COMMITTEE.member("judge-pmi"), COMMITTEE, CONTEXT, _candidates())

    conditional = [r.prompt for r in backend.scored if _kind(r.prompt) == "conditional"]
    content_free = [r.prompt for r in backend.scored if _kind(r.prompt) == "content_free"]
    assert all(p.messages[-1].content == CONTEXT.question for p in conditional)
    assert all("Frank Herbert" in [m.content for m in p.messages] for p in conditional)
    assert all(len(p.messages) == 2 for p in content_free)


def test_likelihood_review_ties_keep_shown_order() -> None:
    scores = {(kind, text): -1.0 for kind in ("conditional", "content_free") for text in TEXTS.values()}

    record = review(
        FakeBackend(scores=scores), COMMITTEE.member("judge-pmi"), COMMITTEE, CONTEXT, _candidates()
    )

    assert record.ranking == record.shown_order


# --- fuse ------------------------------------------------------------------------------------


def test_fuse_passes_the_texts_best_first() -> None:
    backend = FakeBackend([" Dune Messiah "])

    text = fuse(backend, COMMITTEE.member("alpha"), COMMITTEE, CONTEXT, ["Dune Messiah", "Children of Dune"])

    assert text == "Dune Messiah"
    content = backend.generated[0].messages[-1].content
    assert content.index("- Dune Messiah") < content.index("- Children of Dune")


# --- decide ----------------------------------------------------------------------------------


def _review(reviewer: str, *ranking: str) -> ReviewRecord:
    return ReviewRecord(
        reviewer=reviewer, method="ranking", status="ok" if ranking else "unparsable", ranking=ranking
    )


def test_decide_ranks_by_borda() -> None:
    reviews = [_review("r1", "gamma", "alpha", "beta"), _review("r2", "gamma", "beta", "alpha")]

    decision = decide(_candidates(), reviews, committee_order=ORDER)

    assert decision.status == "ok"
    assert decision.chosen == "gamma"
    assert decision.ranking == ("gamma", "alpha", "beta")  # alpha/beta tie: committee order
    assert decision.scores == {"alpha": 1.0, "beta": 1.0, "gamma": 4.0}
    assert decision.ballots_used == 2
    assert decision.excluded == {}


def test_decide_excludes_failed_candidates() -> None:
    candidates = [
        CandidateRecord("alpha", text="Dune Messiah"),
        CandidateRecord("beta", text="Error: boom", error="RuntimeError: boom"),
        CandidateRecord("gamma", text="Foundation"),
    ]
    # a ballot naming the failed member (it should never have been shown) does not revive it
    reviews = [_review("r1", "beta", "gamma", "alpha")]

    decision = decide(candidates, reviews, committee_order=ORDER)

    assert decision.ranking == ("gamma", "alpha")
    assert "beta" not in decision.scores
    assert decision.excluded == {"beta": "RuntimeError: boom"}


def test_decide_all_failed() -> None:
    candidates = [CandidateRecord("alpha", error="boom"), CandidateRecord("beta", text="  ")]

    decision = decide(candidates, [_review("r1", "alpha", "beta")], committee_order=ORDER)

    assert decision.status == "no_candidates"
    assert decision.ranking == ()
    assert decision.chosen is None
    assert decision.excluded == {"alpha": "boom", "beta": "empty answer"}


def test_decide_single_usable_candidate() -> None:
    candidates = [CandidateRecord("alpha", error="boom"), CandidateRecord("beta", text="Children of Dune")]

    decision = decide(candidates, [], committee_order=ORDER)

    assert decision.status == "single"
    assert decision.chosen == "beta"
    assert decision.excluded == {"alpha": "boom"}


def test_decide_no_ballots_keeps_committee_order() -> None:
    # Given every reviewer ran but none produced a ballot, and candidates arrived out of order
    reviews = [_review("r1"), ReviewRecord("r2", "likelihood", "error", error="boom")]

    decision = decide(_candidates(["gamma", "beta", "alpha"]), reviews, committee_order=ORDER)

    # Then committee order decides, and the status says so
    assert decision.status == "no_ballots"
    assert decision.ranking == tuple(ORDER)
    assert decision.ballots_used == 0


def test_decide_without_reviews_is_unranked() -> None:
    decision = decide(_candidates(["beta", "alpha"]), [], committee_order=ORDER)

    assert decision.status == "unranked"
    assert decision.ranking == ("alpha", "beta")


def test_decide_weights_and_exclude_self() -> None:
    # Given alpha and gamma each vote for themselves, and both put beta second
    reviews = [_review("alpha", "alpha", "beta", "gamma"), _review("gamma", "gamma", "beta", "alpha")]

    plain = decide(_candidates(), reviews, committee_order=ORDER)
    no_self = decide(_candidates(), reviews, committee_order=ORDER, exclude_self=True)
    weighted = decide(_candidates(), reviews, committee_order=ORDER, weights={"gamma": 3.0})

    # all three tie on 2 points; alpha and gamma have a first place each, committee order: alpha
    assert plain.chosen == "alpha"
    assert no_self.chosen == "beta"
    assert weighted.chosen == "gamma"


def test_top_k_texts_k_larger_than_available() -> None:
    candidates = [*_candidates(), CandidateRecord("delta", error="boom")]
    decision = Standings(("gamma", "alpha", "beta"), {}, "ok", 1)

    assert top_k_texts(decision, candidates, 1) == ["Foundation"]
    assert top_k_texts(decision, candidates, 3) == ["Foundation", "Dune Messiah", "Children of Dune"]
    assert top_k_texts(decision, candidates, 10) == ["Foundation", "Dune Messiah", "Children of Dune"]
