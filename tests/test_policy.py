"""The cached-shortlist policies, walked turn by turn through ``begin``/``advance`` over an in-memory store."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import store_keys
from pipeline.committee import Committee, Member
from pipeline.plan import RunConfig, check_run
from pipeline.policy import PolicyState, TurnRoles, turn_scores, worst_half
from pipeline.shortlist import advance, begin
from pipeline.store_keys import conversation_key, counter_key, cycle_key

BOTH = ("generator", "reviewer")


class RetryingStore:
    """A PolicyStore whose every update loses one race first: ``change`` runs twice, the first
    result is thrown away, as the Redis and SQL stores do when another writer came first."""

    def __init__(self) -> None:
        self.inner = MemoryStore()

    def get(self, key: str) -> dict[str, Any] | None:
        return self.inner.get(key)

    def update(self, key: str, change: Callable[[dict[str, Any] | None], dict[str, Any]]) -> dict[str, Any]:
        change(self.inner.get(key))  # the attempt that lost
        return self.inner.update(key, change)


class MemoryStore:
    """A PolicyStore in a dict; values pass through JSON on the way in and out, as in Redis."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.writes: list[str] = []

    def get(self, key: str) -> dict[str, Any] | None:
        raw = self.data.get(key)
        return None if raw is None else json.loads(raw)

    def update(self, key: str, change: Callable[[dict[str, Any] | None], dict[str, Any]]) -> dict[str, Any]:
        self.data[key] = json.dumps(change(self.get(key)))
        self.writes.append(key)
        return json.loads(self.data[key])

    def state(self, committee: Committee, policy: str, conversation_id: str) -> PolicyState:
        value = self.get(conversation_key(committee.name, policy, conversation_id))
        assert value is not None
        return PolicyState.from_json(value)


def committee(n: int = 4, *, roles: Mapping[str, tuple[str, ...]] | None = None, **fields: Any) -> Committee:
    """Scripted members m0..m(n-1), each a generator and a reviewer unless ``roles`` says otherwise."""
    roles = roles or {}
    members = tuple(
        Member(name=f"m{i}", backend="scripted", model=f"model{i}", roles=roles.get(f"m{i}", BOTH))
        for i in range(n)
    )
    return Committee(name="c", members=members, **fields)


def points(*values: float) -> dict[str, float]:
    """Borda points of one ranked turn: m0, m1, ... in order."""
    return {f"m{i}": float(v) for i, v in enumerate(values)}


def walk(
    store: MemoryStore | None,
    members: Committee,
    run: RunConfig,
    turns: Sequence[Mapping[str, float] | None],
    *,
    conversation_id: str = "conv",
) -> list[TurnRoles]:
    """Run a conversation of ``len(turns)`` turns through ``begin`` and ``advance``; each turn's decision.

    ``turns[t]``: the Borda points of turn t's candidates when it is ranked (a generator
    missing from it failed; points of members that did not generate are ignored), or
    None when every candidate failed. A ranked turn has one ballot per reviewer; an
    unranked one keeps its preference order, as ``pipeline.aggregate.decide`` does.
    """
    n_turns = len(turns)
    decision: TurnRoles | None = begin(store, members, run, conversation_id=conversation_id, n_turns=n_turns)
    seen = []
    for t, turn_points in enumerate(turns):
        assert decision is not None, f"no decision for turn {t}"
        seen.append(decision)
        ranking, scores, ballots = _outcome(members, decision, turn_points)
        decision = advance(
            store,
            members,
            run,
            decision,
            conversation_id=conversation_id,
            turn_index=t,
            n_turns=n_turns,
            ranking=ranking,
            scores=scores,
            ballots=ballots,
        )
    assert decision is None, "advance must return None after the last turn"
    return seen


def _outcome(
    members: Committee, decision: TurnRoles, turn_points: Mapping[str, float] | None
) -> tuple[list[str], dict[str, float], int]:
    if turn_points is None:
        return [], {}, 0
    if not decision.ranked:
        order = [*decision.preference, *members.generators]
        pool = [m for m in dict.fromkeys(order) if m in decision.generators]
        return pool, dict.fromkeys(pool, 0.0), 0
    scores = {m: turn_points[m] for m in decision.generators if m in turn_points}
    ranking = sorted(scores, key=lambda m: -scores[m])  # stable: committee order breaks ties
    return ranking, scores, len(decision.reviewers)


def run_of(members: Committee, policy: str, *, method: str = "peer", top_k: int | None = None) -> RunConfig:
    return check_run(members, method=method, policy=policy, top_k=top_k)


# --- full ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_full_policy_has_everyone_answer_and_review_every_turn_and_keeps_no_state(n):
    members = committee(n)
    store = MemoryStore()

    seen = walk(store, members, run_of(members, "full"), [points(*range(n))] * 4)

    everyone = tuple(members.generators)
    assert [(d.generators, d.reviewers, d.ranked) for d in seen] == [(everyone, everyone, True)] * 4
    assert store.writes == []


# --- p1 --------------------------------------------------------------------------------------------


def test_p1_five_turns_ranks_three_then_drops_the_bottom_two_by_cumulative_score():
    # Given N = 4, q = 5: ceil(5/2) = 3 ranked turns by everyone, 4 ballots each.
    # Cumulative points / ballots: m0 3+3+0 = 6, m1 2+2+1 = 5, m2 0+1+2 = 3, m3 1+0+3 = 4,
    # while the third turn alone would drop m0 and m1.
    members = committee(4)
    store = MemoryStore()
    turns = [
        points(12, 8, 0, 4),
        points(12, 8, 4, 0),
        points(0, 4, 8, 12),
        points(1, 2, 3, 4),
        points(4, 3, 2, 1),
    ]

    seen = walk(store, members, run_of(members, "p1"), turns)

    everyone = ("m0", "m1", "m2", "m3")
    for decision in seen[:3]:
        assert (decision.generators, decision.reviewers, decision.excluded) == (everyone, everyone, ())
    for decision in seen[3:]:
        assert decision.generators == ("m0", "m1")
        assert decision.reviewers == ("m0", "m1")
        assert decision.excluded == ("m3", "m2")  # the bottom two, better first
        assert decision.ranked
    assert store.state(members, "p1", "conv").excluded == ("m3", "m2")


def test_p1_five_members_drop_floor_half_by_cumulative_score():
    # Given N = 5, q = 5: cumulative m0 30, m1 25, m2 40, m3 35, m4 20 (5 ballots a turn);
    # the third turn alone would drop m0 and m4.
    members = committee(5)
    turns = [
        points(10, 5, 20, 15, 0),
        points(20, 0, 5, 10, 15),
        points(0, 20, 15, 10, 5),
        points(0, 0, 0, 0, 0),
        points(0, 0, 0, 0, 0),
    ]

    seen = walk(MemoryStore(), members, run_of(members, "p1"), turns)

    assert all(d.generators == tuple(members.generators) for d in seen[:3])
    for decision in seen[3:]:
        assert decision.generators == ("m0", "m2", "m3")
        assert decision.reviewers == ("m0", "m2", "m3")
        assert decision.excluded == ("m1", "m4")


def test_p1_four_turns_ranks_two_then_reduces():
    members = committee(4)
    turns = [points(0, 1, 2, 3), points(0, 1, 2, 3), points(3, 2, 1, 0), points(3, 2, 1, 0)]

    seen = walk(MemoryStore(), members, run_of(members, "p1"), turns)

    assert [d.generators for d in seen] == [
        ("m0", "m1", "m2", "m3"),
        ("m0", "m1", "m2", "m3"),
        ("m2", "m3"),
        ("m2", "m3"),
    ]
    assert "turn 1 of the first 2" in seen[0].reason


def test_p1_single_turn_conversation_is_ranked_in_full():
    members = committee(4)
    store = MemoryStore()

    (only,) = walk(store, members, run_of(members, "p1"), [points(0, 1, 2, 3)])

    assert only.generators == only.reviewers == ("m0", "m1", "m2", "m3")
    assert store.state(members, "p1", "conv").excluded == ()


def test_p1_next_conversation_starts_with_the_full_committee():
    members = committee(4)
    store = MemoryStore()
    run = run_of(members, "p1")
    first = walk(store, members, run, [points(0, 1, 2, 3)] * 4, conversation_id="a")
    assert first[-1].generators == ("m2", "m3")

    second = walk(store, members, run, [points(3, 2, 1, 0)] * 4, conversation_id="b")

    assert second[0].generators == second[1].generators == ("m0", "m1", "m2", "m3")
    assert second[2].generators == ("m0", "m1")  # its own scores, not the first conversation's


def test_p1_two_generators_are_never_reduced():
    members = committee(2)

    seen = walk(MemoryStore(), members, run_of(members, "p1"), [points(0, 5)] * 4)

    assert all(d.generators == d.reviewers == ("m0", "m1") for d in seen)


def test_p1_three_generators_drop_exactly_the_worst_one():
    members = committee(3)

    seen = walk(MemoryStore(), members, run_of(members, "p1"), [points(2, 0, 1)] * 4)

    assert [d.generators for d in seen[2:]] == [("m0", "m2")] * 2
    assert seen[2].excluded == ("m1",)


def test_p1_keeps_top_k_generators():
    # Given top_k = 3 on N = 4: floor(4/2) = 2 would leave two; max(top_k, 2) = 3 stay.
    members = committee(4, top_k=3, aggregator="m0")

    seen = walk(MemoryStore(), members, run_of(members, "p1"), [points(0, 1, 2, 3)] * 4)

    assert seen[2].generators == ("m1", "m2", "m3")
    assert seen[2].excluded == ("m0",)


def test_p1_keeps_the_runs_top_k_generators_when_it_overrides_the_committees():
    # Given a committee whose top_k is 1, run with top_k = 3 (fusing three candidates).
    members = committee(4, aggregator="m0")
    run = run_of(members, "p1", top_k=3)

    seen = walk(MemoryStore(), members, run, [points(0, 1, 2, 3)] * 4)

    # Then at least three candidates are left to fuse.
    assert len(seen[2].generators) >= 3


def test_p1_brings_back_the_best_excluded_reviewers_to_keep_two():
    # Given only m1 and m2 review, and they are the two worst generators.
    roles = {"m0": ("generator",), "m3": ("generator",)}
    members = committee(4, roles=roles)
    assert members.reviewers == ["m1", "m2"]

    seen = walk(MemoryStore(), members, run_of(members, "p1"), [points(3, 0, 1, 2)] * 4)

    # Then they stop answering but still review: two reviewers, never fewer.
    assert seen[2].generators == ("m0", "m3")
    assert seen[2].excluded == ("m2", "m1")
    assert seen[2].reviewers == ("m2", "m1")


def test_p1_tops_up_a_single_remaining_reviewer_with_the_best_excluded_one():
    # Given m4 reviews only, m1 and m2 answer and review, m0 and m3 only answer;
    # m1 and m2 are the worst generators, m2 the better of the two.
    roles = {"m0": ("generator",), "m3": ("generator",), "m4": ("reviewer",)}
    members = committee(5, roles=roles)
    assert members.generators == ["m0", "m1", "m2", "m3"]

    seen = walk(MemoryStore(), members, run_of(members, "p1"), [points(3, 0, 1, 2)] * 4)

    assert seen[0].generators == ("m0", "m1", "m2", "m3")
    assert seen[0].reviewers == ("m1", "m2", "m4")
    assert seen[2].generators == ("m0", "m3")
    assert seen[2].reviewers == ("m4", "m2")


def test_p1_reviewer_only_members_keep_reviewing():
    roles = {f"m{i}": ("generator",) for i in range(4)} | {"m4": ("reviewer",), "m5": ("reviewer",)}
    members = committee(6, roles=roles)

    seen = walk(MemoryStore(), members, run_of(members, "p1"), [points(0, 1, 2, 3)] * 2)

    assert seen[0].reviewers == seen[1].reviewers == ("m4", "m5")
    assert seen[1].generators == ("m2", "m3")


@pytest.mark.parametrize("policy", ["p1", "p3"])
def test_reduced_turn_reason_names_the_policy_once(policy):
    members = committee(4)
    store = MemoryStore()
    run = run_of(members, policy)
    walk(store, members, run, [points(0, 1, 2, 3)] * 2, conversation_id="first")

    seen = walk(store, members, run, [points(0, 1, 2, 3)] * 2, conversation_id="second")

    assert seen[-1].excluded
    assert not seen[-1].reason.startswith(f"{policy}: {policy}:")


# --- p2 --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("top_k", [1, 2])
def test_p2_ranks_odd_turns_and_reuses_the_previous_top_k_on_even_turns(top_k):
    members = committee(4, top_k=top_k, aggregator="m0")
    store = MemoryStore()
    # Turn 1 ranks m2 > m0 > m3 > m1; turn 3 ranks m1 > m3 > m0 > m2.
    # Turns 2 and 4 are not ranked: their points ({}) are not looked at.
    turns = [points(6, 0, 9, 3), {}, points(3, 9, 0, 6), {}, points(0, 0, 0, 0)]

    seen = walk(store, members, run_of(members, "p2"), turns)

    everyone = ("m0", "m1", "m2", "m3")
    for decision in (seen[0], seen[2], seen[4]):
        assert (decision.generators, decision.reviewers) == (everyone, everyone)
    first_ranking = ("m2", "m0", "m3", "m1")
    assert seen[1].generators == first_ranking[:top_k]
    assert seen[1].reviewers == ()
    assert not seen[1].ranked
    assert seen[1].preference == first_ranking
    assert seen[1].excluded == tuple(m for m in everyone if m not in first_ranking[:top_k])
    third_ranking = ("m1", "m3", "m0", "m2")
    assert seen[3].generators == third_ranking[:top_k]
    assert seen[3].reviewers == ()
    assert seen[3].preference == third_ranking


def test_p2_even_turn_after_a_turn_that_ranked_no_one_is_ranked():
    # Given every candidate of turn 1 failed: its ranking is empty.
    members = committee(4)

    seen = walk(MemoryStore(), members, run_of(members, "p2"), [None, points(0, 1, 2, 3)])

    assert seen[1].generators == seen[1].reviewers == ("m0", "m1", "m2", "m3")
    assert "ranked no one" in seen[1].reason


def test_p2_reuses_the_runs_top_k_when_it_overrides_the_committees():
    members = committee(4, aggregator="m0")  # top_k 1
    run = run_of(members, "p2", top_k=2)

    seen = walk(MemoryStore(), members, run, [points(6, 0, 9, 3), {}])

    assert seen[1].generators == ("m2", "m0")


# --- p3 --------------------------------------------------------------------------------------------


def test_p3_ranks_the_first_conversation_of_each_cycle_and_excludes_by_its_scores():
    members = committee(4)
    store = MemoryStore()
    run = run_of(members, "p3")
    everyone = ("m0", "m1", "m2", "m3")

    # Cycle 0: conversation 0 ranks everyone; per ballot m0 1, m1 2, m2 3, m3 6.
    conv0 = walk(store, members, run, [points(4, 0, 8, 12), points(0, 8, 4, 12)], conversation_id="c0")
    assert all(d.generators == d.reviewers == everyone for d in conv0)
    assert "ranking conversation" in conv0[0].reason
    assert store.get(cycle_key("c", "p3", 0))["scores"] == {"m0": 1.0, "m1": 2.0, "m2": 3.0, "m3": 6.0}

    # Conversations 1 and 2 leave out the worst half of cycle 0, on every turn; their
    # own scores (m3 last here) do not move the cycle's.
    for conversation_id in ("c1", "c2"):
        seen = walk(store, members, run, [points(9, 9, 9, 0)] * 2, conversation_id=conversation_id)
        assert [d.generators for d in seen] == [("m2", "m3")] * 2
        assert [d.excluded for d in seen] == [("m1", "m0")] * 2
        assert all(d.ranked for d in seen)
    assert store.get(cycle_key("c", "p3", 0))["scores"] == {"m0": 1.0, "m1": 2.0, "m2": 3.0, "m3": 6.0}

    # Cycle 1: conversation 3 ranks everyone again, into a new cycle key.
    conv3 = walk(store, members, run, [points(12, 8, 0, 4)] * 2, conversation_id="c3")
    assert all(d.generators == everyone for d in conv3)
    assert store.get(cycle_key("c", "p3", 3))["scores"] == {"m0": 6.0, "m1": 4.0, "m2": 0.0, "m3": 2.0}

    for conversation_id in ("c4", "c5"):
        seen = walk(store, members, run, [points(0, 0, 9, 9)] * 2, conversation_id=conversation_id)
        assert [d.generators for d in seen] == [("m0", "m1")] * 2
        assert seen[0].excluded == ("m3", "m2")

    assert store.get(counter_key("c", "p3")) == {"count": 6}
    assert [store.state(members, "p3", f"c{i}").ordinal for i in range(6)] == list(range(6))


def test_p3_conversation_starting_before_the_cycle_has_scores_runs_with_everyone():
    members = committee(4)
    store = MemoryStore()
    run = run_of(members, "p3")
    everyone = ("m0", "m1", "m2", "m3")
    # Given conversations 0 and 1 both start before conversation 0 finishes a turn.
    first_of_0 = begin(store, members, run, conversation_id="c0", n_turns=2)
    first_of_1 = begin(store, members, run, conversation_id="c1", n_turns=2)

    assert first_of_0.generators == first_of_1.generators == everyone
    assert "no rank scores in this cycle yet" in first_of_1.reason

    # When conversation 0 scores its first turn, conversation 1 still runs with everyone.
    advance(
        store,
        members,
        run,
        first_of_0,
        conversation_id="c0",
        turn_index=0,
        n_turns=2,
        ranking=["m3", "m2", "m1", "m0"],
        scores=points(0, 4, 8, 12),
        ballots=4,
    )
    second_of_1 = advance(
        store,
        members,
        run,
        first_of_1,
        conversation_id="c1",
        turn_index=0,
        n_turns=2,
        ranking=["m0", "m1", "m2", "m3"],
        scores=points(12, 8, 4, 0),
        ballots=4,
    )
    assert second_of_1 is not None
    assert second_of_1.generators == everyone
    assert "no rank scores in this cycle yet" in second_of_1.reason
    # And conversation 2, which starts now, excludes by conversation 0's first turn.
    third = begin(store, members, run, conversation_id="c2", n_turns=1)
    assert third.generators == ("m2", "m3")


# --- redelivery, single member, pairwise -----------------------------------------------------------


@pytest.mark.parametrize("policy", ["p1", "p2", "p3"])
def test_a_redelivered_turn_is_not_counted_twice(policy):
    members = committee(4)
    store = MemoryStore()
    run = run_of(members, policy)
    first = begin(store, members, run, conversation_id="conv", n_turns=4)
    turn = dict(
        conversation_id="conv",
        turn_index=0,
        n_turns=4,
        ranking=["m3", "m2", "m1", "m0"],
        scores=points(0, 4, 8, 12),
        ballots=4,
    )

    once = advance(store, members, run, first, **turn)
    twice = advance(store, members, run, first, **turn)

    assert once == twice
    state = store.state(members, policy, "conv")
    assert state.scores == {"m0": 0.0, "m1": 1.0, "m2": 2.0, "m3": 3.0}
    assert state.applied_turns == 1
    if policy == "p3":
        assert store.get(cycle_key("c", "p3", 0))["scores"] == {"m0": 0.0, "m1": 1.0, "m2": 2.0, "m3": 3.0}


@pytest.mark.parametrize("n_turns", [1, 3])
def test_single_member_run_answers_alone_and_writes_nothing(n_turns):
    members = committee(4)
    store = MemoryStore()
    run = run_of(members, "full", method="single:m2")

    seen = walk(store, members, run, [{"m2": 0.0}] * n_turns)

    assert [(d.generators, d.reviewers) for d in seen] == [(("m2",), ())] * n_turns
    assert store.writes == []


def test_pairwise_run_is_judged_by_the_judge_on_ranked_turns_only():
    members = committee(4, pairwise_judge="m3")
    run = run_of(members, "p2", method="pairwise")

    seen = walk(MemoryStore(), members, run, [points(1, 0, 3, 2), {}, points(0, 1, 2, 3), {}])

    assert [d.reviewers for d in seen] == [("m3",), (), ("m3",), ()]
    assert seen[0].generators == ("m0", "m1", "m2", "m3")
    assert seen[1].generators == ("m2",)


@pytest.mark.parametrize("policy", ["full", "p1", "p3"])
def test_pairwise_run_defaults_its_judge_to_the_first_reviewer(policy):
    roles = {"m0": ("generator",)}
    members = committee(4, roles=roles)

    seen = walk(MemoryStore(), members, run_of(members, policy, method="pairwise"), [points(0, 1, 2, 3)] * 4)

    assert members.judge == "m1"
    assert all(d.reviewers == ("m1",) for d in seen)


def test_pairwise_p1_does_not_keep_a_member_that_failed_over_working_ones():
    # Given a pairwise p1 run, q = 2: turn 1 is ranked, then the bottom two are dropped.
    # m3 failed on turn 1; max-logits scores of the others sum to zero: m0 +1.0, m1 -0.4, m2 -0.6.
    members = committee(4)
    run = run_of(members, "p1", method="pairwise")
    store = MemoryStore()
    first = begin(store, members, run, conversation_id="conv", n_turns=2)

    second = advance(
        store,
        members,
        run,
        first,
        conversation_id="conv",
        turn_index=0,
        n_turns=2,
        ranking=["m0", "m1", "m2"],
        scores={"m0": 1.0, "m1": -0.4, "m2": -0.6},
        ballots=6,
    )

    # Then the member that produced no answer is among the dropped.
    assert second is not None
    assert "m3" in second.excluded


# --- pure helpers ----------------------------------------------------------------------------------


def test_worst_half_drops_the_later_member_on_a_tie():
    members = committee(4)

    assert worst_half(members, {}) == ("m2", "m3")
    assert worst_half(members, points(1, 1, 1, 1)) == ("m2", "m3")
    assert worst_half(members, {"m0": 1.0, "m2": 1.0}) == ("m1", "m3")  # unscored count as 0
    assert worst_half(members, points(5, 1, 1, 5)) == ("m1", "m2")


def test_worst_half_only_counts_generators():
    members = committee(5, roles={"m4": ("reviewer",)})

    assert worst_half(members, {"m4": -10.0, **points(4, 3, 2, 1)}) == ("m2", "m3")


def test_turn_scores_divide_by_the_ballots_and_give_a_failed_member_zero():
    # Given m2 failed (no Borda points), 3 ballots, and a non-generator scored by mistake.
    scores = turn_scores({"m0": 6.0, "m1": 3.0, "m9": 9.0}, 3, ["m0", "m1", "m2"])

    assert scores == {"m0": 2.0, "m1": 1.0, "m2": 0.0}


def test_turn_scores_with_no_ballots_do_not_divide_by_zero():
    assert turn_scores({"m0": 0.0}, 0, ["m0", "m1"]) == {"m0": 0.0, "m1": 0.0}


_names = st.lists(st.sampled_from([f"m{i}" for i in range(6)]), unique=True, max_size=6).map(tuple)
_finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@given(
    st.builds(
        PolicyState,
        ordinal=st.integers(min_value=0, max_value=10**6),
        excluded=_names,
        scores=st.dictionaries(st.sampled_from([f"m{i}" for i in range(6)]), _finite),
        last_ranking=_names,
        note=st.text(max_size=40),
        applied_turns=st.integers(min_value=0, max_value=1000),
    )
)
def test_conversation_state_round_trips_through_json(state):
    assert PolicyState.from_json(json.loads(json.dumps(state.to_json()))) == state


@given(
    st.builds(
        TurnRoles,
        generators=_names,
        reviewers=_names,
        reason=st.text(max_size=40),
        excluded=_names,
        preference=_names,
    )
)
def test_turn_decision_round_trips_through_json(decision):
    data = json.loads(json.dumps(decision.to_json()))

    assert data["ranked"] is bool(decision.reviewers)
    assert TurnRoles.from_json(data) == decision


def test_conversation_state_from_empty_json_is_the_initial_state():
    assert PolicyState.from_json({}) == PolicyState()


def test_p1_first_half_length_matches_the_spec():
    # ceil(q/2) turns ranked by everyone, for q = 1..7.
    members = committee(4)
    for q in range(1, 8):
        seen = walk(MemoryStore(), members, run_of(members, "p1"), [points(0, 1, 2, 3)] * q)
        full = [d.generators == tuple(members.generators) for d in seen]
        ranked_by_all = math.ceil(q / 2)
        assert full == [True] * ranked_by_all + [False] * (q - ranked_by_all), q


def test_p3_cycle_scores_are_folded_once_under_retried_updates_and_redeliveries():
    # Given a store whose updates each run their change twice (a lost optimistic race)
    members = committee(2)
    store = RetryingStore()
    run = run_of(members, "p3")
    decision = begin(store, members, run, conversation_id="c0", n_turns=1)

    # When turn 0 of the cycle's ranking conversation is folded in, then delivered again
    for _ in range(2):
        advance(
            store,
            members,
            run,
            decision,
            conversation_id="c0",
            turn_index=0,
            n_turns=1,
            ranking=["m1", "m0"],
            scores={"m0": 0.0, "m1": 2.0},
            ballots=2,
        )

    # Then its scores count once: 1.0 per ballot for m1, not 2.0 or 4.0
    assert store.get(cycle_key("c", "p3", 0))["scores"] == {"m0": 0.0, "m1": 1.0}


def test_resume_folds_stored_turns_the_state_missed_before_deciding():
    # Given a p1 conversation of 4 turns whose turn 1 was stored but never folded into the
    # state (a worker died between the two writes)
    from pipeline.shortlist import StoredOutcome, resume

    members = committee(4)
    store = MemoryStore()
    run = run_of(members, "p1")
    first = begin(store, members, run, conversation_id="conv", n_turns=4)
    outcomes = [points(0, 4, 8, 12), points(0, 4, 8, 12)]
    advance(
        store,
        members,
        run,
        first,
        conversation_id="conv",
        turn_index=0,
        n_turns=4,
        ranking=["m3", "m2", "m1", "m0"],
        scores=outcomes[0],
        ballots=4,
    )
    stored = [
        StoredOutcome(t, {**first.to_json(), "ballots": 4}, sorted(o, key=lambda m: -o[m]), o)
        for t, o in enumerate(outcomes)
    ]

    # When turn 2 is resumed from the stored turns
    decision = resume(store, members, run, conversation_id="conv", turn_index=2, n_turns=4, stored=stored)

    # Then turn 1 is folded in (once) and turn 2 runs without the bottom half, as without the fault
    assert store.state(members, "p1", "conv").applied_turns == 2
    assert decision.generators == ("m2", "m3") and set(decision.excluded) == {"m0", "m1"}
    again = resume(store, members, run, conversation_id="conv", turn_index=2, n_turns=4, stored=stored)
    assert again == decision and store.state(members, "p1", "conv").applied_turns == 2


def test_every_key_of_the_store_is_distinct_and_names_its_committee() -> None:
    # Given one committee's keys, each p3 cycle's key for conversations 0..5
    keys = [
        store_keys.conversation_key("c", "p3", "x"),
        store_keys.counter_key("c", "p3"),
        *(store_keys.cycle_key("c", "p3", n) for n in (0, 3)),
        store_keys.trust_key("c"),
        store_keys.calibration_key("c"),
        store_keys.feature_weights_key("c"),
        store_keys.prior_key("c"),
        store_keys.learned_key("c"),
    ]

    # Then no two things share a key, and conversations of one cycle share its key
    assert len(set(keys)) == len(keys) and all(k.startswith("c:") for k in keys)
    assert {store_keys.cycle_key("c", "p3", n) for n in range(3)} == {keys[2]}
