"""Ranking-reduction policies: which members work on a turn, and whether it is ranked.

Pure: state in, decision and new state out. The state lives in a PolicyStore
(the database, in every mode); see workers/policy_store.py.

q = the conversation's number of turns, N = the committee's generators.
- full: every member answers and reviews on every turn.
- p1 (dynamic conversation-specific elimination): all N members for the first
  ceil(q/2) turns; then the bottom floor(N/2) by cumulative rank score sit out
  the rest of the conversation. The next conversation starts with everyone.
  A live conversation has no known q (``n_turns`` is None): it ranks with everyone
  for its first R turns (the committee's ``p1_live_rank_turns``, 2 by default),
  then drops the bottom half for as long as it goes on.
- p2 (alternate ranking): turns 1, 3, 5, ... (1-based) are ranked by everyone;
  on turns 2, 4, ... only the top-K members of the previous turn answer, with no
  review stage, and the previous turn's order picks among them.
- p3 (fixed-interval elimination): the committee's conversations are numbered in
  the order they start; in each cycle of three, the first is ranked by everyone
  and its rank scores are accumulated; the next two exclude the worst half by
  those scores. (If they start before the first has scored a turn, they run with
  everyone, and say so.)
- learned-route (routing when the judges are blind): a conversation whose question
  bucket (passage or not) the committee's learned decision leaves to the member prior, or
  where its cross-validated gain over the prior is below the committee's
  ``route_min_gain`` (``pipeline.learned.route``: the judges are not worth their cost), is
  answered by the prior's top-K members alone, with no review, on every turn; any other
  conversation is ranked by everyone as under full. The route is fixed when the
  conversation starts (``begin``'s ``routed``) and kept in its state.

Cumulative rank score: each ranked turn adds a member's Borda points divided by
the number of ballots (a failed member adds 0). A shortlist never holds fewer
than max(top_k, 2) generators, nor fewer than two reviewers when it is reviewed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from pipeline.committee import Committee
from pipeline.errors import InputError
from pipeline.wire import json_of, record_of

Policy = Literal["full", "p1", "p2", "p3", "learned-route"]
POLICIES: tuple[Policy, ...] = ("full", "p1", "p2", "p3", "learned-route")


def check_policy(name: str) -> Policy:
    if name not in POLICIES:
        raise InputError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")
    return name  # type: ignore[return-value]


P3_CYCLE = 3  # p3: conversations per cycle; the first of each is ranked by everyone


def p3_ranks(ordinal: int) -> bool:
    """p3: whether the committee's conversation number ``ordinal`` (0-based) is its cycle's
    ranking conversation (everyone answers and reviews; its scores are accumulated)."""
    return ordinal % P3_CYCLE == 0


def p3_cycle(ordinal: int) -> int:
    """p3: the cycle (0-based) of the committee's conversation number ``ordinal``."""
    return ordinal // P3_CYCLE


@dataclass(frozen=True)
class PolicyState:
    """A conversation's shortlist-policy state, updated after every turn (not the stored
    conversation: that is ``pipeline.outcomes.ConversationState``)."""

    ordinal: int = 0  # p3: the conversation's number among the committee's conversations
    excluded: tuple[str, ...] = ()  # members sitting out (p1 after the first half, p3 from the start)
    scores: dict[str, float] = field(default_factory=dict)  # cumulative rank score
    last_ranking: tuple[str, ...] = ()  # the previous turn's ranking, best first (p2)
    note: str = ""  # why the exclusions are what they are
    applied_turns: int = 0  # turns folded in so far: a redelivered turn is not counted twice
    routed: tuple[str, ...] = ()  # learned-route: the members that answer alone (empty: everyone, ranked)

    def to_json(self) -> dict[str, Any]:
        return json_of(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PolicyState:
        return record_of(cls, data)


@dataclass(frozen=True)
class TurnRoles:
    """Who works on a turn, as the policy chose (``who_works``): who answers, who reviews, and why.
    ``reviewers`` empty means no review stage (the ranking is reused)."""

    generators: tuple[str, ...]
    reviewers: tuple[str, ...]
    reason: str
    excluded: tuple[str, ...] = ()
    preference: tuple[str, ...] = ()  # order that picks among unreviewed candidates

    @property
    def ranked(self) -> bool:
        return bool(self.reviewers)

    def to_json(self) -> dict[str, Any]:
        return {**json_of(self), "ranked": self.ranked}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TurnRoles:
        """Its fields of ``data`` (a turn's stored decision record starts with them: the rest is ignored)."""
        return record_of(cls, data)


def turn_scores(
    scores: Mapping[str, float], ballots: int, generators: Sequence[str], *, signed: bool = False
) -> dict[str, float]:
    """One ranked turn's contribution to the cumulative rank score of each generator.

    Scores are divided by the number of ballots. ``signed`` scores (pairwise max
    logits, in [-(n-1), n-1] for n ranked candidates) are first shifted by n-1 so
    that every contribution is >= 0 and a failed member's 0 is the lowest.
    """
    shift = max(len(scores) - 1, 0) if signed else 0
    return {m: (scores[m] + shift) / max(ballots, 1) if m in scores else 0.0 for m in generators}


def add_scores(total: Mapping[str, float], more: Mapping[str, float]) -> dict[str, float]:
    return {m: total.get(m, 0.0) + more.get(m, 0.0) for m in {*total, *more}}


def worst_half(
    committee: Committee, scores: Mapping[str, float], top_k: int | None = None
) -> tuple[str, ...]:
    """The bottom floor(N/2) generators by score (unscored count as 0); ties drop the later member."""
    generators = committee.generators
    keep = max(len(generators) - len(generators) // 2, top_k or committee.top_k, 2)
    order = {m: i for i, m in enumerate(generators)}
    ranked = sorted(generators, key=lambda m: (-scores.get(m, 0.0), order[m]))
    return tuple(ranked[keep:])


def start_conversation(
    policy: Policy,
    committee: Committee,
    *,
    ordinal: int = 0,
    cycle_scores: Mapping[str, float] | None = None,
    top_k: int | None = None,
    routed: Sequence[str] = (),
) -> PolicyState:
    """The state of a new conversation; for p3, ``ordinal`` and its cycle's scores so far; for
    learned-route, the members ``routed`` to answer alone (none: everyone, ranked)."""
    if policy == "learned-route":
        if not routed:
            return PolicyState(note="learned-route: the learned decision ranks these questions")
        note = f"learned-route: the judges add too little for these questions; the prior's top {len(routed)}"
        return PolicyState(routed=tuple(routed), note=note)
    if policy != "p3" or p3_ranks(ordinal):
        note = "p3: ranking conversation of its cycle" if policy == "p3" else ""
        return PolicyState(ordinal=ordinal, note=note)
    if not cycle_scores:
        return PolicyState(ordinal=ordinal, note="p3: no rank scores in this cycle yet; everyone answers")
    excluded = worst_half(committee, cycle_scores, top_k)
    return PolicyState(ordinal=ordinal, excluded=excluded, note="p3: worst half of this cycle's ranking")


def p1_ranked_turns(committee: Committee, n_turns: int | None) -> int:
    """How many first turns p1 ranks with everyone: ceil(q/2), or R for a live conversation."""
    return committee.p1_live_rank_turns if n_turns is None else math.ceil(n_turns / 2)


def who_works(
    policy: Policy,
    committee: Committee,
    state: PolicyState,
    turn_index: int,
    n_turns: int | None,
    *,
    top_k: int | None = None,
) -> TurnRoles:
    """Who works on turn ``turn_index`` (0-based) of an ``n_turns`` conversation (None: live,
    open-ended): which members answer and which review. Who *wins* the turn is
    ``pipeline.verdict.decide_turn``'s.

    ``top_k``: the run's (default: the committee's).
    """
    top_k = top_k or committee.top_k
    everyone = TurnRoles(tuple(committee.generators), tuple(committee.reviewers), "full ranking")
    if policy == "full":
        return everyone
    if policy == "learned-route":
        if not state.routed:
            return replace(everyone, reason=state.note or "learned-route: ranked")
        rest = tuple(m for m in committee.generators if m not in state.routed)
        return TurnRoles(state.routed, (), state.note, rest, state.routed)
    if policy == "p2":
        if turn_index % 2 == 0:
            return replace(everyone, reason="p2: odd turn, ranked")
        top = state.last_ranking[:top_k]
        if not top:
            return replace(everyone, reason="p2: even turn, but the previous turn ranked no one; ranked")
        rest = tuple(m for m in committee.generators if m not in top)
        return TurnRoles(
            top, (), f"p2: even turn, reusing the previous top {len(top)}", rest, state.last_ranking
        )
    if policy == "p1" and turn_index < p1_ranked_turns(committee, n_turns):
        ranked = p1_ranked_turns(committee, n_turns)
        return replace(everyone, reason=f"p1: turn {turn_index + 1} of the first {ranked}, ranked")
    if not state.excluded:
        return replace(everyone, reason=state.note or f"{policy}: no one excluded")
    return _without(committee, state.excluded, state.note or f"{policy}: bottom half excluded")


def _without(committee: Committee, excluded: Sequence[str], reason: str) -> TurnRoles:
    generators = tuple(m for m in committee.generators if m not in excluded)
    reviewers = [m for m in committee.reviewers if m not in excluded]
    for member in excluded:  # keep two reviewers: bring back the best excluded ones
        if len(reviewers) >= 2:
            break
        if member in committee.reviewers:
            reviewers.append(member)
    return TurnRoles(generators, tuple(reviewers), reason, tuple(excluded))


def after_turn(
    policy: Policy,
    committee: Committee,
    state: PolicyState,
    decision: TurnRoles,
    *,
    turn_index: int,
    n_turns: int | None,
    ranking: Sequence[str],
    contribution: Mapping[str, float],
    top_k: int | None = None,
) -> PolicyState:
    """The state after a turn: ``ranking`` best first, ``contribution`` from ``turn_scores``."""
    state = replace(state, last_ranking=tuple(ranking), applied_turns=turn_index + 1)
    if not decision.ranked:
        return state
    state = replace(state, scores=add_scores(state.scores, contribution))
    more_to_come = n_turns is None or turn_index + 1 < n_turns
    if policy == "p1" and turn_index + 1 == p1_ranked_turns(committee, n_turns) and more_to_come:
        excluded = worst_half(committee, state.scores, top_k)
        return replace(
            state, excluded=excluded, note=f"p1: bottom {len(excluded)} after {turn_index + 1} turns"
        )
    return state


class PolicyStore(Protocol):
    """Where policy state lives; every change is an atomic read-modify-write."""

    def get(self, key: str) -> dict[str, Any] | None: ...

    def update(self, key: str, change: Callable[[dict[str, Any] | None], dict[str, Any]]) -> dict[str, Any]:
        """Apply ``change`` to the stored value (None when absent) atomically; return the new value."""
        ...
