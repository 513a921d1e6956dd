"""Each judgement computed once: one review per voter group, its ballot cast for the whole group."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console
from sqlmodel import Session

from db import runs
from pipeline.aggregate import decide, review_groups
from pipeline.borda import Ballot, borda_scores
from pipeline.committee import Committee, Generation, Member, default_committee
from pipeline.evaluation.rerank import Calibrated, Rule, rerank
from pipeline.evaluation.reviewers import reviewer_stats
from pipeline.plan import RunConfig, plan_turn
from pipeline.policy import TurnRoles
from pipeline.records import CandidateRecord, ReviewRecord, TurnContext, per_reviewer
from pipeline.service.canvas import task_member, turn_signature
from pipeline.service.client import BlendClient
from tests.conftest import clear_scripted_calls, scripted_calls
from workers.report import print_turn
from workers.web import ballot_view

POOL = ["a1", "a2", "b", "c"]
CANDIDATES = [CandidateRecord(m, f"answer {m}") for m in POOL]
KEYS = {"a1": "A", "a2": "A", "b": "B", "c": "C"}


def _review(reviewer: str, *ranking: str, voters: tuple[str, ...] = ()) -> ReviewRecord:
    return ReviewRecord(reviewer, "likelihood", "scored", ranking=ranking, voters=voters)


def _member(name: str, model: str, **fields: object) -> Member:
    return Member(name=name, backend="scripted", model=model, **fields)  # type: ignore[arg-type]


# --- who reviews ------------------------------------------------------------------------------


def test_the_default_committee_reviews_once_per_voter_group() -> None:
    committee = default_committee()

    # Then: the two Gemma members judge as one and are reviewed once; SmolLM2 alone
    assert review_groups(committee.reviewers, committee) == (
        ("smollm2-concise",),
        ("gemma3-fewshot-a", "gemma3-fewshot-b"),
    )


def test_a_group_is_reviewed_by_its_first_member_in_committee_order_that_reviews_this_turn() -> None:
    committee = Committee(
        members=(
            _member("x", "m"),
            _member("y", "m"),
            _member("z", "m"),
            _member("r1", "m", review_method="ranking"),
            _member("r2", "m", review_method="ranking", generation=Generation(style="terse")),
        )
    )

    # Given the turn's reviewers in another order, and x sitting out
    groups = review_groups(["r2", "z", "y", "r1"], committee)

    # Then: committee order within each group (y runs the likelihood group), ranking reviewers grouped too
    assert groups == (("y", "z"), ("r1", "r2"))


# --- one ballot per group ---------------------------------------------------------------------


@given(
    st.permutations(POOL),
    st.permutations(POOL),
    st.permutations(POOL),
    st.floats(0.0, 3.0),
    st.floats(0.0, 3.0),
    st.booleans(),
)
def test_one_group_ballot_counts_as_its_members_identical_ballots_did(
    shared: list[str], of_b: list[str], of_c: list[str], w1: float, w2: float, weighted: bool
) -> None:
    # Given: a1 and a2 judge as one; before, each cast the same ballot; now a1 casts it for both
    weights = {"a1": w1, "a2": w2, "b": 1.5, "c": 0.5} if weighted else None
    others = [_review("b", *of_b), _review("c", *of_c)]
    before = [_review("a1", *shared), _review("a2", *shared), *others]
    after = [_review("a1", *shared, voters=("a1", "a2")), *others]

    old = decide(CANDIDATES, before, committee_order=POOL, weights=weights, voters=KEYS)
    new = decide(CANDIDATES, after, committee_order=POOL, weights=weights, voters=KEYS)

    # Then: the same scores and ranking; one ballot fewer, weighing the mean of the group's weights
    assert new.ranking == old.ranking
    assert new.scores == pytest.approx(old.scores)
    assert new.voters == old.voters == (("a1", "a2"), ("b",), ("c",))
    assert new.ballots_used == old.ballots_used - 1
    mean = (w1 + w2) / 2 if weighted else 1.0
    assert new.ballot_weights["a1"] == pytest.approx(mean)


def test_a_group_ballot_is_a_self_vote_of_every_member() -> None:
    # Given: the a-group (a1, a2) ranks its own answers first; b and c rank a2 first too
    reviews = [
        _review("a1", "a2", "a1", "b", "c", voters=("a1", "a2")),
        _review("b", "a2", "b", "c", "a1"),
        _review("c", "a2", "c", "b", "a1"),
    ]

    scores = decide(CANDIDATES, reviews, committee_order=POOL, exclude_self=True, voters=KEYS).scores

    # Then: the group's ballot gives a1 and a2 nothing; with 2 candidates left, b gets 1, c 0
    group_points = borda_scores([Ballot("a1", ("a2", "a1", "b", "c"), ("a1", "a2"))], POOL, exclude_self=True)
    assert group_points == {"a1": 0.0, "a2": 0.0, "b": 1.0, "c": 0.0}
    # b's ballot: a2 2, c 1, a1 0 (b excluded); c's: a2 2, b 1, a1 0 (c excluded)
    assert scores == {"a1": 0.0, "a2": 4.0, "b": 2.0, "c": 1.0}


def test_a_failed_group_review_leaves_no_ballot_for_the_group() -> None:
    reviews = [
        ReviewRecord("a1", "likelihood", "error", error="boom", voters=("a1", "a2")),
        _review("b", "b", "a1", "a2", "c"),
    ]

    decision = decide(CANDIDATES, reviews, committee_order=POOL, voters=KEYS)

    assert decision.voters == (("b",),)
    assert decision.chosen == "b"


# --- the record -------------------------------------------------------------------------------


def test_a_record_is_cast_for_its_reviewer_unless_it_names_its_group() -> None:
    alone = _review("b", "b", "c")
    group = _review("a1", "a1", "a2", voters=("a1", "a2"))

    assert alone.voters == ("b",)
    assert ReviewRecord.from_json(group.to_json()) == group
    assert ReviewRecord.from_json(alone.to_json()) == alone


def test_a_record_sent_before_groups_were_reads_as_its_reviewers_alone() -> None:
    old = _review("a1", "a1", "a2").to_json()
    del old["voters"]

    assert ReviewRecord.from_json(old).voters == ("a1",)


def test_per_reviewer_expands_a_group_record_into_one_copy_per_member() -> None:
    group = _review("a1", "a1", "a2", voters=("a1", "a2"))
    alone = _review("b", "b", "c")

    expanded = per_reviewer([group, alone])

    assert [(r.reviewer, r.voters, r.ranking) for r in expanded] == [
        ("a1", ("a1",), ("a1", "a2")),
        ("a2", ("a2",), ("a1", "a2")),
        ("b", ("b",), ("b", "c")),
    ]
    assert expanded[2] is alone


# --- a turn of a committee shaped like the default one, on the scripted backend ----------------

# Each candidate's text names its model; the likelihood reviewers score them apart (no ties).
SCORES = {"scores": {"small:": -0.6, "small-terse:": -0.9, "big:": -0.3}}
QUESTIONS = ["Who wrote Dune?", "When was it published?"]


def _default_shape(*, grouped: bool = True, **fields: object) -> Committee:
    """Like ``default_committee``: a likelihood and a ranking reviewer, and two copies of one
    likelihood judge (fewshot-a answers too, fewshot-b only reviews, so no two answers tie)."""
    return Committee(
        name="default-shape",
        members=(
            _member("concise", "small", options=SCORES),
            _member("terse", "small-terse", review_method="ranking"),
            _member("fewshot-a", "big", options=SCORES),
            _member("fewshot-b", "big", options=SCORES, roles=("reviewer",)),
        ),
        one_review_per_voter=grouped,
        **fields,  # type: ignore[arg-type]
    )


@pytest.fixture
def review_tasks() -> Iterator[list[dict[str, Any]]]:
    """The kwargs of every review task the in-process worker runs while the test does."""
    from celery.signals import task_prerun

    seen: list[dict[str, Any]] = []

    def record(sender: Any = None, kwargs: dict[str, Any] | None = None, **_: Any) -> None:
        if getattr(sender, "name", None) == "workers.review":
            seen.append(dict(kwargs or {}))

    task_prerun.connect(record, weak=False)
    yield seen
    task_prerun.disconnect(record)


def _shuffles_independent_of_the_conversation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each reviewer is shown the candidates in the same order in two conversations (the seed of a
    review without its conversation id), so two runs of one conversation can be compared."""
    import pipeline.stages
    from pipeline.ballot import review_seed

    monkeypatch.setattr(pipeline.stages, "review_seed", lambda _, turn, who: review_seed("same", turn, who))


def _big_model_reviews() -> int:
    return sum(1 for model, kind, _ in scripted_calls() if model == "big" and kind == "score")


def test_a_two_member_group_is_reviewed_once_stored_once_and_decides_as_before(
    embedded: Callable[..., BlendClient], review_tasks: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: the same conversation blended per reviewer (as before groups), then per voter group
    _shuffles_independent_of_the_conversation(monkeypatch)
    before_client = embedded(_default_shape(grouped=False))
    before = before_client.submit(QUESTIONS).wait(timeout=60)
    before_tasks, before_calls = len(review_tasks), _big_model_reviews()
    review_tasks.clear()
    clear_scripted_calls()
    after_client = embedded(_default_shape())
    after = after_client.submit(QUESTIONS).wait(timeout=60)

    # Then: one review task per voter group and turn (3, not 4); the big model scores once a turn
    assert before_tasks == 4 * len(QUESTIONS) and len(review_tasks) == 3 * len(QUESTIONS)
    assert before_calls == 2 * len(QUESTIONS) and _big_model_reviews() == len(QUESTIONS)
    group_tasks = [t for t in review_tasks if t["reviewer"] == "fewshot-a"]
    assert [t["voters"] for t in group_tasks] == [["fewshot-a", "fewshot-b"]] * len(QUESTIONS)
    assert all(t["reviewer"] != "fewshot-b" for t in review_tasks)
    # And: one stored row for the group, listing both members
    for turn in after_client.fetch(after[0].conversation_id).turns:
        rows = {r["reviewer"]: r for r in turn.reviews}
        assert set(rows) == {"concise", "terse", "fewshot-a"}
        assert rows["fewshot-a"]["voters"] == ["fewshot-a", "fewshot-b"]
        assert rows["concise"]["voters"] == ["concise"]
        assert turn.result is not None
        assert turn.result["decision"]["voters"] == [["concise"], ["terse"], ["fewshot-a", "fewshot-b"]]
        assert turn.result["decision"]["ballots"] == 3
    # And: the same answers, rankings and Borda scores as before
    for old, new in zip(before, after, strict=True):
        assert (new.answer, new.chosen, new.ranking) == (old.answer, old.chosen, old.ranking)
        assert new.scores == pytest.approx(old.scores)
        assert new.timings["model_calls"] == old.timings["model_calls"] - 1


def test_a_group_ballot_gives_no_points_to_any_members_answer(embedded: Callable[..., BlendClient]) -> None:
    # Given: self-votes excluded; the group (fewshot-a, fewshot-b) scores fewshot-a's answer best
    client = embedded(_default_shape(exclude_self_votes=True))

    (outcome,) = client.submit(QUESTIONS[:1]).wait(timeout=60)

    # Then: the group's one ballot gives fewshot-a's answer nothing: it gets only the others' points
    turn = client.fetch(outcome.conversation_id).turns[0]
    ballots = [Ballot(r["reviewer"], tuple(r["ranking"]), tuple(r["voters"])) for r in turn.reviews]
    pool = [c["member"] for c in turn.candidates]
    group = next(b for b in ballots if b.reviewer == "fewshot-a")
    assert group.ranking[0] == "fewshot-a"
    assert borda_scores([group], pool, exclude_self=True)["fewshot-a"] == 0.0
    others = [b for b in ballots if b is not group]
    assert outcome.scores["fewshot-a"] == borda_scores(others, pool, exclude_self=True)["fewshot-a"]


def test_everything_that_reads_reviews_reads_a_groups_row_for_each_member(
    embedded: Callable[..., BlendClient],
) -> None:
    # Given: a stored run of the default shape, its group's ballot stored once
    client = embedded(_default_shape())
    run = f"groups-{uuid.uuid4().hex[:6]}"
    handle = client.submit(QUESTIONS, run=run)
    handle.wait(timeout=60)
    stored = client.fetch(handle.conversation_id)
    with Session(client.store.engine) as session:
        records = runs.run_records(session=session, run=run)
        ballots = runs.run_turns(session=session, runs=[run])

    # Then: calibration's ballots give both members the group's ballot
    for turn in ballots:
        assert turn["ballots"]["fewshot-b"] == turn["ballots"]["fewshot-a"]
    # And: re-deciding the run with the live rule changes nothing; a panel of fewshot-b alone keeps
    # the group's ballot, now cast for fewshot-b only
    live = rerank(records, Rule(), client.committee, Calibrated())
    assert [d.ranking for d, _ in live] == [tuple(r["result"]["ranking"]) for r in records]
    assert [d.scores for d, _ in live] == [r["result"]["scores"] for r in records]
    panel = rerank(records, Rule(reviewers=("fewshot-b",)), client.committee, Calibrated())
    assert all(d.voters == (("fewshot-b",),) and d.ballots_used == 1 for d, _ in panel)
    # And: each member is a judge of its own in `peerblend reviewers`
    stats = {s.reviewer: s for s in reviewer_stats(records, client.committee) if s.dataset == "all"}
    assert stats["fewshot-b"].ballots == stats["fewshot-a"].ballots == len(QUESTIONS)
    assert stats["fewshot-b"].voter == ("fewshot-a", "fewshot-b")
    # And: the page and `peerblend show` name the members the one review was cast for
    turn = stored.turns[0]
    assert turn.result is not None
    views = {v["reviewer"]: v for v in (ballot_view(r, turn.result["decision"]) for r in turn.reviews)}
    assert views["fewshot-a"]["voters"] == ["fewshot-a", "fewshot-b"] and views["concise"]["voters"] == [
        "concise"
    ]
    out = io.StringIO()
    print_turn(Console(file=out, width=200), turn)
    assert "fewshot-a (for fewshot-a = fewshot-b)" in out.getvalue()
    assert "fewshot-a = fewshot-b (1)" in out.getvalue()


def test_the_canvas_has_one_review_task_per_group_on_its_first_members_queue() -> None:
    committee = default_committee()
    everyone = tuple(m.name for m in committee.members)
    reviewers = tuple(committee.reviewers)
    context, decision = TurnContext("c", 0, "q?"), TurnRoles(everyone, reviewers, "full ranking")
    app = Celery("canvas-test", set_as_current=False)

    grouped = turn_signature(plan_turn(committee, context, RunConfig(), decision), app=app)
    separate = committee.model_copy(update={"one_review_per_voter": False})
    each = turn_signature(plan_turn(separate, context, RunConfig(), decision), app=app)
    pairwise = plan_turn(committee, context, RunConfig(method="pairwise"), decision)

    reviews = [s.kwargs for s in grouped.tasks[1].tasks]  # chain(generate, chord(reviews, aggregate))
    assert [(k["reviewer"], k["voters"]) for k in reviews] == [
        ("smollm2-concise", ["smollm2-concise"]),
        ("gemma3-fewshot-a", ["gemma3-fewshot-a", "gemma3-fewshot-b"]),
    ]
    assert [task_member(k, committee) for k in reviews] == ["smollm2-concise", "gemma3-fewshot-a"]
    assert [s.kwargs["voters"] for s in each.tasks[1].tasks] == [[name] for name in reviewers]
    assert pairwise.review_groups == ()  # the pairwise judge is one member: nothing to group
